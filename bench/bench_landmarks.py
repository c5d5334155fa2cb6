"""CPU cost per face of --blend mouth and --align auto: landmarks, mouth mask, levelled crop and
turned paste, at a 512x512 clip's face box (~330 px) and a 1080p close-up's (~700 px: the same
frame scaled by 2.11), upright and tilted by 20 degrees. Prints best-of-N milliseconds.

    .venv/bin/python bench/bench_landmarks.py [--repeat N]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cv2

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from wav2lip_core.faces import align, landmarks  # noqa: E402
from wav2lip_core.sync.blend import crop_face, paste  # noqa: E402
from wav2lip_core.media.decode import read_frames  # noqa: E402
from wav2lip_core.faces.detectors import DetectorSettings  # noqa: E402
from wav2lip_core.faces.tracking import track_faces  # noqa: E402
from wav2lip_core.faces.mouth_mask import mouth_mask  # noqa: E402
from wav2lip_core.media.probe import probe_video  # noqa: E402

SHARED = ROOT.parent / "shared"
CLIP = SHARED / "media" / "sadtalker_WDA_KatieHill_000.mp4"


def best_ms(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 1e3 * min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=15)
    args = ap.parse_args()
    (_, frame), = read_frames(probe_video(CLIP), [0])
    settings = DetectorSettings(kind="blazeface", weights=str(SHARED / "weights" / "blazeface" / "blazeface.pth"))
    box = tuple(int(v) for v in track_faces(enumerate([frame]), 1, settings).boxes[0])
    t = time.perf_counter()
    predictor = landmarks.load_predictor()
    print(f"load predictor: {time.perf_counter() - t:.2f} s (once per process)")
    face = 255 - crop_face(frame, box)
    print("case                      box px  points  mask  crop(plain/turned)  paste feather/turned/mouth  ms")
    for label, scale in (("512x512 clip", 1.0), ("1080p close-up", 1080 / 512)):
        img = cv2.resize(frame, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC) if scale != 1 else frame
        b = tuple(int(round(v * scale)) for v in box)
        for tilt in (0, 20):
            if tilt:
                y1, y2, x1, x2 = b
                turn = cv2.getRotationMatrix2D(((x1 + x2) / 2, (y1 + y2) / 2), tilt, 1.0)
                img_t = cv2.warpAffine(img, turn, img.shape[1::-1], borderMode=cv2.BORDER_REPLICATE)
            else:
                img_t = img
            pts = predictor.points(img_t, b)
            rot = align.rotation_for(pts, b) or align.Rotation(b, 0.5)
            mask = mouth_mask(pts, b)
            r = args.repeat
            figures = [
                best_ms(lambda: predictor.points(img_t, b), r),
                best_ms(lambda: mouth_mask(pts, b), r),
                best_ms(lambda: crop_face(img_t, b), r),
                best_ms(lambda: crop_face(img_t, b, rot), r),
                best_ms(lambda: paste(img_t.copy(), face, b, "feather"), r),
                best_ms(lambda: paste(img_t.copy(), face, b, "feather", rotation=rot), r),
                best_ms(lambda: paste(img_t.copy(), face, b, "mouth", mask=mask), r),
                best_ms(lambda: img_t.copy(), r),  # the copy inside the paste timings
            ]
            copy = figures.pop()
            for i in (4, 5, 6):
                figures[i] -= copy
            print(f"{label:16s} tilt {tilt:2d}  {b[1] - b[0]:4d}   " + "  ".join(f"{v:6.2f}" for v in figures))


if __name__ == "__main__":
    main()
