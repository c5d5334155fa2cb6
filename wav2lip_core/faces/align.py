"""Level tilted heads: the model sees the face box turned about its centre so the eyes are
level, and its output is turned back before it is blended in.

Wav2Lip was trained on upright faces; onnx-HQ levels the face first for the same reason. The
angle comes from the landmarks (landmarks.py), so `--align auto` does something only with the
landmarks extra, on frames whose landmarks were found, and only when the tilt is at least
MIN_ANGLE (below it the crop is the original's plain resize, bit for bit) and at most MAX_ANGLE
(beyond it the 68-point predictor is unreliable, so its angle is not trusted).

Never with `--blend hard`: the hard paste writes the whole box, and a turned square does not
cover it (its corners would show the source's unturned face). `--box` does not turn it off: a
fixed box on a tilted head benefits the same. The original's exact path (`--box` with
`--blend hard`) is therefore never rotated.

Heads tilt slowly, and the 68-point landmarks with their stability check cost ~20-25 ms a face
(landmarks.py), so with levelling alone a Leveller measures the eye line every LEVEL_EVERY
frames (or at once when the box moves or resizes by REMEASURE of its size) and holds the angle in
between. A tilt that hovers around MIN_ANGLE would switch the turn on and off from frame to
frame: once turning, a face keeps turning until its tilt drops below MIN_ANGLE - HYSTERESIS.

The crop is one cv2.warpAffine from the frame straight to 96x96 with the same pixel-centre
convention as cv2.resize (so a 0-degree Rotation gives the plain crop up to interpolation
rounding), reading only the turned box's bounding rectangle (a Picture converts just that).
The way back is the inverse map, sampled for every pixel of the box.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

from . import landmarks
from .. import protocol
from ..model.checkpoint import IMG_SIZE
from ..media.picture import Picture

# Below 5 degrees the face is as upright as Wav2Lip's training faces (LRS2 talking heads, never
# levelled); turning it would only resample the crop.
MIN_ANGLE = 5.0
MAX_ANGLE = 50.0
HYSTERESIS = 1.5
# 0.2 s at 25 fps: a head turning at 30 degrees/s (fast, for a talking head) moves 6 degrees in
# that time; the crop is levelled to within that, the paste is exact whatever the angle.
LEVEL_EVERY = 5
REMEASURE = 0.1


def applies(align: str, blend: str) -> bool:
    """Whether frames of a job may be turned (each still needs its landmarks)."""
    return align == protocol.ALIGN_AUTO and blend != "hard"


def eye_angle(points: np.ndarray) -> float:
    """The eye line's angle in degrees in picture coordinates (y down): positive when the eye on
    the picture's right is lower, i.e. the head leans clockwise as seen."""
    return landmarks.eye_angle(points)


@dataclass(frozen=True)
class Rotation:
    """The face box (y1, y2, x1, x2) and the angle (degrees, counter-clockwise as seen) the
    model's crop is turned by about the box centre."""

    box: tuple[int, int, int, int]
    angle: float

    def to_crop(self) -> np.ndarray:
        """2x3 affine map from frame pixels to 96x96 crop pixels."""
        y1, y2, x1, x2 = self.box
        w, h = x2 - x1, y2 - y1
        centre = ((x1 + x2 - 1) / 2.0, (y1 + y2 - 1) / 2.0)
        turn = np.vstack([cv2.getRotationMatrix2D(centre, self.angle, 1.0), [0.0, 0.0, 1.0]])
        sx, sy = IMG_SIZE / w, IMG_SIZE / h
        # cv2.resize's pixel centres: u = (x - x1 + 0.5) * 96 / w - 0.5.
        scale = np.array([[sx, 0.0, (0.5 - x1) * sx - 0.5],
                          [0.0, sy, (0.5 - y1) * sy - 0.5],
                          [0.0, 0.0, 1.0]])
        return (scale @ turn)[:2]

    def source_rect(self, height: int, width: int) -> tuple[int, int, int, int]:
        """(y1, y2, x1, x2): the frame pixels the crop reads (the turned box's bounds, clipped)."""
        back = cv2.invertAffineTransform(self.to_crop())
        corners = np.array([[-0.5, -0.5], [IMG_SIZE - 0.5, -0.5], [-0.5, IMG_SIZE - 0.5], [IMG_SIZE - 0.5, IMG_SIZE - 0.5]])
        xy = corners @ back[:, :2].T + back[:, 2]
        x1, y1 = np.floor(xy.min(0)).astype(int) - 1
        x2, y2 = np.ceil(xy.max(0)).astype(int) + 2
        return max(0, y1), min(height, y2), max(0, x1), min(width, x2)


def rotation_for(points: np.ndarray | None, box: tuple[int, int, int, int], *,
                 min_angle: float = MIN_ANGLE, max_angle: float = MAX_ANGLE) -> Rotation | None:
    """The Rotation that levels the eyes of the face in `box`, or None (no landmarks, tilt
    below `min_angle` or beyond `max_angle`)."""
    if points is None:
        return None
    angle = eye_angle(points)
    if not min_angle <= abs(angle) <= max_angle:
        return None
    return Rotation(tuple(int(v) for v in box), angle)


class Leveller:
    """The levelling Rotation of one job's faces, frame after frame in output order (one per
    sync pass, used from its decode+crop thread). `rotation` measures with `predictor` (a
    landmarks.Predictor) when due and holds the angle otherwise; `from_points` takes a frame's
    landmarks measured elsewhere (the mouth mask needs them on every frame)."""

    def __init__(self, predictor, every: int = LEVEL_EVERY):
        self._predictor = predictor
        self.every = max(1, int(every))
        self.measured = 0  # landmark measurements made (for tests and benchmarks)
        self._box: tuple[int, int, int, int] | None = None  # the box of the last measurement
        self._since = 0  # frames since it
        self._angle: float | None = None  # its eye angle; None: no trusted landmarks there
        self._turning = False

    def rotation(self, frame: np.ndarray | Picture, box: tuple[int, int, int, int]) -> Rotation | None:
        box = tuple(int(v) for v in box)
        if self._due(box):
            self.measured += 1
            points = self._predictor.points(frame, box)
            self._hold(box, None if points is None else eye_angle(points))
        else:
            self._since += 1
        return self._decide(box)

    def from_points(self, points: np.ndarray | None, box: tuple[int, int, int, int]) -> Rotation | None:
        box = tuple(int(v) for v in box)
        self._hold(box, None if points is None else eye_angle(points))
        return self._decide(box)

    def _due(self, box: tuple[int, int, int, int]) -> bool:
        if self._box is None or self._since + 1 >= self.every:
            return True
        (y1, y2, x1, x2), (b1, b2, a1, a2) = box, self._box
        size = max(b2 - b1, a2 - a1)
        moved = max(abs((y1 + y2) - (b1 + b2)), abs((x1 + x2) - (a1 + a2))) / 2
        resized = max(abs((y2 - y1) - (b2 - b1)), abs((x2 - x1) - (a2 - a1)))
        return max(moved, resized) > REMEASURE * size

    def _hold(self, box: tuple[int, int, int, int], angle: float | None) -> None:
        self._box, self._since, self._angle = box, 0, angle

    def _decide(self, box: tuple[int, int, int, int]) -> Rotation | None:
        angle = self._angle
        low = MIN_ANGLE - HYSTERESIS if self._turning else MIN_ANGLE
        self._turning = angle is not None and low <= abs(angle) <= MAX_ANGLE
        return Rotation(box, angle) if self._turning else None


def crop(frame: np.ndarray | Picture, rot: Rotation) -> np.ndarray:
    """The levelled 96x96 BGR model input (pixels beyond the frame edge repeat the edge)."""
    height, width = (frame.height, frame.width) if isinstance(frame, Picture) else frame.shape[:2]
    y1, y2, x1, x2 = rot.source_rect(height, width)
    region = frame.region_bgr(y1, y2, x1, x2) if isinstance(frame, Picture) else frame[y1:y2, x1:x2]
    m = rot.to_crop().copy()
    m[:, 2] += m[:, :2] @ (x1, y1)  # region pixels, not frame pixels
    return cv2.warpAffine(region, m, (IMG_SIZE, IMG_SIZE), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def uncrop(image96: np.ndarray, rot: Rotation, size: tuple[int, int] | None = None) -> np.ndarray:
    """A 96x96 image in crop pixels (the model's face, or a mask) turned back and sampled at
    every pixel of the box: (h, w[, c]) in box pixels, 0 where the crop does not reach. `size`
    (w, h): sample the box on a coarser grid of that size instead (for smooth masks)."""
    y1, y2, x1, x2 = rot.box
    w, h = x2 - x1, y2 - y1
    gw, gh = size or (w, h)
    m = rot.to_crop().copy()
    m[:, 2] += m[:, :2] @ (x1, y1)  # box pixels -> crop pixels
    if (gw, gh) != (w, h):  # grid pixels -> box pixels, with cv2.resize's pixel centres
        sx, sy = w / gw, h / gh
        m = m @ np.array([[sx, 0.0, 0.5 * sx - 0.5], [0.0, sy, 0.5 * sy - 0.5], [0.0, 0.0, 1.0]])
    return cv2.warpAffine(image96, m, (gw, gh), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)


@lru_cache(maxsize=8)
def border_taper(h: int, w: int, width: float) -> np.ndarray:
    """(h, w) float32, read-only: 0 on the box's outermost pixels rising linearly to 1 `width` px
    inside, so a mask multiplied by it never changes the box's edge (nothing outside the box
    may). Cached: a clip's boxes keep their size."""
    width = max(float(width), 1.0)
    ry = np.minimum(np.arange(h), np.arange(h)[::-1]).astype(np.float32) / width
    rx = np.minimum(np.arange(w), np.arange(w)[::-1]).astype(np.float32) / width
    taper = np.minimum.outer(np.minimum(ry, 1.0), np.minimum(rx, 1.0))
    taper.setflags(write=False)
    return taper
