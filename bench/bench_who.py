"""Cost per frame of the "who speaks" stages on the shared clips: shot cut detection
(faces/cuts.py) at the tracker's small size (max side 256) and at full size, the face
embedding per face (faces/identity.py, with the identity extra), and the whole tracking of one
or two chosen people through a cut, by position and by identity. Prints best-of-N ms/frame.

    .venv/bin/python bench/bench_who.py [--repeat N]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import av
import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from wav2lip_core.faces.cuts import find_cuts  # noqa: E402
from wav2lip_core.faces.detectors import DetectorSettings  # noqa: E402

SETTINGS = DetectorSettings(kind="blazeface", weights=str(ROOT.parent / "shared" / "weights" / "blazeface" / "blazeface.pth"))

MEDIA = ROOT.parent / "shared" / "media"
CLIPS = ["vretalk_face1.mp4", "vretalk_face2.mp4", "sadtalker_WDA_KatieHill_000.mp4", "liveportrait_d13.mp4"]
MAX_SIDE = 256  # the tracker's detection copy (DetectorSettings.max_side)
FRAMES = 100


def rgb_frames(path: Path, count: int = FRAMES) -> list[np.ndarray]:
    out = []
    with av.open(str(path)) as c:
        for f in c.decode(video=0):
            out.append(f.to_ndarray(format="rgb24"))
            if len(out) >= count:
                break
    return out


def downscale(rgb: np.ndarray, max_side: int = MAX_SIDE) -> np.ndarray:
    h, w = rgb.shape[:2]
    scale = min(1.0, max_side / max(h, w))
    if scale >= 1.0:
        return rgb
    return cv2.resize(rgb, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)


def best_ms_per_frame(fn, frames: list, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn(frames)
        times.append(time.perf_counter() - t)
    return 1e3 * min(times) / len(frames)


def bench_cuts(repeat: int) -> None:
    print("cut detection (faces/cuts.find_cuts), ms/frame")
    print(f"{'clip':34s} {'full size':>10s} {'ms':>6s} {'small':>9s} {'ms':>6s} {'downscale ms':>13s}")
    for name in CLIPS:
        full = rgb_frames(MEDIA / name)
        small = [downscale(f) for f in full]
        t_full = best_ms_per_frame(find_cuts, full, repeat)
        t_small = best_ms_per_frame(find_cuts, small, repeat)
        t_down = best_ms_per_frame(lambda fs: [downscale(f) for f in fs], full, repeat)
        h, w = full[0].shape[:2]
        sh, sw = small[0].shape[:2]
        print(f"{name:34s} {w:4d}x{h:<5d} {t_full:6.2f} {sw:3d}x{sh:<5d} {t_small:6.2f} {t_down:13.2f}")


def bench_identity(repeat: int) -> None:
    """Face embedding per face (identity.load_embedder().embed(rgb, boxes)), if the module is
    there; boxes from BlazeFace on the first frame of each clip."""
    try:
        from wav2lip_core.faces import identity
    except ImportError:
        print("identity: wav2lip_core.faces.identity not there, skipped")
        return
    embedder = identity.load_embedder()
    if embedder is None:
        print("identity: no embedder available, skipped")
        return
    from wav2lip_core.faces.detectors import detect_faces_in, make_detector

    detector = make_detector(SETTINGS)
    print("identity (faces/identity embed), ms per face")
    for name in CLIPS:
        rgb = rgb_frames(MEDIA / name, 1)[0]
        boxes = detect_faces_in(detector, rgb[..., ::-1].copy(), MAX_SIDE)[:1, :4]
        embedder.embed(rgb, boxes)  # warm
        ms = best_ms_per_frame(lambda fs: [embedder.embed(f, boxes) for f in fs], [rgb] * 5, repeat)
        print(f"{name:34s} {ms:8.2f}")


def bench_tracking(repeat: int) -> None:
    """The whole detect stage (decode, cuts, detection, choice, fill) per frame on a two-person
    clip with a cut that swaps their sides (tests/who_clips.py): the largest face, one person
    by position, one by identity, two people by identity."""
    import tempfile

    sys.path.insert(0, str(ROOT / "tests"))
    import who_clips
    from wav2lip_core.faces import identity
    from wav2lip_core.faces.targets import Target
    from wav2lip_core.faces.tracking import track_targets
    from wav2lip_core.media.decode import read_frames
    from wav2lip_core.media.probe import probe_video
    from wav2lip_core.sync.who import identity_for
    from wav2lip_core.sync.plan import Plan

    with tempfile.TemporaryDirectory() as d:
        clip = who_clips.side_by_side_swap(Path(d), frames=100, cut_at=50)
        info = probe_video(str(clip.path))
        frames = list(read_frames(info, range(info.frame_count)))
        plan = Plan(info=info, start=0, used=info.frame_count, fps=info.fps, duration=0, sources=[], times=[],
                    mel_starts=[], mel=np.zeros((80, 0)))
        left, right = (128.0, 128.0), (384.0, 128.0)
        cases = [("largest face", [Target()], False), ("one person, position", [Target(point=left)], False),
                 ("one person, identity", [Target(point=left)], True),
                 ("two people, identity", [Target(point=left), Target(point=right)], True)]
        print(f"tracking on {clip.n_frames} frames of {info.width}x{info.height} with a side-swapping cut, ms/frame "
              "(decoding excluded; detection at max side 256, keyframes every 5)")
        for label, targets, use_id in cases:
            if use_id and not identity.available():
                print(f"{label:24s} skipped: no identity extra")
                continue
            best, tracks = None, None
            for _ in range(repeat):
                t = time.perf_counter()
                embedder, galleries = identity_for(plan, SETTINGS, targets, lambda line: None) if use_id else (None, None)
                tracks = track_targets(iter(frames), len(frames), SETTINGS, targets, galleries=galleries,
                                       embedder=embedder)
                dt = time.perf_counter() - t
                best = dt if best is None else min(best, dt)
            print(f"{label:24s} {1e3 * best / len(frames):6.2f}  detected {tracks[0].detected_frames} frames, "
                  f"identity decisions {[tr.identity_decisions for tr in tracks]}, cuts {list(tracks[0].shot_starts)}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    bench_cuts(args.repeat)
    bench_identity(args.repeat)
    bench_tracking(args.repeat)


if __name__ == "__main__":
    main()
