"""What the output shows, decided before any frame is decoded: per output frame, the source
frame, its presentation time and its 16-column mel window (the original Wav2Lip's rule for a
fixed rate; a variable-frame-rate clip keeps its own frame times; --source-times follows an
editor's clip-by-time rule), shifted by --sync-offset, how much of the model's mouth it shows
(--silence hold: silence.py), and the audio segment heard.

make_plan reads only the request's timing fields (`PlanRequest`); a request.LipSyncRequest has
them, and this module never needs the whole request type.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from ..media import audio as audio_mod
from .. import protocol
from ..quality import silence
from ..quality.meter_live import sound_of
from ..quality.meter_signals import SoundEnvelope
from ..errors import Wav2LipError
from ..media.probe import VideoInfo, frame_at


class PlanRequest(Protocol):
    """The fields of a request that decide the plan (request.LipSyncRequest documents each)."""

    audio: str
    audio_start: float
    duration: float | None
    audible: tuple[float, float] | None
    fps: float | None
    start_frame: int
    frames: int | None
    source_times: tuple[float, ...] | None
    sync_offset: float
    silence: str


@dataclass
class Plan:
    """Everything decided before any frame is decoded."""

    info: VideoInfo
    start: int  # first used source frame
    used: int  # number of used source frames
    fps: float
    duration: float
    sources: list[int]  # per output frame: source frame index (absolute)
    times: list[float]  # per output frame: presentation time in seconds
    mel_starts: list[int]  # per output frame: start column of its 16-column mel window
    mel: np.ndarray
    # Per output frame, where a fractional --sync-offset puts the window between columns
    # mel_starts[k] and mel_starts[k] + 1 (None: every window starts on a column).
    mel_fracs: list[float] | None = None
    # Per output frame: 1 lip-synced, 0 the source mouth kept (no model forward), between: a
    # fade. None: every frame synced (--silence sync).
    weights: np.ndarray | None = None
    notes: list[str] = field(default_factory=list)  # lines worth telling the user
    # The sync meter's envelope of the sound the output hears (make_plan's `sound`), else None.
    sound: SoundEnvelope | None = None

    def window(self, k: int) -> np.ndarray:
        """Output frame k's (80, 16) mel window; a fractional start interpolates between columns."""
        s = self.mel_starts[k]
        a = self.mel_fracs[k] if self.mel_fracs is not None else 0.0
        if a == 0.0:
            return self.mel[:, s: s + audio_mod.MEL_STEP]
        w = self.mel[:, s: s + audio_mod.MEL_STEP + 1]
        return ((1.0 - a) * w[:, :-1] + a * w[:, 1:]).astype(np.float32)

    def weight(self, k: int) -> float:
        return 1.0 if self.weights is None else float(self.weights[k])


def _audio_segment(req: PlanRequest, wav: np.ndarray | None) -> tuple[np.ndarray, float]:
    """The 16 kHz samples heard during the output: starting at --audio-start in the file (zeros
    before the file starts), --duration long (zeros after it ends), zeros outside --audible.
    From `wav` (the whole file) when given, else decoded from the file for this window only."""
    if wav is None:
        seg, duration = audio_mod.read_segment(req.audio, req.audio_start, req.duration)
    else:
        seg, duration = audio_mod.segment(wav, req.audio_start, req.duration)
    if req.audible is not None:
        sr = audio_mod.SAMPLE_RATE
        a, b = (min(max(int(round(t * sr)), 0), seg.size) for t in req.audible)
        seg[:a] = 0.0
        seg[b:] = 0.0
    return seg, duration


def _ping_pong(k: int, n: int) -> int:
    """Source offset for output frame k when a clip of n frames plays forward then backward."""
    if n == 1:
        return 0
    k %= 2 * n - 2
    return k if k < n else 2 * n - 2 - k


def make_plan(req: PlanRequest, info: VideoInfo, wav: np.ndarray | None = None, *, sound: bool = False) -> Plan:
    """The plan for `req` on the clip `info`; `wav`: the whole sound file at 16 kHz
    (audio.load_audio), or None to decode only the window the request hears from req.audio.
    `sound`: keep the sync meter's envelope of what the output hears (plan.sound)."""
    seg, duration = _audio_segment(req, wav)
    mel = audio_mod.melspectrogram(seg)
    audio_mod.check_mel_length(mel.shape[1])

    start = min(req.start_frame, info.frame_count - 1) if not info.is_image else 0
    if req.start_frame >= info.frame_count and not info.is_image:
        raise Wav2LipError(f"--start-frame {req.start_frame} is past the end of {info.path} ({info.frame_count} frames)")
    used = info.frame_count - start if not info.is_image else 1
    if req.frames is not None and not info.is_image:
        used = min(used, req.frames)

    # A fixed rate (asked for, an image, or a constant-rate video) uses the original's window
    # rule per frame index; a variable-rate video keeps its own frame times.
    follow_source_times = req.fps is None and info.variable_frame_rate and not info.is_image
    fps = float(req.fps or info.fps)
    if req.source_times is not None and not info.is_image:
        n_out = max(1, math.ceil(duration * fps - 1e-6))
        times = [k / fps for k in range(n_out)]
        mel_starts, mel_fracs = _shifted_chunks(audio_mod.mel_chunk_starts(mel.shape[1], fps), n_out, req.sync_offset)
        last = len(req.source_times) - 1
        sources = [frame_at(info, req.source_times[min(k, last)]) for k in range(n_out)]
        start, used = min(sources), max(sources) - min(sources) + 1
    elif not follow_source_times:
        n_out = max(1, math.ceil(duration * fps - 1e-6))
        times = [k / fps for k in range(n_out)]
        mel_starts, mel_fracs = _shifted_chunks(audio_mod.mel_chunk_starts(mel.shape[1], fps), n_out, req.sync_offset)
        sources = [start + _ping_pong(k, used) for k in range(n_out)]
    else:
        ft = info.frame_times
        durations = [ft[j + 1] - ft[j] for j in range(start, start + used - 1)] + [1.0 / info.fps]
        sources, times, t, k = [], [], 0.0, 0
        while t < duration - 1e-6:
            off = _ping_pong(k, used)
            sources.append(start + off)
            times.append(t)
            t += durations[off]
            k += 1
        mel_starts, mel_fracs = _shifted_times(times, mel.shape[1], req.sync_offset * audio_mod.MEL_FPS / fps)
    plan = Plan(info=info, start=start, used=used, fps=fps, duration=duration, sources=sources,
                times=times, mel_starts=mel_starts, mel=mel, mel_fracs=mel_fracs,
                sound=sound_of(seg) if sound else None)
    if req.silence == protocol.SILENCE_HOLD:
        found = silence.frame_weights(seg, mel_starts, mel_fracs, fps)
        plan.weights = found.weights
        if not found.has_speech:
            plan.notes.append("the audio is silent throughout: every frame keeps the source mouth "
                              f"({protocol.OPT_SILENCE} {protocol.SILENCE_SYNC} lip-syncs silence too)")
    return plan


def _split(positions: list[float]) -> tuple[list[int], list[float] | None]:
    """Column positions -> (start columns, fractions into the next column; None when all whole)."""
    starts = [int(math.floor(p)) for p in positions]
    fracs = [p - s for p, s in zip(positions, starts)]
    return starts, (fracs if any(fracs) else None)


def _shifted_chunks(chunk_starts: list[int], n_out: int, offset: float) -> tuple[list[int], list[float] | None]:
    """Window starts for a fixed rate: frame k takes the original's window of frame k - offset,
    between the two neighbouring windows for a fractional offset, clamped to the first and last
    window (as the original clamps the last)."""
    last = len(chunk_starts) - 1
    if offset == 0:
        return [chunk_starts[min(k, last)] for k in range(n_out)], None
    positions = []
    for k in range(n_out):
        p = min(max(k - offset, 0.0), float(last))
        i = int(math.floor(p))
        a = p - i
        positions.append(chunk_starts[i] if a == 0 else (1 - a) * chunk_starts[i] + a * chunk_starts[i + 1])
    return _split(positions)


def _shifted_times(times: list[float], n_mel: int, shift_columns: float) -> tuple[list[int], list[float] | None]:
    """Window starts for frames shown at `times` (a variable-rate clip), moved `shift_columns`
    later in the audio for a negative offset, earlier for a positive one, clamped to the audio."""
    if shift_columns == 0:
        return [audio_mod.mel_window_start(t, n_mel) for t in times], None
    hi = float(n_mel - audio_mod.MEL_STEP)
    return _split([min(max(int(t * audio_mod.MEL_FPS) - shift_columns, 0.0), hi) for t in times])
