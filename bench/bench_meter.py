"""The sync meter's cost per second of video, with and without landmarks, on the shared clips:
probe + decode twice + face tracking + the mouth signal, then the sound envelope and the lag
search with its shifted-sound references. Run: .venv/bin/python bench/bench_meter.py
`--in-sync CHECKPOINT`: the meter's cost inside a sync instead (quality/meter_live.py)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from wav2lip_core.faces.detectors import DetectorSettings  # noqa: E402
from wav2lip_core.quality import meter  # noqa: E402

MEDIA = ROOT.parent / "shared" / "media"
CLIPS = ["vretalk_face1.mp4", "vretalk_face2.mp4", "sadtalker_WDA_KatieHill_000.mp4"]
DETECTOR = DetectorSettings(kind="blazeface", weights=str(ROOT.parent / "shared" / "weights" / "blazeface" / "blazeface.pth"))


def main() -> None:
    meter.measure_mouth(MEDIA / CLIPS[0], 0.0, 1.0, use_landmarks=True, detector=DETECTOR)  # warm: torch, dlib
    print(f"{'clip':34s} {'method':10s} {'video s':>8s} {'mouth s':>8s} {'lag s':>6s} {'s per video s':>14s}")
    for name in CLIPS:
        for lm in (True, False):
            t0 = time.perf_counter()
            info, mouth = meter.measure_mouth(MEDIA / name, use_landmarks=lm, detector=DETECTOR)
            t1 = time.perf_counter()
            meter.measure_loaded(mouth, meter.sound_for(mouth, MEDIA / name))
            t2 = time.perf_counter()
            print(f"{name:34s} {mouth.method:10s} {info.duration:8.2f} {t1 - t0:8.2f} {t2 - t1:6.2f} "
                  f"{(t2 - t0) / info.duration:14.2f}")




def in_sync(checkpoint: str) -> None:
    """The meter inside a sync (quality.meter_live): the pass's "meter" seconds (the mouth signal
    in the blend thread, and the lag search at the end) against the whole run, with landmarks and
    with the landmark-free signal, on a real sync with `checkpoint` (any Wav2Lip-layout file). --align off, so the landmarks switch
    changes only the meter."""
    import tempfile

    from wav2lip_core.faces import landmarks
    from wav2lip_core.quality import meter_live
    from wav2lip_core.sync.pipeline import LipSyncRequest, run

    available = landmarks.available
    print(f"{'clip':34s} {'signal':10s} {'video s':>8s} {'run s':>7s} {'sync s':>7s} {'meter s':>8s} "
          f"{'s/video s':>10s} {'% of run':>9s} {'% of sync':>9s}")
    with tempfile.TemporaryDirectory() as tmp:
        for name, audio in (("vretalk_face2.mp4", "vretalk_audio1.wav"), ("vretalk_face1.mp4", "vretalk_face1.mp4")):
            for lm in (True, False):
                meter_live.landmarks.available = (lambda: True) if lm else (lambda: False)  # type: ignore[attr-defined]
                try:
                    req = LipSyncRequest(face=str(MEDIA / name), audio=str(MEDIA / audio), checkpoint=checkpoint,
                                         out=f"{tmp}/{name}-{lm}.mp4", device="cpu", detector="blazeface",
                                         detector_weights=DETECTOR.weights, cache_dir=tmp, align="off")
                    run(req)  # warm: the model, the detection cache
                    req.out = f"{tmp}/{name}-{lm}-b.mp4"
                    r = run(req)
                finally:
                    meter_live.landmarks.available = available  # type: ignore[attr-defined]
                m, sync = r.stage_seconds.get("meter", 0.0), r.stage_seconds.get("sync", 0.0)
                print(f"{name:34s} {'landmarks' if lm else 'motion':10s} {r.duration:8.2f} {r.seconds:7.2f} "
                      f"{sync:7.2f} {m:8.3f} {m / r.duration:10.3f} {100 * m / r.seconds:9.1f} {100 * m / sync:9.1f}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--in-sync"]:
        in_sync(sys.argv[2])
    else:
        main()
