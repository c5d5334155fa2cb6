"""The sync meter's cost per second of video, with and without landmarks, on the shared clips:
probe + decode twice + face tracking + the mouth signal, then the sound envelope and the lag
search with its shifted-sound references. Run: .venv/bin/python bench/bench_meter.py"""

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


if __name__ == "__main__":
    main()
