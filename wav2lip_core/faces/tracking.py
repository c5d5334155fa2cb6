"""Face detection stage: one face box per frame, padded and smoothed as Wav2Lip expects.

The original `inference.py` runs S3FD on every full-resolution frame, takes the first detection,
pads it, smooths with a forward (lagging) mean over 5 boxes and aborts on any frame without a face.
Here instead:

* detection runs on a copy downscaled to `max_side` and only on keyframes; boxes in between are
  interpolated when the two keyframe boxes agree, otherwise the span is bisected (the middle frame
  is detected and each half is handled the same way), so fast motion, faces appearing/vanishing
  and shot cuts are located to the exact frame;
* shot cuts (cuts.py) force keyframes on both sides, so a span is never interpolated across one,
  and each shot starts its tracks afresh; a jump in the picture that is no cut (a flash, one
  foreign frame) forces keyframes too, but the tracks go on;
* frames without a face get `has_face` False (the pipeline passes them through unchanged);
* each track follows one person (targets.py: the chosen face, by identity when the identity
  extra is installed, else by position; or the largest face of each shot); several targets
  share one detection per frame (`track_targets`);
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

"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import cv2
import numpy as np

from .cuts import ShotCuts
from .detectors import Detector, DetectorSettings, make_detector
from .targets import FrameFaces, Target, TargetTracker, choose_face, iou  # noqa: F401 (tracking's API)
from ..errors import Cancelled, DetectorError

SMOOTH_WINDOW = 5
# Longer side of the copies identity embeds faces from: a two-shot's faces are ~1/4 of the
# frame, ~150 px here, the size dlib's chips are made at (the detector's 256 px would give ~60).
ID_SIDE = 640
# A jump in the picture that is no cut (a flash, a single foreign frame) still makes keyframes on
# both sides of it, so no box is interpolated over a frame that may show no face: mean absolute
# difference (0..255) of consecutive 32x32 grey thumbnails. Talking-head motion stays <= 12.2 on
# the shared clips; a face frame against a flat or noise frame is >= 30.
JUMP_THRESHOLD = 20.0
THUMB = 32


@dataclass
class FaceTrack:
    boxes: np.ndarray  # (N, 4) int32 (y1, y2, x1, x2), full-resolution pixels, padded + smoothed
    has_face: np.ndarray  # (N,) bool
    detected_frames: int  # frames the detector ran on (0 for box or cache hit)
    from_cache: bool = False
    shot_starts: tuple[int, ...] = ()  # frames after a cut (cuts.py)
    identity_decisions: int = 0  # keyframes where identity chose the face



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
    """One face box per frame, following settings.face_at (by position) or the largest face of
    each shot. `frames` are (index, BGR uint8 full-resolution) in source order 0..n_frames-1;
    they are read once and only downscaled copies between keyframes are kept. `source` names the
    video in errors; `detector` reuses an already built one."""
    n = int(n_frames)
    if settings.kind == "box":
        return fixed_box_track(settings.box, n, progress)
    target = Target(point=tuple(settings.face_at) if settings.face_at is not None else None)
    return track_targets(frames, n, settings, [target], progress=progress, cancel=cancel, source=source,
                         detector=detector)[0]


def track_targets(
    frames: Iterable[tuple[int, np.ndarray]],
    n_frames: int,
    settings: DetectorSettings,
    targets: list[Target],
    *,
    galleries: list[np.ndarray | None] | None = None,
    embedder=None,
    progress: Callable[[int, int], None] | None = None,
    cancel: Callable[[], bool] | None = None,
    source: str | os.PathLike | None = None,
    detector: Detector | None = None,
) -> list[FaceTrack]:
    """One FaceTrack per target from one pass over `frames` (as track_faces), each frame detected
    once. `galleries[k]`: target k's embeddings (identity.Embedder `embedder` follows it by
    identity); None: by position. A target absent from a frame has no face there."""
    n = int(n_frames)
    name = os.fspath(source) if source is not None else "the video"
    sweep = _Sweep(detector if detector is not None else make_detector(settings), settings, n, progress, cancel,
                   targets, galleries or [None] * len(targets), embedder)
    for i, bgr in frames:
        sweep.add(int(i), bgr)
    if sweep.faces is None:
        raise DetectorError(f"no frames to detect faces in {name}: check that the video decodes")
    sweep.finish()
    tracks = []
    for tracker in sweep.trackers:
        raw, has_face = sweep.detections(tracker)
        if not has_face.any() and len(targets) == 1:
            raise DetectorError(
                f"no face found in {name} ({sweep.faces.detected} frames checked with {settings.kind}): "
                "use --box TOP BOTTOM LEFT RIGHT or another --detector"
            )
        track = finished_track(raw, has_face, sweep.runs, settings, sweep.height, sweep.width, sweep.faces.detected)
        track.shot_starts = tuple(int(i) for i in np.flatnonzero(np.diff(sweep.runs)) + 1)
        track.identity_decisions = tracker.identity_used
        tracks.append(track)
    return tracks


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
    keyframe are kept), its cut status decided (cuts.ShotCuts, a few frames later), keyframes
    every `keyframe_interval` frames and on both sides of a cut, and the frames between two
    keyframes resolved for every target (TargetTracker.fill) as soon as the second is detected.
    `runs` numbers the shots (a cut starts the next)."""

    def __init__(self, detector: Detector, settings: DetectorSettings, n: int,
                 progress: Callable[[int, int], None] | None, cancel: Callable[[], bool] | None,
                 targets: list[Target], galleries: list, embedder):
        self.detector = detector
        self.settings = settings
        self.n = n
        self.progress = progress
        self.cancel = cancel
        self.targets, self.galleries, self.embedder = targets, galleries, embedder
        self.faces: FrameFaces | None = None  # made on the first frame, which gives the size
        self.trackers: list[TargetTracker] = []
        self.cuts = ShotCuts()
        self.height = self.width = 0
        self.scale = self.id_scale = 1.0
        self.runs = np.zeros(n, np.int64)
        self.seen = np.zeros(n, bool)
        self.keyframe = -1  # the last keyframe: frames up to it are resolved
        self.prev_i = -1  # the last frame added
        self.prev_decided = -1  # the last frame whose cut status is known
        self.thumbs: dict[int, np.ndarray] = {}  # frames not yet decided and the last decided one

    def add(self, i: int, bgr: np.ndarray) -> None:
        if self.cancel is not None and self.cancel():
            raise Cancelled("face detection cancelled")
        if i <= self.prev_i or i >= self.n:
            raise ValueError(f"frame index {i} out of order or beyond n_frames={self.n}")
        if self.faces is None:
            self.height, self.width = bgr.shape[:2]
            self.scale = min(1.0, self.settings.max_side / max(self.height, self.width))
            self.id_scale = min(1.0, ID_SIDE / max(self.height, self.width))
            self.faces = FrameFaces(self.detector, self.scale, self.cancel, self.embedder)
            self.trackers = [TargetTracker(self.faces, t, g) for t, g in zip(self.targets, self.galleries)]
        small = _small_rgb(bgr, self.scale, self.width, self.height)
        self.faces.small[i] = small
        if self.embedder is not None:
            self.faces.mid[i] = (_small_rgb(bgr, self.id_scale, self.width, self.height), self.id_scale)
        self.seen[i] = True
        self.prev_i = i
        grey = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY)
        self.thumbs[i] = cv2.resize(grey, (THUMB, THUMB), interpolation=cv2.INTER_AREA).astype(np.float32)
        for j, cut in self.cuts.push(i, small):
            self._decided(j, cut)

    def _decided(self, j: int, cut: bool) -> None:
        before = self.thumbs.pop(self.prev_decided, None)
        jump = before is not None and float(np.abs(self.thumbs[j] - before).mean()) > JUMP_THRESHOLD
        if cut and self.keyframe >= 0:
            self._close(self.prev_decided)
            self.runs[j:] += 1
            self._close(j, fresh=True)
        elif self.keyframe < 0:
            self._close(j, fresh=True)
        elif jump:  # same shot, but no interpolation over it
            self._close(self.prev_decided)
            self._close(j)
        elif j - self.keyframe >= self.settings.keyframe_interval:
            self._close(j)
        self.prev_decided = j

    def _close(self, b: int, fresh: bool = False) -> None:
        """Make frame `b` a keyframe (`fresh`: a shot starts there) and resolve the frames since
        the last one."""
        if b == self.keyframe:
            return
        for tr in self.trackers:
            tr.keyframe(b, fresh)
            if self.keyframe >= 0:
                tr.fill(self.keyframe, b)
        self.faces.forget_before(b)
        self.keyframe = b
        if self.progress is not None:
            self.progress(b + 1, self.n)

    def finish(self) -> None:
        """The last frame seen is a keyframe too: everything is resolved."""
        for j, cut in self.cuts.finish():
            self._decided(j, cut)
        self._close(self.prev_decided)

    def detections(self, tracker: TargetTracker) -> tuple[np.ndarray, np.ndarray]:
        """(raw boxes as float x1 y1 x2 y2 rows, has_face) of one target for the frames seen."""
        has_face = np.zeros(self.n, bool)
        raw = np.zeros((self.n, 4), np.float64)
        for i, box in tracker.det.items():
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
