"""The sync meter: how many frames the mouth moves later (+) or earlier (-) than its sound.

`measure(video, audio=None, start, end)` decodes the range, follows the face, takes a mouth
signal per frame and the voice's loudness envelope (meter_signals), and `measure_signals` finds
the lag: the normalised cross-correlation of the two over LAG_RANGE frames either side of the
calibrated lead, evaluated every LAG_STEP frame by sampling the envelope at the shifted frame
times (so a shift below one frame is seen directly) and refined with a parabola through the best
step and its two neighbours.

Sign: the correlation at lag L pairs the mouth at frame time t with the sound at t - L / fps, so
a peak at L > 0 means the mouth follows its sound L frames later. The mouth opens before the
voice it shapes (LEAD frames, calibrated on a real clip: docs/meter.md), so
offset_frames = peak - LEAD. Delaying the sound by k frames moves the peak, and offset_frames,
by -k.

Confidence: a high correlation alone does not tell the speaker's own voice from another one
(speech of any speaker has the same syllable rate and pauses, and a 5 s clip leaves a peak of
0.3-0.4 to chance). So the peak is compared with what the same mouth reaches against the same
sound shifted in a circle by more than the lag window (NULL_MIN_SHIFT_S and more): those shifts
keep the sound's own statistics but break its timing with the mouth, as another speaker would.
z = (peak - mean) / std of those shifted maxima, each the best over the same lag window, so the
"best of many lags" advantage is in the reference too. confidence = z / (z + Z_HALF), 0 for a
chance peak, 0.5 at z = Z_HALF; below that the verdict is "no sync found". (On vretalk_face1,
its own sound shifted by -6..+6 frames gives z 3.1-8.0, four other speakers 2.2 at most.) The landmark-free mouth signal is scaled by MOTION_CONFIDENCE (it also moves
with the head: docs/meter.md has the figures).

Cost (bench/bench_meter.py, 2 cores under a load of ~9): 1.8-4.7 s per second of video, almost
all of it decoding twice and face tracking; the landmarks add ~2-3 ms a frame, the lag search
0.1-0.5 s per clip. Expect a third of that on an idle machine.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np

from ..errors import Wav2LipError
from ..faces import landmarks
from ..faces.detectors import DetectorSettings, resolve_detector
from ..media.audio import SAMPLE_RATE, read_segment
from ..media.probe import VideoInfo, probe_video
from .meter_signals import METHOD_LANDMARKS, METHOD_MOTION, MouthSignal, SoundEnvelope, mouth_signal, sound_envelope

LAG_RANGE = 15.0  # frames either side of the lead
LAG_STEP = 0.25
# Both signals lose their centred 0.6 s moving average first: what is left is the syllable
# rhythm. Without it the pauses dominate, and any speech with pauses where this speaker's are
# correlates (0.59 for another speaker on vretalk_face1 against 0.61 for its own sound).
HIGH_PASS_S = 0.6
# How much the mouth opening leads the voice-band loudness (frames) on a clip in sync. Not
# calibrated yet: of the shared clips only vretalk_face1 gives a confident own-sound peak
# (+1.26 frames), and a lead set from one clip cannot be checked on another (docs/meter.md).
LEAD = 0.0
# The circular shifts of the reference distribution: at least this far (seconds) from the true
# timing, every NULL_STEP_S.
NULL_MIN_SHIFT_S = 1.0
NULL_STEP_S = 0.08
MIN_NULLS = 8
# confidence = z / (z + Z_HALF) (0 for z <= 0): 0.5 at z = Z_HALF, where sync counts as found.
Z_HALF = 3.0
MIN_CONFIDENCE = 0.5
MOTION_CONFIDENCE = 0.8
# Within this many frames a result reads "in sync".
IN_SYNC_FRAMES = 0.5
# A shot shorter than this (seconds) is reported but not measured: too few syllables.
MIN_SHOT_S = 2.0
# Below this spread the mouth does not move (the opening ratio; the motion signal in pixels).
STILL = {METHOD_LANDMARKS: 0.004, METHOD_MOTION: 0.05}
# Sound context read either side of the range, for the lags (seconds).
MARGIN_S = 1.0

NO_SYNC = "no sync found"
NO_MOTION = "no mouth motion"
NO_FACE = "no face"
NO_SOUND = "no sound"
TOO_SHORT = "too short"


class MeterError(Wav2LipError):
    """The sync meter cannot measure this clip (no sound, empty range, ...)."""


@dataclass(frozen=True)
class ShotMeasure:
    start: float  # seconds (file time) of the shot's first and last frame
    end: float
    frames: int
    offset_frames: float | None
    offset_ms: float | None
    confidence: float
    verdict: str
    peak: float = 0.0  # the best correlation
    z: float = 0.0  # its distance from the shifted-sound references, in their standard deviations


@dataclass(frozen=True)
class SyncMeasure:
    offset_frames: float | None
    offset_ms: float | None
    confidence: float
    verdict: str
    method: str
    fps: float
    shots: tuple[ShotMeasure, ...] = field(default=())

    def to_json(self) -> dict:
        out = asdict(self)
        out["shots"] = [asdict(s) for s in self.shots]
        return out


def reading_text(offset_frames: float | None, verdict: str, confidence: float) -> str:
    """A reading in one phrase: "+0.30 frames (in sync, confidence 0.71)", or without an offset
    "no sync found (confidence 0.12)" (the CLI's sync line, the per-speaker notes)."""
    if offset_frames is None:
        return f"{verdict} (confidence {confidence:.2f})"
    return f"{offset_frames:+.2f} frames ({verdict}, confidence {confidence:.2f})"


def verdict_for(offset: float, confidence: float) -> str:
    if confidence < MIN_CONFIDENCE:
        return NO_SYNC
    if abs(offset) < IN_SYNC_FRAMES:
        return "in sync"
    n = abs(offset)
    return f"mouth {n:.1f} frame{'s' if round(n, 1) != 1 else ''} {'late' if offset > 0 else 'early'}"


def _ncc_rows(mouth: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Normalised cross-correlation of `mouth` (N,) with every row of `rows` (L, N), over the
    pairs where both are known."""
    ok = ~np.isnan(rows) & ~np.isnan(mouth)[None, :]
    cnt = ok.sum(1)
    m = np.where(ok, mouth[None, :], 0.0)
    s = np.where(ok, rows, 0.0)
    safe = np.maximum(cnt, 1)
    m = np.where(ok, m - (m.sum(1) / safe)[:, None], 0.0)
    s = np.where(ok, s - (s.sum(1) / safe)[:, None], 0.0)
    den = np.sqrt((m * m).sum(1) * (s * s).sum(1))
    out = np.where(den > 1e-12, (m * s).sum(1) / np.maximum(den, 1e-300), 0.0)
    return np.where(cnt >= 0.5 * len(mouth), out, np.nan)


def _high_pass_rows(x: np.ndarray, width: int) -> np.ndarray:
    """Each row minus its centred moving average over `width` samples (NaN-aware)."""
    if width <= 1:
        return x
    ok = ~np.isnan(x)
    k = np.ones(width)
    conv = lambda v: np.apply_along_axis(lambda r: np.convolve(r, k, mode="same"), -1, v)  # noqa: E731
    sums, cnt = conv(np.where(ok, x, 0.0)), conv(ok.astype(np.float64))
    return np.where(ok & (cnt > 0), x - sums / np.maximum(cnt, 1), np.nan)


def _curve(mouth, times, sound: SoundEnvelope, fps, lags, shift=0.0, span=None):
    at = times[None, :] - lags[:, None] / fps
    if span is not None:  # circular: the sound of [t0, t0 + T) shifted by `shift`, wrapped
        t0, length = span
        at = t0 + np.mod(at + shift - t0, length)
    w = int(round(HIGH_PASS_S * fps))
    return _ncc_rows(_high_pass_rows(mouth[None, :], w)[0], _high_pass_rows(sound.at(at), w))


def _best_peak(curve: np.ndarray) -> int:
    """The highest interior local maximum: a curve still rising at the window's edge has its peak
    outside the window, and that edge value is not a lag."""
    c = np.where(np.isnan(curve), -np.inf, curve)
    inner = np.flatnonzero((c[1:-1] >= c[:-2]) & (c[1:-1] >= c[2:]) & np.isfinite(c[1:-1])) + 1
    return int(inner[np.argmax(c[inner])]) if len(inner) else int(np.argmax(c))


def _refine(lags: np.ndarray, curve: np.ndarray, i: int) -> float:
    """The parabola's vertex through the best lag and its neighbours."""
    if 0 < i < len(curve) - 1 and not np.isnan(curve[i - 1:i + 2]).any():
        a, b, c = curve[i - 1], curve[i], curve[i + 1]
        den = a - 2 * b + c
        if den < 0:
            return float(lags[i] + 0.5 * (a - c) / den * (lags[1] - lags[0]))
    return float(lags[i])


def measure_signals(mouth: np.ndarray, sound: SoundEnvelope | np.ndarray, fps: float, *,
                    times: np.ndarray | None = None, method: str = METHOD_LANDMARKS,
                    lead: float = LEAD) -> ShotMeasure:
    """The lag of one shot. `mouth`: one value per frame (NaN: no face); `times`: their times in
    seconds (default k / fps); `sound`: an envelope, or one value per frame at the same times
    (then lags between frames interpolate linearly)."""
    mouth = np.asarray(mouth, np.float64)
    n = len(mouth)
    times = np.arange(n) / fps if times is None else np.asarray(times, np.float64)
    if not isinstance(sound, SoundEnvelope):
        vals = np.asarray(sound, np.float64)
        sound = SoundEnvelope(vals, 1.0 / fps, float(times[0]) if n else 0.0)
    start, end = (float(times[0]), float(times[-1])) if n else (0.0, 0.0)

    def result(verdict, offset=None, confidence=0.0, peak=0.0, z=0.0):
        ms = None if offset is None else round(offset * 1000.0 / fps, 1)
        off = None if offset is None else round(offset, 2)
        return ShotMeasure(start, end, n, off, ms, round(confidence, 3), verdict, round(peak, 3), round(z, 2))

    known = mouth[~np.isnan(mouth)]
    if known.size < 0.5 * max(n, 1):
        return result(NO_FACE)
    if n < MIN_SHOT_S * fps:
        return result(TOO_SHORT)
    if float(np.std(known)) < STILL.get(method, 0.0):
        return result(NO_MOTION)
    inside = sound.at(times)
    if np.isnan(inside).mean() > 0.5 or np.nanstd(inside) < 1e-6:
        return result(NO_SOUND)
    lags = np.arange(lead - LAG_RANGE, lead + LAG_RANGE + LAG_STEP / 2, LAG_STEP)
    curve = _curve(mouth, times, sound, fps, lags)
    if np.isnan(curve).all():
        return result(NO_SOUND)
    i = _best_peak(curve)
    peak = float(curve[i])
    offset = _refine(lags, curve, i) - lead
    span = (start, end - start + 1.0 / fps)
    coarse = lags[::max(1, int(round(1 / LAG_STEP)))]
    shifts = np.arange(NULL_MIN_SHIFT_S, span[1] - NULL_MIN_SHIFT_S + 1e-9, NULL_STEP_S)
    nulls = np.array([np.nanmax(_curve(mouth, times, sound, fps, coarse, d, span)) for d in shifts])
    nulls = nulls[~np.isnan(nulls)]
    if len(nulls) < MIN_NULLS:
        return result(TOO_SHORT, offset, 0.0, peak)
    z = (peak - float(nulls.mean())) / max(float(nulls.std()), 1e-3)
    confidence = max(z, 0.0) / (max(z, 0.0) + Z_HALF)
    if method == METHOD_MOTION:
        confidence *= MOTION_CONFIDENCE
    return result(verdict_for(round(offset, 2), confidence), offset, confidence, peak, z)


def combine(shots: list[ShotMeasure], fps: float, method: str) -> SyncMeasure:
    """One answer for the range: the frame-weighted mean of the shots that found sync; else the
    verdict of the longest shot."""
    found = [s for s in shots if s.offset_frames is not None and s.confidence >= MIN_CONFIDENCE]
    if found:
        w = np.array([s.frames for s in found], np.float64)
        off = float(np.dot(w, [s.offset_frames for s in found]) / w.sum())
        conf = float(np.dot(w, [s.confidence for s in found]) / w.sum())
        return SyncMeasure(round(off, 2), round(off * 1000.0 / fps, 1), round(conf, 3), verdict_for(off, conf),
                           method, fps, tuple(shots))
    longest = max(shots, key=lambda s: s.frames)
    return SyncMeasure(None, None, longest.confidence, longest.verdict, method, fps, tuple(shots))


def _frame_range(info: VideoInfo, start: float | None, end: float | None) -> tuple[int, int]:
    times = np.asarray(info.frame_times)
    first = 0 if start is None else int(np.searchsorted(times, start - 1e-6))
    last = len(times) if end is None else int(np.searchsorted(times, end - 1e-6))
    if last <= first:
        raise MeterError(f"{info.path}: no frames between {start or 0:.2f} s and "
                         f"{end if end is not None else info.duration:.2f} s; check --from/--to "
                         f"(the clip is {info.duration:.2f} s long)")
    return first, last


def detector_settings(kind: str = "auto", weights: str | None = None) -> DetectorSettings:
    """The face detector the meter uses: BlazeFace when its weights are found, else Haar."""
    kind, weights, _ = resolve_detector(kind, weights)
    return DetectorSettings(kind=kind, weights=weights)


def measure_mouth(video_path: str | os.PathLike, start: float | None = None, end: float | None = None, *,
                  use_landmarks: bool | None = None, detector: DetectorSettings | None = None,
                  progress: Callable[[int, int], None] | None = None,
                  cancel: Callable[[], bool] | None = None) -> tuple[VideoInfo, MouthSignal | None]:
    """The video's description and its mouth signal over [start, end) (None for a still image)."""
    info = probe_video(os.fspath(video_path))
    if info.is_image or info.frame_count < 2:
        return info, None
    first, last = _frame_range(info, start, end)
    if use_landmarks is None:
        use_landmarks = landmarks.available()
    elif use_landmarks:
        landmarks.require("the sync meter's landmark signal")
    return info, mouth_signal(info, first, last, detector or detector_settings(), use_landmarks=use_landmarks,
                              progress=progress, cancel=cancel)


def sound_for(mouth: MouthSignal, audio_path: str | os.PathLike, audio_start: float = 0.0) -> SoundEnvelope:
    """The envelope of the sound heard over the mouth's frames, MARGIN_S either side: audio file
    time `audio_start` is heard at video time 0 (0: the same clock, as the clip's own sound)."""
    t0 = float(mouth.times[0]) - MARGIN_S
    length = float(mouth.times[-1]) - float(mouth.times[0]) + 2 * MARGIN_S
    first = max(t0, 0.0)
    wav, _ = read_segment(os.fspath(audio_path), first + audio_start, length - (first - t0))
    return sound_envelope(wav, first, SAMPLE_RATE)


def measure_loaded(mouth: MouthSignal, sound: SoundEnvelope, *, lead: float = LEAD) -> SyncMeasure:
    """Measure each shot of an already computed mouth signal against a sound envelope (the tests
    shift the sound and keep the mouth)."""
    bounds = list(mouth.shot_starts) + [len(mouth.values)]
    shots = [measure_signals(mouth.values[a:b], sound, mouth.fps, times=mouth.times[a:b], method=mouth.method,
                             lead=lead) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]
    return combine(shots, mouth.fps, mouth.method)


def measure(video_path: str | os.PathLike, audio_path: str | os.PathLike | None = None,
            start: float | None = None, end: float | None = None, *, use_landmarks: bool | None = None,
            detector: DetectorSettings | None = None, progress: Callable[[int, int], None] | None = None,
            cancel: Callable[[], bool] | None = None, audio_start: float = 0.0) -> SyncMeasure:
    """How far the mouth in `video_path` lags its sound (the video's own track, or `audio_path`
    whose time `audio_start` is heard at the video's time 0) over [start, end) seconds. Raises MeterError, MediaError,
    AudioError, DetectorError with one-line messages."""
    info, mouth = measure_mouth(video_path, start, end, use_landmarks=use_landmarks, detector=detector,
                                progress=progress, cancel=cancel)
    if mouth is None:
        return SyncMeasure(None, None, 0.0, NO_MOTION, "still image", info.fps)
    return measure_loaded(mouth, sound_for(mouth, audio_path if audio_path is not None else video_path,
                                           audio_start if audio_path is not None else 0.0))
