"""`wav2lip faces VIDEO [--time SEC] [--json]`: the faces on one frame and the pixel to give
`--face-at X Y --face-time SEC` or `--speaker X Y AUDIO` for each (faces.lookup). serve's faces
request runs the same arguments (Blender's Pick Face outlines what it answers). Errors are one
`error: ...` line on stderr and exit code 2; no tracebacks.
"""

from __future__ import annotations

import argparse
import json
import sys

from .. import protocol as P
from .console import answer


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=f"wav2lip {P.FACES_COMMAND}",
        description=f"List the faces on one frame of a clip, with the pixel to pass to {P.OPT_FACE_AT} or {P.OPT_SPEAKER}.")
    p.add_argument("video", help="the clip (or still image)")
    p.add_argument("--time", type=float, default=0.0, metavar="SEC", help="clip time of the frame (default 0)")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.add_argument(P.OPT_DETECTOR, choices=P.names(P.DETECTORS), default=P.DETECTOR_AUTO)
    p.add_argument(P.OPT_DETECTOR_WEIGHTS, metavar="PATH", help="detector weights (.pth; BlazeFace anchors .npy beside it)")
    return p


def find(args: argparse.Namespace):
    """faces.lookup.FacesFound for parsed arguments (the command's and a serve faces request's)."""
    from ..faces.detectors import DetectorSettings, resolve_detector
    from ..faces.lookup import faces_at

    kind, weights, _ = resolve_detector(args.detector, args.detector_weights)
    return faces_at(args.video, args.time, DetectorSettings(kind=kind, weights=weights))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    found = answer(lambda: find(args))
    if isinstance(found, int):
        return found
    if args.json:
        print(json.dumps(found.to_json()))
        return 0
    where = f"{found.time:.2f} s (frame {found.frame})"
    if not found.boxes:
        print(f"no face at {where} of {found.path} ({found.width}x{found.height}): try another --time")
        return 0
    print(f"{len(found.boxes)} face(s) at {where} of {found.path} ({found.width}x{found.height}):")
    for k, (x1, y1, x2, y2) in enumerate(found.boxes):
        x, y = found.centre(k)
        print(f"  {k + 1}: {P.OPT_FACE_AT} {x} {y} {P.OPT_FACE_TIME} {found.time:g}   (box x {x1}-{x2}, y {y1}-{y2})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
