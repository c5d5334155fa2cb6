"""dlib's 68-point face landmarks inside a face box the pipeline already has (optional extra).

`pip install "wav2lip-blender[landmarks]"` brings dlib (the `dlib-bin` wheels) and
`face-recognition-models`, which ships `shape_predictor_68_face_landmarks.dat`. That predictor was
trained on the iBUG 300-W data set, whose licence excludes commercial use: so do `--blend mouth`
and `--align auto` when they use it. Without the extra, `available()` is False, `--align auto`
does nothing and `--blend mouth` fails at request time (`require()`).

No dlib face detector runs: the predictor starts from the face track's box (faces.FaceTrack,
y1 y2 x1 x2). Measured on 4 shared clips, landmarks from the padded BlazeFace box and from dlib's
own HOG box differ by 1-6 px on average (eye distances 120-240 px), so the box is used as it is.

The predictor always returns 68 points, face or not. A frame's points are kept only when they
stay put when the box moves: the predictor runs again from the box shifted by SHIFT of its size
up, down, left and right; on a face the points barely move, on background they follow the box.
Median over the four shifts of (median point displacement / shift), 8 frames of each of the 4
shared clips, BlazeFace boxes vs 5 background boxes per frame (half the face box's size, in the
corners and above the face): faces <= 0.18, background >= 0.46 (flat grey: 1.0). MAX_DRIFT 0.3
sits between. Shapes with the mouth not below the eyes (in the face's own frame) or the eyes
implausibly close or far apart are dropped too. Those frames get None, and the caller falls back
to feather and no rotation.

Cost: one predictor call ~3 ms per face whatever its size (it samples a fixed number of pixels;
3 ms unloaded, 5-8 ms while the 2-core test machine ran ~9 jobs). `points` makes five (six for a
head tilted by more than LEVEL_ANGLE), plus the grey conversion of the box and a margin: best
of 20 under that load, 42-62 ms per face for 330 and 700 px boxes, 48-60 ms tilted by 20
degrees (bench/bench_landmarks.py); expect about a third of that on an idle core. It runs in the
sync pass's decode+crop thread, beside the model.
"""

from __future__ import annotations

import importlib.util
import math
import os
import threading
from functools import lru_cache

import cv2
import numpy as np

from ..errors import Wav2LipError
from ..media.picture import Picture

INSTALL_HINT = 'pip install "wav2lip-blender[landmarks]"'
LICENCE_NOTE = ("dlib's 68-point predictor is trained on iBUG 300-W, which is for non-commercial use only")
MODEL_FILE = "shape_predictor_68_face_landmarks.dat"

# Indices into the 68 points (the iBUG 300-W layout).
JAW = slice(0, 17)
RIGHT_EYE = slice(36, 42)  # the subject's right eye: left in the picture
LEFT_EYE = slice(42, 48)
OUTER_LIPS = slice(48, 60)
INNER_LIPS = slice(60, 68)
MOUTH = slice(48, 68)
CHIN = 8

# The stability check: shift of the box (fraction of its size) and the largest median point
# displacement per shift that still counts as a face (see the module docstring for the figures).
SHIFT = 0.03
MAX_DRIFT = 0.3
# Tilts (degrees) from which the points are predicted again on the box turned upright; beyond
# MAX_LEVEL_ANGLE the first guess's eye line is not trusted.
LEVEL_ANGLE = 8.0
MAX_LEVEL_ANGLE = 60.0
# Grey margin around the box (fraction of its size) so shifted boxes still see pixels.
MARGIN = 0.15


class LandmarksUnavailable(Wav2LipError):
    """The landmarks extra (dlib and its 68-point model) is not installed."""


def packaged_model(filename: str) -> str | None:
    """The path of a model file shipped in face-recognition-models (`filename` in its models/
    folder), or None; found without importing the package (its __init__ imports pkg_resources,
    which setuptools 81+ no longer has). Also used by identity.py."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        path = os.path.join(folder, "models", filename)
        if os.path.isfile(path):
            return path
    return None


@lru_cache(maxsize=1)
def available() -> bool:
    """True when dlib imports (~30 ms) and the 68-point model is installed (it is not loaded)."""
    try:
        import dlib  # noqa: F401
    except ImportError:
        return False
    return packaged_model(MODEL_FILE) is not None


def require(what: str = "--blend mouth") -> None:
    """Raise the one-line install hint when the extra is missing (call at request time)."""
    if not available():
        raise LandmarksUnavailable(f"{what} needs face landmarks: {INSTALL_HINT} ({LICENCE_NOTE})")


class Predictor:
    """dlib's 68-point shape predictor, started from a face box. Thread-safe."""

    def __init__(self, path: str):
        import dlib

        self._dlib = dlib
        self._predict = dlib.shape_predictor(path)
        # dlib's predictor is not documented as reentrant; calls are short, so one lock is enough.
        self._lock = threading.Lock()

    def raw(self, grey: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
        """The 68 (x, y) points, float64, in `grey`'s pixels, predicted from `box` (y1, y2, x1, x2),
        with no plausibility check."""
        y1, y2, x1, x2 = (int(v) for v in box)
        rect = self._dlib.rectangle(x1, y1, x2 - 1, y2 - 1)  # dlib's rectangles include their right/bottom
        with self._lock:
            shape = self._predict(grey, rect)
        return np.array([(p.x, p.y) for p in shape.parts()], np.float64)

    def points(self, frame: np.ndarray | Picture, box: tuple[int, int, int, int]) -> np.ndarray | None:
        """The 68 (x, y) points in frame pixels (float64, shape (68, 2)) of the face in `box`
        (y1, y2, x1, x2) of `frame` (BGR array or Picture), or None where they are not trusted
        (no face in the box, or an implausible shape).

        A head tilted by more than LEVEL_ANGLE is predicted a second time on the box turned
        upright by the first guess's eye angle (the predictor was trained on mostly upright faces:
        at a 36-degree tilt its first points are rough but their eye line is within a few degrees,
        and the second pass is as stable as on an upright face)."""
        y1, y2, x1, x2 = (int(v) for v in box)
        height, width = (frame.height, frame.width) if isinstance(frame, Picture) else frame.shape[:2]
        m = int(round(MARGIN * max(y2 - y1, x2 - x1)))
        oy1, oy2, ox1, ox2 = max(0, y1 - m), min(height, y2 + m), max(0, x1 - m), min(width, x2 + m)
        region = frame.region_bgr(oy1, oy2, ox1, ox2) if isinstance(frame, Picture) else frame[oy1:oy2, ox1:ox2]
        grey = cv2.cvtColor(region, cv2.COLOR_BGR2GRAY)
        local = (y1 - oy1, y2 - oy1, x1 - ox1, x2 - ox1)
        pts = self.raw(grey, local)
        angle = eye_angle(pts)
        if LEVEL_ANGLE <= abs(angle) <= MAX_LEVEL_ANGLE:
            centre = ((local[2] + local[3] - 1) / 2.0, (local[0] + local[1] - 1) / 2.0)
            turn = cv2.getRotationMatrix2D(centre, angle, 1.0)
            upright = cv2.warpAffine(grey, turn, grey.shape[::-1], flags=cv2.INTER_LINEAR,
                                     borderMode=cv2.BORDER_REPLICATE)
            level = self.raw(upright, local)
            if not (_plausible(level, local) and _stable(self, upright, local, level)):
                return None
            back = cv2.invertAffineTransform(turn)
            pts = level @ back[:, :2].T + back[:, 2]
        elif not (_plausible(pts, local) and _stable(self, grey, local, pts)):
            return None
        return pts + (ox1, oy1)


def eye_angle(pts: np.ndarray) -> float:
    """Degrees, picture coordinates (y down): positive when the picture's right eye is lower."""
    left, right = eye_centres(pts)
    return math.degrees(math.atan2(right[1] - left[1], right[0] - left[0]))


def _plausible(pts: np.ndarray, box: tuple[int, int, int, int]) -> bool:
    """Eyes a sane distance apart, mouth below them (in the face's own frame), all points near
    the box."""
    y1, y2, x1, x2 = box
    size = max(y2 - y1, x2 - x1)
    lo = np.array([x1, y1]) - 0.25 * size
    hi = np.array([x2, y2]) + 0.25 * size
    if not ((pts >= lo) & (pts <= hi)).all():
        return False
    eye_r, eye_l = pts[RIGHT_EYE].mean(0), pts[LEFT_EYE].mean(0)
    across = eye_l - eye_r
    span = np.hypot(*across)
    if not 0.15 * size <= span <= 0.8 * size:
        return False
    down = pts[MOUTH].mean(0) - (eye_r + eye_l) / 2
    # The mouth lies roughly along the eye line's normal (pointing down in an upright face).
    normal = np.array([-across[1], across[0]]) / span
    return float(down @ normal) > 0.5 * np.hypot(*down) and np.hypot(*down) > 0.3 * span


def _stable(predictor: Predictor, grey: np.ndarray, box: tuple[int, int, int, int], pts: np.ndarray) -> bool:
    y1, y2, x1, x2 = box
    d = max(2, int(round(SHIFT * max(y2 - y1, x2 - x1))))
    drifts = []
    for dy, dx in ((d, 0), (-d, 0), (0, d), (0, -d)):
        moved = predictor.raw(grey, (y1 + dy, y2 + dy, x1 + dx, x2 + dx))
        drifts.append(np.median(np.hypot(*(moved - pts).T)) / d)
    # The median: on a real face one of the four shifts now and then makes the predictor jump.
    return float(np.median(drifts)) <= MAX_DRIFT


_LOCK = threading.Lock()


def load_predictor() -> Predictor:
    """The process's one Predictor (loading the 100 MB model takes ~1.5 s); LandmarksUnavailable
    with the install hint when the extra is missing."""
    require()
    with _LOCK:
        return _cached(packaged_model(MODEL_FILE))


@lru_cache(maxsize=1)
def _cached(path: str) -> Predictor:
    return Predictor(path)


def eye_centres(pts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(centre of the eye on the picture's left, centre of the one on its right) as (x, y)."""
    return pts[RIGHT_EYE].mean(0), pts[LEFT_EYE].mean(0)


def mouth_centre(pts: np.ndarray) -> np.ndarray:
    return pts[MOUTH].mean(0)
