"""Cost per frame of the "who speaks" stages on the shared clips: shot cut detection
(faces/cuts.py) at the tracker's small size (max side 256) and at full size, and, when
`wav2lip_core.faces.identity` is there, the face embedding per face. Prints best-of-N ms/frame.

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
    from wav2lip_core.faces.detectors import DetectorSettings
    from wav2lip_core.faces.tracking import track_faces
    settings = DetectorSettings(kind="blazeface", weights=str(ROOT.parent / "shared" / "weights" / "blazeface" / "blazeface.pth"))
    print("identity (faces/identity embed), ms per face")
    for name in CLIPS:
        rgb = rgb_frames(MEDIA / name, 1)[0]
        y1, y2, x1, x2 = track_faces(enumerate([rgb[..., ::-1].copy()]), 1, settings).boxes[0]
        boxes = np.array([[x1, y1, x2, y2]], np.float64)
        embedder.embed(rgb, boxes)  # warm
        ms = best_ms_per_frame(lambda fs: [embedder.embed(f, boxes) for f in fs], [rgb] * 5, repeat)
        print(f"{name:34s} {ms:8.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    bench_cuts(args.repeat)
    bench_identity(args.repeat)


if __name__ == "__main__":
    main()
