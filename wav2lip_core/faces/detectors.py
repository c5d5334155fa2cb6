"""Face detectors: which one runs (settings, "auto"), where its weights are, and the detectors
themselves (S3FD and BlazeFace through face-alignment, OpenCV's Haar cascade, a fixed box).
Weights are only ever read from local files; nothing is downloaded. Tracking, padding and
smoothing of the boxes over time live in tracking.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from .. import protocol
from ..errors import DetectorError, reason

# Bump when the same settings would give different boxes (part of the cache key).
FACES_VERSION = 2  # 2: shot cuts by faces/cuts.py, whom a track follows by faces/targets.py

# What DetectorSettings runs: the protocol's detectors (but "auto", which resolve_detector turns
# into one of them) and the fixed box.
KINDS = tuple(k for k in protocol.names(protocol.DETECTORS) if k != protocol.DETECTOR_AUTO) + (protocol.DETECTOR_BOX,)


@dataclass(frozen=True)
class DetectorSettings:
    kind: str = "blazeface"  # one of KINDS
    # blazeface: the .pth (anchors found beside it); s3fd: the .pth; None: the torch hub cache
    # files face_alignment would use (never downloaded here).
    weights: str | None = None
    # Fixed (y1, y2, x1, x2) as the original --box: no detection, padding or smoothing. Setting it
    # implies kind "box".
    box: tuple[int, int, int, int] | None = None
    pads: tuple[int, int, int, int] = (0, 10, 0, 0)  # top bottom left right
    smooth: bool = True
    device: str = "cpu"
    max_side: int = 256
    keyframe_interval: int = 5
    # (x, y) in source pixels on the face to follow; None: the largest face at the start.
    face_at: tuple[int, int] | None = None

    def __post_init__(self):
        if self.box is not None:
            box = tuple(int(v) for v in self.box)
            if len(box) != 4 or box[0] < 0 or box[2] < 0 or box[1] <= box[0] or box[3] <= box[2]:
                raise DetectorError(f"bad --box {self.box}: give TOP BOTTOM LEFT RIGHT with bottom > top and right > left")
            object.__setattr__(self, "box", box)
            object.__setattr__(self, "kind", "box")
        if self.kind not in KINDS:
            raise DetectorError(f"unknown face detector '{self.kind}': use one of {', '.join(KINDS)}")
        if self.kind == "box" and self.box is None:
            raise DetectorError("detector 'box' needs a box: give --box TOP BOTTOM LEFT RIGHT")
        if len(self.pads) != 4:
            raise DetectorError(f"bad --pads {self.pads}: give four numbers TOP BOTTOM LEFT RIGHT")
        object.__setattr__(self, "pads", tuple(int(v) for v in self.pads))
        if self.max_side < 64:
            raise DetectorError(f"detection size {self.max_side} is too small: use at least 64")
        if self.keyframe_interval < 1:
            raise DetectorError(f"keyframe interval {self.keyframe_interval} must be at least 1")

    def weight_paths(self) -> tuple[Path, Path | None]:
        """(weights, anchors or None) this setting loads; nothing is checked or downloaded."""
        if self.kind == "s3fd":
            return (Path(self.weights) if self.weights else torch_hub_checkpoints() / protocol.S3FD_FILE), None
        if self.kind == "haar":
            return (Path(self.weights) if self.weights else _haar_default()), None
        if self.kind in protocol.BLAZEFACE_FILES:
            wname, aname = protocol.BLAZEFACE_FILES[self.kind]
            w = Path(self.weights) if self.weights else torch_hub_checkpoints() / wname
            return w, w.with_name(aname)
        raise DetectorError("detector 'box' has no weights")

    def cache_key_fields(self) -> dict:
        """Everything that changes the boxes (device does not)."""
        if self.kind == "box":
            return {"version": FACES_VERSION, "kind": "box", "box": list(self.box)}
        w, _ = self.weight_paths()
        try:
            wsize = w.stat().st_size
        except OSError:
            wsize = -1
        return {
            "version": FACES_VERSION,
            "kind": self.kind,
            "weights": str(w.resolve()),
            "weights_size": wsize,
            "pads": list(self.pads),
            "smooth": self.smooth,
            "max_side": self.max_side,
            "keyframe_interval": self.keyframe_interval,
            "face_at": list(self.face_at) if self.face_at is not None else None,
        }



class Detector(Protocol):
    def detect(self, rgb_small: np.ndarray) -> np.ndarray:
        """(K, 5) float rows [x1, y1, x2, y2, score] in the given image's pixels."""


def torch_hub_checkpoints() -> Path:
    """torch.hub.get_dir()/checkpoints, where face_alignment keeps its weights (under the names
    protocol.S3FD_FILE and protocol.BLAZEFACE_FILES give): torch's answer once torch is loaded (it
    honours a torch.hub.set_dir() made in this process), else protocol's copy of torch's rule, so
    that choosing the detector does not import torch (2-3 s) for Haar or --box runs."""
    import sys

    if "torch" in sys.modules:
        import torch.hub

        return Path(torch.hub.get_dir()) / "checkpoints"
    return Path(protocol.torch_hub_checkpoints())


def _need_file(path: Path, what: str) -> None:
    if not path.is_file():
        raise DetectorError(
            f"{what} not found: {path} is missing; put the file there or pass --detector-weights PATH "
            "(it is never downloaded)"
        )


def _load_error(path: Path, what: str, exc: Exception) -> DetectorError:
    return DetectorError(f"cannot load {what} {path}: {reason(exc)}; replace it with the original file or use another --detector")


class BlazeFaceDetector:
    """face_alignment's BlazeFace. It centre-crops non-square images to a square, which would miss
    faces off the middle of portrait/landscape frames, so the image is letterboxed to a square
    first."""

    def __init__(self, weights: Path, anchors: Path, back: bool, device: str = "cpu"):
        what = "BlazeFace back weights" if back else "BlazeFace weights"
        _need_file(weights, what)
        _need_file(anchors, what.replace("weights", "anchors"))
        from face_alignment.detection.blazeface.blazeface_detector import BlazeFaceDetector as _FA

        try:
            # Explicit paths: face_alignment downloads only when path_to_detector is None.
            self._fa = _FA(device, back_model=back, path_to_detector=str(weights), path_to_anchor=str(anchors))
        except Exception as exc:
            raise _load_error(weights, what, exc) from exc
        self.input_side = 256 if back else 128

    def detect(self, rgb_small: np.ndarray) -> np.ndarray:
        h, w = rgb_small.shape[:2]
        side = max(h, w)
        y0, x0 = (side - h) // 2, (side - w) // 2
        if h != w:
            sq = np.zeros((side, side, 3), np.uint8)
            sq[y0 : y0 + h, x0 : x0 + w] = rgb_small
        else:
            sq = rgb_small
        out = np.asarray(self._fa.detect_from_image(sq), np.float64).reshape(-1, 5)
        out[:, [0, 2]] -= x0
        out[:, [1, 3]] -= y0
        return s3fd_shaped(out)


# BlazeFace boxes hug the features (brows to mouth); Wav2Lip was trained on S3FD boxes, which
# reach from the forehead to the chin. Measured on the 4 shared clips (2 frames each) against
# OpenCV's Haar boxes, which match the original's S3FD box in model_io.npz within 7 px:
# S3FD-like side = 1.13 x BlazeFace's (1.06-1.21), centre 0.15 x height higher (0.11-0.22).
# On vretalk_face2 this lifts IoU with the reference S3FD box from 0.63 to 0.83.
BLAZE_TO_S3FD_SCALE = 1.13
BLAZE_TO_S3FD_SHIFT = 0.15


def s3fd_shaped(rows: np.ndarray) -> np.ndarray:
    """BlazeFace rows [x1, y1, x2, y2, score] reshaped to the box S3FD would give."""
    out = rows.copy()
    w = rows[:, 2] - rows[:, 0]
    h = rows[:, 3] - rows[:, 1]
    cx = (rows[:, 0] + rows[:, 2]) / 2
    cy = (rows[:, 1] + rows[:, 3]) / 2 - BLAZE_TO_S3FD_SHIFT * h
    out[:, 0], out[:, 2] = cx - BLAZE_TO_S3FD_SCALE * w / 2, cx + BLAZE_TO_S3FD_SCALE * w / 2
    out[:, 1], out[:, 3] = cy - BLAZE_TO_S3FD_SCALE * h / 2, cy + BLAZE_TO_S3FD_SCALE * h / 2
    return out


def _haar_default() -> Path:
    import cv2

    return Path(cv2.data.haarcascades) / "haarcascade_frontalface_default.xml"


class HaarDetector:
    """OpenCV's frontal-face Haar cascade, which ships inside opencv-python: works with no
    downloaded weights at all (the demo, offline machines). Frontal faces only; its boxes
    already have S3FD's shape."""

    def __init__(self, cascade: Path):
        _need_file(cascade, "Haar cascade")
        self._cascade = cv2.CascadeClassifier(str(cascade))
        if self._cascade.empty():
            raise DetectorError(f"cannot load Haar cascade {cascade}: give an OpenCV cascade .xml or use another --detector")

    def detect(self, rgb_small: np.ndarray) -> np.ndarray:
        grey = cv2.equalizeHist(cv2.cvtColor(rgb_small, cv2.COLOR_RGB2GRAY))
        min_side = max(20, min(grey.shape) // 8)
        found = self._cascade.detectMultiScale(grey, scaleFactor=1.1, minNeighbors=5, minSize=(min_side, min_side))
        rows = [[x, y, x + w, y + h, 1.0] for x, y, w, h in np.asarray(found).reshape(-1, 4)]
        return np.asarray(rows, np.float64).reshape(-1, 5)


class S3FDDetector:
    def __init__(self, weights: Path, device: str = "cpu"):
        _need_file(weights, "S3FD weights")
        from face_alignment.detection.sfd.sfd_detector import SFDDetector as _FA

        try:
            self._fa = _FA(device, path_to_detector=str(weights))
        except Exception as exc:
            raise _load_error(weights, "S3FD weights", exc) from exc

    def detect(self, rgb_small: np.ndarray) -> np.ndarray:
        return np.asarray(self._fa.detect_from_image(rgb_small), np.float64).reshape(-1, 5)


class FixedBoxDetector:
    """The user's box, whatever the image: rows are in full-resolution pixels."""

    def __init__(self, box: tuple[int, int, int, int]):
        y1, y2, x1, x2 = box
        self._row = np.array([[x1, y1, x2, y2, 1.0]], np.float64)

    def detect(self, rgb_small: np.ndarray) -> np.ndarray:
        return self._row.copy()


def detect_faces_in(detector: Detector, bgr: np.ndarray, max_side: int) -> np.ndarray:
    """(K, 5) rows [x1, y1, x2, y2, score] in `bgr`'s own pixels, detected on a copy whose longer
    side is at most `max_side` (as the tracker detects)."""
    small, scale = small_rgb(bgr, max_side)
    rows = np.asarray(detector.detect(small), np.float64).reshape(-1, 5).copy()
    rows[:, :4] /= scale
    return rows


def small_rgb(bgr: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    """(RGB copy with its longer side at most `max_side`, area-averaged; its scale): what the
    detectors take."""
    height, width = bgr.shape[:2]
    scale = min(1.0, max_side / max(height, width))
    small = bgr
    if scale < 1.0:
        small = cv2.resize(bgr, (max(1, round(width * scale)), max(1, round(height * scale))),
                           interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(small, cv2.COLOR_BGR2RGB), scale


def make_detector(settings: DetectorSettings) -> Detector:
    """Build the detector from local files only; DetectorError names any missing file."""
    if settings.kind == "box":
        return FixedBoxDetector(settings.box)
    w, a = settings.weight_paths()
    if settings.kind == "s3fd":
        return S3FDDetector(w, settings.device)
    if settings.kind == "haar":
        return HaarDetector(w)
    return BlazeFaceDetector(w, a, back=settings.kind == "blazeface-back", device=settings.device)


def recorded_detector_weights() -> Path | None:
    """The detector weights install.py recorded for this engine (its venv root's config)."""
    import json
    import sys

    try:
        data = json.loads((Path(sys.prefix) / protocol.CONFIG_NAME).read_text(encoding="utf-8"))
        value = data.get(protocol.CONFIG_DETECTOR_WEIGHTS) if isinstance(data, dict) else None
    except (OSError, ValueError):
        return None
    return Path(value) if isinstance(value, str) and value else None


def _kind_of_weights(path: Path) -> str:
    name = path.name.lower()
    if "s3fd" in name:
        return "s3fd"
    return "blazeface-back" if "back" in name else "blazeface"


def _usable(kind: str, weights: Path | None) -> bool:
    w, a = DetectorSettings(kind=kind, weights=str(weights) if weights else None).weight_paths()
    return w.is_file() and (a is None or a.is_file())


def resolve_detector(kind: str, weights: str | None) -> tuple[str, str | None, str]:
    """(detector kind, weights, a line for the user) for `kind`, turning "auto" into BlazeFace
    when its weights are found (--detector-weights, what install.py recorded, the torch hub
    cache face-alignment uses), else OpenCV's Haar cascade, which ships with opencv-python, so
    a first run works without any download."""
    if kind != protocol.DETECTOR_AUTO:
        recorded = recorded_detector_weights() if not weights and kind != "haar" else None
        if recorded is not None and _kind_of_weights(recorded) == kind:  # install.py's record for it
            return kind, str(recorded), ""
        return kind, weights, ""
    if weights:  # asked for explicitly: use them or say what is wrong, never silently fall back
        kind = _kind_of_weights(Path(weights))
        w, a = DetectorSettings(kind=kind, weights=weights).weight_paths()
        if not _usable(kind, Path(weights)):
            missing = w if not w.is_file() else a
            raise DetectorError(f"face detector weights not found: {missing} is missing; fix --detector-weights "
                                "or leave it out to use the Haar detector")
        return kind, str(w), f"face detector: {kind} ({w})"
    recorded = recorded_detector_weights()
    for cand_kind, cand in ([(_kind_of_weights(recorded), recorded)] if recorded else []) + [("blazeface", None)]:
        if _usable(cand_kind, cand):
            w, _ = DetectorSettings(kind=cand_kind, weights=str(cand) if cand else None).weight_paths()
            return cand_kind, str(w), f"face detector: {cand_kind} ({w})"
    hub = torch_hub_checkpoints()
    return "haar", None, ("face detector: Haar (OpenCV's, bundled); for steadier boxes put BlazeFace's "
                          f"blazeface.pth + anchors.npy (face-alignment, Apache-2.0) in {hub}, or record them with "
                          "`python3 install.py --detector-weights PATH`")
