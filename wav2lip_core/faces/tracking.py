"""Face detection stage: one face box per frame, padded and smoothed as Wav2Lip expects.

The original `inference.py` runs S3FD on every full-resolution frame, takes the first detection,
pads it, smooths with a forward (lagging) mean over 5 boxes and aborts on any frame without a face.
Here instead:

* detection runs on a copy downscaled to `max_side` and only on keyframes; boxes in between are
  interpolated when the two keyframe boxes agree, otherwise the span is bisected (the middle frame
  is detected and each half is handled the same way), so fast motion, faces appearing/vanishing
  and shot cuts are located to the exact frame;
* a cheap whole-frame difference on every frame forces keyframes on both sides of a cut, so a
  span is never interpolated across one (a single flat or foreign frame between two face frames
  would otherwise get an interpolated face);
* frames without a face get `has_face` False (the pipeline passes them through unchanged);
* with several faces the track follows one: the largest at the start, afterwards the detection
  overlapping (else nearest to) the last tracked box;
* smoothing is centred (i-2..i+2), over face frames only, never across a cut.

Measurements (2-core CPU shared with other jobs, so times are best-of-N; torch 2.13, 2 threads;
clips: vretalk_face2 844x844 125 f, vretalk_face1 700x700 135 f, sadtalker 512x512 200 f,
liveportrait 720x1280 352 f):

  detector ms/frame    full res      max_side 384   256     192     128
  blazeface (front)    14-29         (noisy)        13      ~15     ~14    (runs at 128 internally)
  blazeface-back       36 (portr.)   41-50          27      35      34     (runs at 256 internally)
  s3fd network only    9000-10900    1000-1600      575-700 310     135    (random init: no S3FD
                                                                           weights here, so time only)

  Box agreement, downscaled vs full-res input, every frame, front model (IoU mean / min over all
  frames of all 4 clips): 128: 1.000/1.000 (the model sees 128 px either way), 192: 0.99/0.97,
  256: 0.997/0.982, 384: 0.998/0.985. So max_side=256: no loss for BlazeFace (back model input is
  256), and S3FD becomes ~16x cheaper than at 844 px (faces under ~40 px at 256 may be missed by
  S3FD; raise max_side for small faces).

  Keyframes, default settings (pads + centred smoothing), vs the same with keyframe_interval=1
  (IoU mean / min over frames, worst corner deviation in full-res px, frames detected):
    k=3: 0.988-0.995 / 0.955-0.981, <= 6 px, 34 %
    k=5: 0.980-0.991 / 0.936-0.963, <= 7 px, 21 %      <- default
    k=8: 0.964-0.985 / 0.868-0.932, <= 15 px, 13 %
  (front model, 4 clips; back model on vretalk_face2/sadtalker: k=5 0.982-0.985 / 0.941-0.949.)
  No frame changed has_face on any clip. Every-frame BlazeFace itself jitters by a few px, so part
  of the "error" is jitter the interpolation removes. At ~14 ms/frame for BlazeFace, k=5 cuts
  detection from ~14 to ~3 ms/frame, below decoding (5-8 ms/frame); with S3FD at 256 px it is
  ~600 -> ~130 ms/frame.

  Cut detection: consecutive 32x32 thumbnails differ by at most 12.2 (mean abs, 0..255) over the
  four clips (sadtalker's head turns; others <= 1.2); a face frame vs a flat grey or blurred-noise
  frame differs by >= 30. CUT_THRESHOLD = 20 sits between.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import cv2
import numpy as np

from .detectors import Detector, DetectorSettings, make_detector
from ..errors import Cancelled, DetectorError

SMOOTH_WINDOW = 5
# Keyframe boxes whose centres moved less than this fraction of the box size (and whose sizes
# differ by less than it) are interpolated; otherwise the span between them is bisected.
MOVE_FRAC = 0.08
# Mean absolute difference (0..255) between consecutive 32x32 grey thumbnails above which the
# frames are treated as a cut. Talking-head motion stays far below (see docstring).
CUT_THRESHOLD = 20.0
THUMB = 32


@dataclass
class FaceTrack:
    boxes: np.ndarray  # (N, 4) int32 (y1, y2, x1, x2), full-resolution pixels, padded + smoothed
    has_face: np.ndarray  # (N,) bool
    detected_frames: int  # frames the detector ran on (0 for box or cache hit)
    from_cache: bool = False



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


def _similar(a: np.ndarray, b: np.ndarray) -> bool:
    size = max(a[2] - a[0], a[3] - a[1], b[2] - b[0], b[3] - b[1], 1.0)
    dc = np.hypot((a[0] + a[2] - b[0] - b[2]) / 2, (a[1] + a[3] - b[1] - b[3]) / 2)
    ds = abs((a[2] - a[0]) - (b[2] - b[0])) + abs((a[3] - a[1]) - (b[3] - b[1]))
    return dc <= MOVE_FRAC * size and ds <= 2 * MOVE_FRAC * size


def choose_face(dets: np.ndarray, ref: np.ndarray | None, point: tuple[float, float] | None = None) -> np.ndarray | None:
    """The detection that continues the track: with no track yet, the face at `point` (the one
    containing it, else the nearest) or the largest; else the one overlapping the reference box
    most, else the one nearest to it."""
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
    c = (boxes[:, :2] + boxes[:, 2:]) / 2
    rc = (ref[:2] + ref[2:]) / 2
    return boxes[int(np.argmin(np.hypot(*(c - rc).T)))].copy()


def pad_boxes(boxes: np.ndarray, pads: tuple[int, int, int, int], height: int, width: int) -> np.ndarray:
    """The original's padding: (top, bottom, left, right) added, clipped to the frame."""
    top, bottom, left, right = pads
    out = np.asarray(boxes, np.float64).copy()
    out[:, 0] = np.maximum(0, out[:, 0] - left)
    out[:, 1] = np.maximum(0, out[:, 1] - top)
    out[:, 2] = np.minimum(width, out[:, 2] + right)
    out[:, 3] = np.minimum(height, out[:, 3] + bottom)
    return out


def smooth_boxes(boxes: np.ndarray, has_face: np.ndarray, runs: np.ndarray | None = None, window: int = SMOOTH_WINDOW) -> np.ndarray:
    """Centred mean over i-w//2..i+w//2, clipped at the ends, over frames with a face and (when
    `runs` labels shots) in the same shot, so a step stays centred on where it happens instead of
    being anticipated as in the original's forward mean."""
    boxes = np.asarray(boxes, np.float64)
    n = len(boxes)
    half = window // 2
    runs = np.zeros(n, np.int64) if runs is None else np.asarray(runs)
    out = boxes.copy()
    for i in np.flatnonzero(has_face):
        lo, hi = max(0, i - half), min(n, i + half + 1)
        sel = has_face[lo:hi] & (runs[lo:hi] == runs[i])
        out[i] = boxes[lo:hi][sel].mean(axis=0)
    return out


# ---------------------------------------------------------------------------------------------
# tracking


class _Tracker:
    def __init__(self, detector: Detector, scale: float, cancel, point: tuple[int, int] | None = None):
        self.point = point
        self.detector = detector
        self.scale = scale
        self.cancel = cancel
        self.small: dict[int, np.ndarray] = {}
        self.det: dict[int, np.ndarray | None] = {}
        self.detected = 0
        self.last: np.ndarray | None = None  # last tracked box, for choosing among faces

    def detect(self, i: int, ref: np.ndarray | None) -> np.ndarray | None:
        if i in self.det:
            return self.det[i]
        if self.cancel is not None and self.cancel():
            raise Cancelled("face detection cancelled")
        dets = np.asarray(self.detector.detect(self.small[i]), np.float64).reshape(-1, 5)
        self.detected += 1
        box = choose_face(dets[:, :4] / self.scale if len(dets) else dets, ref, self.point)
        self.det[i] = box
        return box

    def keyframe(self, i: int) -> None:
        box = self.detect(i, self.last)
        if box is not None:
            self.last = box

    def fill(self, a: int, b: int) -> None:
        """Resolve frames a+1..b-1 given detections at a and b."""
        if b - a <= 1:
            return
        A, B = self.det[a], self.det[b]
        if A is None and B is None:
            for i in range(a + 1, b):
                self.det[i] = None
            return
        if A is not None and B is not None and _similar(A, B):
            for i in range(a + 1, b):
                t = (i - a) / (b - a)
                self.det[i] = (1 - t) * A + t * B
            return
        m = (a + b) // 2
        self.detect(m, A if A is not None else B)
        self.fill(a, m)
        self.fill(m, b)


def _thumb(small_rgb: np.ndarray) -> np.ndarray:
    g = cv2.cvtColor(small_rgb, cv2.COLOR_RGB2GRAY)
    return cv2.resize(g, (THUMB, THUMB), interpolation=cv2.INTER_AREA).astype(np.float32)


def track_faces(
    frames: Iterable[tuple[int, np.ndarray]],
    n_frames: int,
    settings: DetectorSettings,
    *,
    progress: Callable[[int, int], None] | None = None,
    cancel: Callable[[], bool] | None = None,
    source: str | os.PathLike | None = None,
    detector: Detector | None = None,
) -> FaceTrack:
    """One face box per frame. `frames` are (index, BGR uint8 full-resolution) in source order
    0..n_frames-1; they are read once and only downscaled copies between keyframes are kept.
    `source` names the video in errors; `detector` reuses an already built one."""
    n = int(n_frames)
    if settings.kind == "box":
        return fixed_box_track(settings.box, n, progress)
    name = os.fspath(source) if source is not None else "the video"
    sweep = _Sweep(detector if detector is not None else make_detector(settings), settings, n, progress, cancel)
    for i, bgr in frames:
        sweep.add(int(i), bgr)
    if sweep.tracker is None:
        raise DetectorError(f"no frames to detect faces in {name}: check that the video decodes")
    sweep.finish()
    raw, has_face = sweep.detections()
    if not has_face.any():
        raise DetectorError(
            f"no face found in {name} ({sweep.tracker.detected} frames checked with {settings.kind}): "
            "use --box TOP BOTTOM LEFT RIGHT or another --detector"
        )
    return finished_track(raw, has_face, sweep.runs, settings, sweep.height, sweep.width, sweep.tracker.detected)


def fixed_box_track(box: tuple[int, int, int, int], n: int,
                    progress: Callable[[int, int], None] | None = None) -> FaceTrack:
    """The same (y1, y2, x1, x2) box on all `n` frames: --box, nothing detected."""
    y1, y2, x1, x2 = box
    boxes = np.tile(np.array([[y1, y2, x1, x2]], np.int32), (n, 1))
    if progress is not None:
        progress(n, n)
    return FaceTrack(boxes=boxes, has_face=np.ones(n, bool), detected_frames=0)


def finished_track(raw: np.ndarray, has_face: np.ndarray, runs: np.ndarray, settings: DetectorSettings,
                   height: int, width: int, detected: int) -> FaceTrack:
    """The track from the detected boxes (float x1 y1 x2 y2 rows): padded, smoothed within each
    shot (`runs`) when the settings ask for it, and turned into whole-pixel (y1, y2, x1, x2)."""
    padded = pad_boxes(raw, settings.pads, height, width)
    if settings.smooth:
        padded = smooth_boxes(padded, has_face, runs)
    return FaceTrack(boxes=_to_yyxx(padded, has_face, height, width), has_face=has_face, detected_frames=detected)


class _Sweep:
    """The one pass over the frames: each frame downscaled once (only those since the last
    keyframe are kept), keyframes every `keyframe_interval` frames and on both sides of a cut,
    and the frames between two keyframes resolved (_Tracker.fill) as soon as the second is
    detected. `runs` numbers the shots (a cut starts the next)."""

    def __init__(self, detector: Detector, settings: DetectorSettings, n: int,
                 progress: Callable[[int, int], None] | None, cancel: Callable[[], bool] | None):
        self.detector = detector
        self.settings = settings
        self.n = n
        self.progress = progress
        self.cancel = cancel
        self.tracker: _Tracker | None = None  # made on the first frame, which gives the size
        self.height = self.width = 0
        self.runs = np.zeros(n, np.int64)
        self.seen = np.zeros(n, bool)
        self.keyframe = -1  # the last keyframe: frames up to it are resolved
        self.prev_i, self.prev_thumb = -1, None

    def add(self, i: int, bgr: np.ndarray) -> None:
        if self.cancel is not None and self.cancel():
            raise Cancelled("face detection cancelled")
        if i <= self.prev_i or i >= self.n:
            raise ValueError(f"frame index {i} out of order or beyond n_frames={self.n}")
        if self.tracker is None:
            self.height, self.width = bgr.shape[:2]
            scale = min(1.0, self.settings.max_side / max(self.height, self.width))
            self.tracker = _Tracker(self.detector, scale, self.cancel, self.settings.face_at)
        small = _small_rgb(bgr, self.tracker.scale, self.width, self.height)
        thumb = _thumb(small)
        self.tracker.small[i] = small
        self.seen[i] = True
        if self._is_cut(i, thumb):
            self._close(self.prev_i)
            self.runs[i:] += 1
            self._close(i)
        elif self.keyframe < 0 or i - self.keyframe >= self.settings.keyframe_interval:
            self._close(i)
        self.prev_i, self.prev_thumb = i, thumb

    def _is_cut(self, i: int, thumb: np.ndarray) -> bool:
        """A skipped frame or a jump in the picture (CUT_THRESHOLD) since the previous frame."""
        if self.prev_thumb is None:
            return False
        return i != self.prev_i + 1 or float(np.abs(thumb - self.prev_thumb).mean()) > CUT_THRESHOLD

    def _close(self, b: int) -> None:
        """Make frame `b` a keyframe and resolve the frames since the last one."""
        if b == self.keyframe:
            return
        tr = self.tracker
        tr.keyframe(b)
        if self.keyframe >= 0:
            tr.fill(self.keyframe, b)
        for j in [j for j in tr.small if j < b]:
            del tr.small[j]
        self.keyframe = b
        if self.progress is not None:
            self.progress(b + 1, self.n)

    def finish(self) -> None:
        """The last frame seen is a keyframe too: everything is resolved."""
        self._close(self.prev_i)

    def detections(self) -> tuple[np.ndarray, np.ndarray]:
        """(raw boxes as float x1 y1 x2 y2 rows, has_face) for the frames seen."""
        has_face = np.zeros(self.n, bool)
        raw = np.zeros((self.n, 4), np.float64)
        for i, box in self.tracker.det.items():
            if box is not None and self.seen[i]:
                has_face[i] = True
                raw[i] = box
        return raw, has_face


def _small_rgb(bgr: np.ndarray, scale: float, width: int, height: int) -> np.ndarray:
    """The frame (of the clip's `width` x `height`) as RGB at `scale` (area-averaged), as the
    detectors take it."""
    small = bgr
    if scale < 1.0:
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        small = cv2.resize(bgr, size, interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(small, cv2.COLOR_BGR2RGB)


def _to_yyxx(boxes: np.ndarray, has_face: np.ndarray, height: int, width: int) -> np.ndarray:
    b = np.rint(boxes)
    x1 = np.clip(b[:, 0], 0, width - 1)
    y1 = np.clip(b[:, 1], 0, height - 1)
    x2 = np.clip(np.maximum(b[:, 2], x1 + 1), 1, width)
    y2 = np.clip(np.maximum(b[:, 3], y1 + 1), 1, height)
    out = np.stack([y1, y2, x1, x2], axis=1).astype(np.int32)
    out[~has_face] = 0
    return out
