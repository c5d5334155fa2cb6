"""The README's pictures of the blend masks: docs/masks/{feather,hard,mouth}.png.

Each picture is the real paste (blend.paste) of a "generated face" that is the source's own crop
tinted red, so the red shows exactly where and how strongly each --blend writes; the face box is
outlined. The default picture is scikit-image's astronaut (NASA, public domain), so the README
carries no third-party footage; `--source` takes any image or clip (its first frame).

    .venv/bin/python tools/mask_pictures.py [--source FILE] [--out docs/masks]

Needs the landmarks extra (for the mouth mask) and the BlazeFace weights in ../shared.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from wav2lip_core.faces import landmarks  # noqa: E402
from wav2lip_core.sync.blend import crop_face, face_edit, paste  # noqa: E402
from wav2lip_core.media.decode import read_frames  # noqa: E402
from wav2lip_core.faces.detectors import DetectorSettings  # noqa: E402
from wav2lip_core.faces.tracking import track_faces  # noqa: E402
from wav2lip_core.media.probe import probe_video  # noqa: E402

BLAZEFACE = ROOT.parent / "shared" / "weights" / "blazeface" / "blazeface.pth"
SIDE = 192  # output pictures are SIDE x SIDE


def default_source() -> Path:
    import skimage

    return Path(skimage.__file__).parent / "data" / "astronaut.png"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--source", type=Path, default=None, help="image or clip (default: skimage's astronaut)")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "masks")
    args = ap.parse_args()
    source = args.source or default_source()
    (_, frame), = read_frames(probe_video(source), [0])
    settings = DetectorSettings(kind="blazeface", weights=str(BLAZEFACE))
    box = tuple(int(v) for v in track_faces(enumerate([frame]), 1, settings).boxes[0])
    y1, y2, x1, x2 = box
    red = np.zeros((96, 96, 3), np.uint8)
    red[..., 2] = 255
    tinted = cv2.addWeighted(crop_face(frame, box), 0.4, red, 0.6, 0)
    edit = face_edit(landmarks.load_predictor(), frame, box, "mouth", "off")
    if edit.mask is None:
        raise SystemExit(f"no landmarks for the face in {box} of {source}")
    # A square view around the box with a quarter of its size as margin.
    size = int(1.5 * max(y2 - y1, x2 - x1))
    cy, cx = (y1 + y2) // 2, (x1 + x2) // 2
    h, w = frame.shape[:2]
    vy1, vx1 = max(0, min(h - size, cy - size // 2)), max(0, min(w - size, cx - size // 2))
    args.out.mkdir(parents=True, exist_ok=True)
    for blend in ("feather", "hard", "mouth"):
        out = frame.copy()
        paste(out, tinted, box, blend, mask=edit.mask if blend == "mouth" else None)
        cv2.rectangle(out, (x1, y1), (x2 - 1, y2 - 1), (255, 255, 255), 1)
        view = out[vy1: vy1 + size, vx1: vx1 + size]
        path = args.out / f"{blend}.png"
        cv2.imwrite(str(path), cv2.resize(view, (SIDE, SIDE), interpolation=cv2.INTER_AREA),
                    [cv2.IMWRITE_PNG_COMPRESSION, 9])
        print(path)


if __name__ == "__main__":
    main()
