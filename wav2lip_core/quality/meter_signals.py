"""The two signals the sync meter compares: how open the mouth is at each frame, and how loud
the voice is at any time.

Mouth, with the landmarks extra: dlib's inner-lip opening (mean gap between the three upper and
three lower inner-lip points) divided by the mouth width (corner to corner), so it does not
change with the face's size or distance. The predictor starts from the face track's box and runs
once per frame (`Predictor.raw`, ~1.5-3 ms); the tracker has already said there is a face there.

Mouth, without landmarks: the lower half of the face box, scaled to MOTION_SIZE grey pixels, and
the vertical optical flow between consecutive frames (OpenCV's Farneback): the bottom rows (jaw,
lower lip) minus the top rows (upper lip, nose) is how fast the mouth opens; summed over time and
with its slow drift removed it follows the opening. Head nods and talking hands leak into it, so
its confidence is lower (see docs/meter.md).

Sound: the voice band (300-3000 Hz, an FFT mask) of the 16 kHz mono samples, its power over 40 ms
windows every 5 ms, in natural log, floored FLOOR_NEPERS below its loudest so that silence reads
as one flat level and not as noise in the log. `SoundEnvelope.at(times)` samples it anywhere,
between its steps linearly, so lags below one frame cost nothing extra.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from ..errors import Cancelled
from ..faces import landmarks
from ..faces.detectors import DetectorSettings
from ..faces.tracking import track_faces
from ..media.audio import SAMPLE_RATE
from ..media.decode import read_frames
from ..media.probe import VideoInfo

# Sound envelope: step and window (seconds), the voice band (Hz), and the floor: 11.5 nepers of
# power is 50 dB, quieter than room noise in any recording the meter is meant for.
ENV_STEP = 0.005
ENV_WINDOW = 0.040
BAND = (300.0, 3000.0)
FLOOR_NEPERS = 11.5
# Landmark-free signal: the crop's size (width, height) and the high-pass that removes the
# drift of the summed flow (seconds).
MOTION_SIZE = (48, 32)
MOTION_DRIFT_S = 1.0

METHOD_LANDMARKS = "landmarks"
METHOD_MOTION = "motion"


@dataclass(frozen=True)
class SoundEnvelope:
    """Log voice-band power sampled every `step` seconds from time `start` (file seconds)."""

    values: np.ndarray
    step: float
    start: float = 0.0

    def at(self, times: np.ndarray) -> np.ndarray:
        """The envelope at these times (seconds); NaN outside the sound it was made from."""
        pos = (np.asarray(times, np.float64) - self.start) / self.step
        return np.interp(pos, np.arange(len(self.values)), self.values, left=np.nan, right=np.nan)

    @property
    def end(self) -> float:
        return self.start + (len(self.values) - 1) * self.step


@dataclass(frozen=True)
class MouthSignal:
    """One value per frame (NaN where no face was found) at `times` (file seconds)."""

    values: np.ndarray
    times: np.ndarray
    fps: float
    method: str  # METHOD_LANDMARKS or METHOD_MOTION
    shot_starts: tuple[int, ...] = (0,)  # indices into values where a shot begins


def sound_envelope(wav: np.ndarray, start: float = 0.0, rate: int = SAMPLE_RATE) -> SoundEnvelope:
    """The envelope of mono samples `wav` whose first sample is heard at file time `start`."""
    x = np.asarray(wav, np.float64)
    if x.size == 0:
        return SoundEnvelope(np.zeros(0), ENV_STEP, start)
    spec = np.fft.rfft(x)
    freqs = np.fft.rfftfreq(x.size, 1.0 / rate)
    spec[(freqs < BAND[0]) | (freqs > BAND[1])] = 0
    voice = np.fft.irfft(spec, x.size)
    n = max(1, int(round(ENV_WINDOW * rate)))
    hop = max(1, int(round(ENV_STEP * rate)))
    csum = np.concatenate([[0.0], np.cumsum(voice * voice)])
    centres = np.arange(0, x.size, hop)
    lo = np.clip(centres - n // 2, 0, x.size)
    hi = np.clip(centres + n - n // 2, 0, x.size)
    power = (csum[hi] - csum[lo]) / np.maximum(hi - lo, 1)
    log = np.log(power + 1e-12)
    log = np.maximum(log, log.max() - FLOOR_NEPERS)
    return SoundEnvelope(log, hop / rate, start)


def lip_opening(pts: np.ndarray) -> float:
    """Inner-lip gap over mouth width from dlib's 68 points (iBUG layout)."""
    gap = pts[[65, 66, 67], 1].mean() - pts[[61, 62, 63], 1].mean()
    width = float(np.hypot(*(pts[54] - pts[48])))
    return float(gap / width) if width > 1e-6 else float("nan")


def _lower_half(bgr: np.ndarray, box) -> np.ndarray:
    y1, y2, x1, x2 = (int(v) for v in box)
    crop = bgr[(y1 + y2) // 2: y2, x1:x2]
    grey = cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY)
    return cv2.resize(grey, MOTION_SIZE, interpolation=cv2.INTER_AREA)


def opening_speed(prev: np.ndarray, cur: np.ndarray) -> float:
    """How fast the lower face opens between two MOTION_SIZE crops (pixels per frame, + opening):
    vertical flow of the bottom third minus that of the top third."""
    flow = cv2.calcOpticalFlowFarneback(prev, cur, None, 0.5, 2, 9, 3, 5, 1.1, 0)
    v = flow[..., 1]
    third = v.shape[0] // 3
    return float(v[-third:].mean() - v[:third].mean())


def _high_pass(values: np.ndarray, width: int) -> np.ndarray:
    """values minus their centred moving average over `width` samples (edges: shorter windows)."""
    # Never wider than the run: np.convolve's "same" output takes the longer of its two inputs.
    width = max(1, min(int(width), len(values)))
    kernel = np.ones(width)
    sums = np.convolve(values, kernel, mode="same")
    counts = np.convolve(np.ones_like(values), kernel, mode="same")
    return values - sums / counts


def mouth_signal(info: VideoInfo, first: int, last: int, settings: DetectorSettings, *, use_landmarks: bool,
                 progress: Callable[[int, int], None] | None = None,
                 cancel: Callable[[], bool] | None = None) -> MouthSignal:
    """The mouth signal of frames first..last-1 of the clip `info` describes. Frames are decoded
    twice (once for the face track, once for the mouth) rather than held: decoding is a few ms a
    frame, holding a minute of 1080p is gigabytes."""
    n = last - first
    track = track_faces(((i - first, f) for i, f in read_frames(info, range(first, last))), n, settings,
                        cancel=cancel, source=info.path,
                        progress=(lambda d, t: progress(d, 2 * t)) if progress else None)
    predictor = landmarks.load_predictor() if use_landmarks else None
    values = np.full(n, np.nan)
    starts = [0, *track.shot_starts]  # the tracker's shot cuts (faces/cuts.py)
    new_shot = set(starts)
    prev_crop = None
    for k, (i, bgr) in enumerate(read_frames(info, range(first, last))):
        if cancel is not None and cancel():
            raise Cancelled("sync measure cancelled")
        if k in new_shot:
            prev_crop = None
        if not track.has_face[k]:
            prev_crop = None
            continue
        box = tuple(int(v) for v in track.boxes[k])
        if predictor is not None:
            values[k] = lip_opening(predictor.raw(cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY), box))
        else:
            crop = _lower_half(bgr, box)
            values[k] = 0.0 if prev_crop is None else opening_speed(prev_crop, crop)
            prev_crop = crop
        if progress is not None and k % 10 == 9:
            progress(n + k + 1, 2 * n)
    if predictor is None:
        values = integrate(values, starts, info.fps)
    times = np.asarray(info.frame_times[first:last], np.float64)
    return MouthSignal(values, times, info.fps, METHOD_LANDMARKS if use_landmarks else METHOD_MOTION, tuple(starts))


def integrate(speed: np.ndarray, starts: list[int], fps: float) -> np.ndarray:
    """Opening speeds -> an opening-like signal: summed within each face run of each shot, drift
    removed with a MOTION_DRIFT_S high-pass."""
    out = np.full(speed.shape, np.nan)
    bounds = sorted(set(starts) | {len(speed)})
    for a, b in zip(bounds[:-1], bounds[1:]):
        seg = speed[a:b]
        ok = ~np.isnan(seg)
        if ok.sum() < 2:
            continue
        run = np.cumsum(np.where(ok, seg, 0.0))
        run = _high_pass(run, round(MOTION_DRIFT_S * fps))
        out[a:b] = np.where(ok, run, np.nan)
    return out
