"""Whom a track follows: the person the user chose (`Target`: a clip pixel at a clip time, or
the largest face) and, at every keyframe the sweep (tracking.py) detects, which of the frame's
faces is that person (`TargetTracker`).

Within a shot a face is followed by overlap with its last box, which is cheap and right while
one face overlaps it. Where that is not enough, identity decides (faces/identity.py, dlib's
128-d embedding, when the identity extra is installed): at the start of every shot (a cut can
swap people's sides), when no face or several faces overlap the last box (the person left, came
back, or another face crosses), and the face whose embedding is nearest the person's (under
identity.MATCH_DISTANCE) is taken; none that close: the person is absent, and those frames pass
through unchanged. Without identity, a shot starts with the face at the chosen pixel (position
only), or the largest face when nothing was chosen.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..errors import Cancelled
from .detectors import Detector

# Keyframe boxes whose centres moved less than this fraction of the box size (and whose sizes
# differ by less than it) are interpolated; otherwise the span between them is bisected.
MOVE_FRAC = 0.08
# A detection continues the track when it overlaps the last box at least this much (IoU); a
# talking head moves far less between keyframes (<= 8 % of its size, MOVE_FRAC, interpolates).
FOLLOW_IOU = 0.3
# Without identity, a face that does not overlap the last box still continues it when its centre
# is within this many box sizes (a fast move between keyframes); farther, the person is absent.
NEAR_SIZES = 1.0
# Identity: a match nearer than this fraction of identity.MATCH_DISTANCE joins the person's
# gallery (same-person medians are 0.20-0.36 against 0.46: a sure match), up to GALLERY_MAX.
GROW_FRACTION = 0.7
GALLERY_MAX = 8


@dataclass(frozen=True)
class Target:
    """The person a track follows: the face at clip pixel `point` (x, y) at clip time `time` (s),
    or, with no point, the largest face of each shot."""

    point: tuple[float, float] | None = None
    time: float = 0.0
    # With no point: the rank-th largest face at each shot start (0: the largest); --face-at
    # auto follows several such candidates and keeps, per shot, the one that speaks.
    rank: int = 0

    def key(self) -> list:
        return [list(self.point) if self.point is not None else None, round(float(self.time), 6), self.rank]


# ---------------------------------------------------------------------------------------------
# box geometry (boxes here are float rows x1, y1, x2, y2)


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU between rows of a (..., 4) and b (4,) or (..., 4), x1 y1 x2 y2."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    ix = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    iy = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    inter = ix * iy
    area = lambda r: np.clip(r[..., 2] - r[..., 0], 0, None) * np.clip(r[..., 3] - r[..., 1], 0, None)  # noqa: E731
    union = area(a) + area(b) - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-9), 0.0)


def similar(a: np.ndarray, b: np.ndarray) -> bool:
    """Two keyframe boxes close enough to interpolate between."""
    size = max(a[2] - a[0], a[3] - a[1], b[2] - b[0], b[3] - b[1], 1.0)
    dc = np.hypot((a[0] + a[2] - b[0] - b[2]) / 2, (a[1] + a[3] - b[1] - b[3]) / 2)
    ds = abs((a[2] - a[0]) - (b[2] - b[0])) + abs((a[3] - a[1]) - (b[3] - b[1]))
    return dc <= MOVE_FRAC * size and ds <= 2 * MOVE_FRAC * size


def choose_face(dets: np.ndarray, ref: np.ndarray | None, point: tuple[float, float] | None = None) -> np.ndarray | None:
    """By position only: with no reference box, the face at `point` (the one containing it, else
    the nearest) or the largest; else the one overlapping the reference box most, else the one
    nearest to it."""
    if len(dets) == 0:
        return None
    boxes = dets[:, :4]
    if ref is None and point is not None:
        x, y = point
        ref = np.array([x, y, x + 1, y + 1], np.float64)  # a one-pixel box: overlap = containment
    if ref is None:
        area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        return boxes[int(np.argmax(area))].copy()
    ov = iou(boxes, ref)
    if ov.max() > 0:
        return boxes[int(np.argmax(ov))].copy()
    return boxes[int(np.argmin(_centre_distance(boxes, ref)))].copy()


def _centre_distance(boxes: np.ndarray, ref: np.ndarray) -> np.ndarray:
    c = (boxes[:, :2] + boxes[:, 2:4]) / 2
    rc = (ref[:2] + ref[2:4]) / 2
    return np.hypot(*(c - rc).T)


# ---------------------------------------------------------------------------------------------
# the frames' faces, detected once for all targets


class FrameFaces:
    """Every face of the frames detected so far (full-resolution x1 y1 x2 y2 rows), each frame
    detected once whatever number of targets asks, and their embeddings when identity is on
    (computed only when a decision needs them)."""

    def __init__(self, detector: Detector, scale: float, cancel: Callable[[], bool] | None, embedder=None):
        self.detector = detector
        self.scale = scale
        self.cancel = cancel
        self.embedder = embedder  # identity.Embedder or None
        self.small: dict[int, np.ndarray] = {}  # the detector's copies of frames not yet resolved
        self.mid: dict[int, tuple[np.ndarray, float]] = {}  # (RGB, scale) copies for embeddings
        self.rows: dict[int, np.ndarray] = {}
        self.embeddings: dict[int, np.ndarray] = {}
        self.detected = 0
        self.embedded = 0

    def at(self, i: int) -> np.ndarray:
        if i not in self.rows:
            if self.cancel is not None and self.cancel():
                raise Cancelled("face detection cancelled")
            dets = np.asarray(self.detector.detect(self.small[i]), np.float64).reshape(-1, 5)
            self.rows[i] = dets[:, :4] / self.scale
            self.detected += 1
        return self.rows[i]

    def embedded_at(self, i: int) -> np.ndarray:
        """(K, 128) for the faces at frame i."""
        if i not in self.embeddings:
            rows = self.at(i)
            rgb, scale = self.mid[i]
            self.embeddings[i] = self.embedder.embed(rgb, rows * scale) if len(rows) else np.zeros((0, 128), np.float32)
            self.embedded += len(rows)
        return self.embeddings[i]

    def forget_before(self, i: int) -> None:
        """Frames before i are resolved: their pictures are no longer needed (rows stay: tiny)."""
        for store in (self.small, self.mid):
            for j in [j for j in store if j < i]:
                del store[j]
        for j in [j for j in self.embeddings if j < i]:
            del self.embeddings[j]


class TargetTracker:
    """One target's box per resolved frame: `det[i]` (x1 y1 x2 y2, or None: not in the frame)."""

    def __init__(self, faces: FrameFaces, target: Target, gallery: np.ndarray | None = None):
        self.faces = faces
        self.target = target
        # The person's embeddings (identity: from the face at the target's point and time); None
        # without identity or a point: position only, as chosen again at every shot start.
        self.gallery = gallery
        self.det: dict[int, np.ndarray | None] = {}
        self.last: np.ndarray | None = None  # last box, for continuity within a shot
        self.identity_used = 0  # decisions made by embedding

    @property
    def uses_identity(self) -> bool:
        return self.faces.embedder is not None and self.gallery is not None

    def detect(self, i: int, ref: np.ndarray | None, fresh: bool = False) -> np.ndarray | None:
        """The target's box at frame i, continuing `ref` (None or `fresh`: a shot starts here)."""
        if i in self.det and not fresh:
            return self.det[i]
        rows = self.faces.at(i)
        box = self._choose(i, rows, None if fresh else ref)
        self.det[i] = box
        return box

    def _choose(self, i: int, rows: np.ndarray, ref: np.ndarray | None) -> np.ndarray | None:
        if len(rows) == 0:
            return None
        if ref is not None:
            ov = iou(rows, ref)
            overlapping = np.flatnonzero(ov >= FOLLOW_IOU)
            if len(overlapping) == 1:
                return rows[int(overlapping[0])].copy()
            if not self.uses_identity:
                near = _centre_distance(rows, ref) <= NEAR_SIZES * max(ref[2] - ref[0], ref[3] - ref[1])
                return choose_face(rows[near], ref) if near.any() else None
            return self._by_identity(i, rows)
        # A shot starts (or the track does).
        if self.uses_identity:
            return self._by_identity(i, rows)
        if self.target.point is None and self.target.rank:
            area = (rows[:, 2] - rows[:, 0]) * (rows[:, 3] - rows[:, 1])
            order = np.argsort(-area, kind="stable")
            return rows[int(order[self.target.rank])].copy() if len(rows) > self.target.rank else None
        return choose_face(rows, None, self.target.point)

    def _by_identity(self, i: int, rows: np.ndarray) -> np.ndarray | None:
        from .identity import MATCH_DISTANCE, distances

        self.identity_used += 1
        embedded = self.faces.embedded_at(i)
        d = distances(self.gallery, embedded)
        k = int(np.argmin(d))
        if d[k] >= MATCH_DISTANCE:
            return None
        if d[k] < GROW_FRACTION * MATCH_DISTANCE and len(self.gallery) < GALLERY_MAX:
            # A sure match from another moment (another shot, pose or size) widens what the
            # person looks like: one picture misses ~5 % of their small faces (identity.py).
            self.gallery = np.concatenate([self.gallery, embedded[k:k + 1]])
        return rows[k].copy()

    def keyframe(self, i: int, fresh: bool = False) -> None:
        box = self.detect(i, self.last, fresh)
        self.last = box if box is not None else (None if fresh else self.last)

    def fill(self, a: int, b: int) -> None:
        """Resolve frames a+1..b-1 given this target's boxes at a and b."""
        if b - a <= 1:
            return
        A, B = self.det[a], self.det[b]
        if A is None and B is None:
            for i in range(a + 1, b):
                self.det[i] = None
            return
        if A is not None and B is not None and similar(A, B):
            for i in range(a + 1, b):
                t = (i - a) / (b - a)
                self.det[i] = (1 - t) * A + t * B
            return
        m = (a + b) // 2
        self.detect(m, A if A is not None else B)
        self.fill(a, m)
        self.fill(m, b)
