"""`--blend mouth`: a soft mask over the mouth from the 68 landmarks (landmarks.py).

The region is the outer lip outline plus the part of the chin the jaw uncovers when the model
opens the mouth (the lower lip moved JAW_DROP of the way to the chin point), dilated and
feathered. It is 1 on the lips, 0 at the eyes, nose bridge, cheeks' outer parts and at the box
border, so the source's beard, jaw line and skin texture stay as they were (Easy-Wav2Lip masks
to the mouth the same way). Sizes follow the mouth's width, so one default fits every face size.

Built on a grid of at most GRID px (the mask is smooth, so a small grid loses nothing) and
resized to the box: ~1-1.5 ms per face for a 330 px box, ~1.4-11 ms for a 700 px (1080p
close-up) box, best of 20 on the shared, loaded 2-core CPU (bench/bench_landmarks.py).
"""

from __future__ import annotations

import cv2
import numpy as np

from .align import border_taper
from .landmarks import CHIN, OUTER_LIPS

# The lower outer lip, corner to corner (iBUG 300-W indices).
LOWER_LIP = [54, 55, 56, 57, 58, 59, 48]

# Fractions of the mouth's width (corner to corner).
DILATE = 0.25
FEATHER = 0.1  # Gaussian sigma
JAW_DROP = 0.5
GRID = 160


def mouth_width(points: np.ndarray) -> float:
    return float(np.hypot(*(points[54] - points[48])))


def mouth_mask(points: np.ndarray, box: tuple[int, int, int, int], *, dilate_px: float | None = None,
               feather_px: float | None = None) -> np.ndarray:
    """(h, w) float32 in [0, 1] over the box (y1, y2, x1, x2) from 68 landmarks in frame pixels:
    1 over the lips and the chin below them, `dilate_px` beyond that, fading over a Gaussian of
    sigma `feather_px`, 0 on the box's border. Defaults scale with the mouth's width."""
    y1, y2, x1, x2 = (int(v) for v in box)
    h, w = y2 - y1, x2 - x1
    width = max(mouth_width(points), 1.0)
    dilate = DILATE * width if dilate_px is None else float(dilate_px)
    feather = FEATHER * width if feather_px is None else float(feather_px)

    scale = min(1.0, GRID / max(h, w))
    gh, gw = max(1, round(h * scale)), max(1, round(w * scale))
    lips = points[OUTER_LIPS]
    lower = points[LOWER_LIP]
    dropped = lower + JAW_DROP * (points[CHIN] - lower)
    region = (np.vstack([lips, dropped]) - (x1, y1)) * scale
    hard = np.zeros((gh, gw), np.uint8)
    cv2.fillConvexPoly(hard, cv2.convexHull(np.round(region).astype(np.int32)), 1)
    r = int(round(dilate * scale))
    if r > 0:
        hard = cv2.dilate(hard, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1)))
    mask = hard.astype(np.float32)
    sigma = feather * scale
    if sigma > 0.3:
        mask = cv2.GaussianBlur(mask, (0, 0), sigmaX=sigma, sigmaY=sigma)
    np.clip(mask, 0.0, 1.0, out=mask)  # the blur's float sums overshoot 1 by ~1e-7
    if (gh, gw) != (h, w):
        mask = cv2.resize(mask, (w, h), interpolation=cv2.INTER_LINEAR)
    # Nothing outside the box may change, so the mask reaches 0 on its border whatever the face
    # (the same taper as the turned feather mask's, so one cached array serves both).
    return mask * border_taper(h, w, 0.04 * max(h, w))
