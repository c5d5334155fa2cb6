"""What the output shows, decided before any frame is decoded: per output frame, the source
frame, its presentation time and its 16-column mel window (the original Wav2Lip's rule for a
fixed rate; a variable-frame-rate clip keeps its own frame times; --source-times follows an
editor's clip-by-time rule), and the audio segment heard.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from . import audio as audio_mod
from .errors import Wav2LipError
from .probe import VideoInfo

if TYPE_CHECKING:
    from .pipeline import LipSyncRequest


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



def _audio_segment(wav: np.ndarray, start_s: float, duration: float | None,
                   audible: tuple[float, float] | None = None) -> tuple[np.ndarray, float]:
    """The 16 kHz samples heard during the output: starting at `start_s` in the file (zeros
    before the file starts), `duration` long (zeros after it ends), zeros outside `audible`."""
    sr = audio_mod.SAMPLE_RATE
    first = int(round(start_s * sr))
    if duration is None:
        duration = (len(wav) - first) / sr
        if duration <= 0:
            raise Wav2LipError(f"--audio-start {start_s:.3f} s is past the end of the audio ({len(wav) / sr:.3f} s)")
    n = int(round(duration * sr))
    seg = np.zeros(n, np.float32)
    lo, hi = max(first, 0), min(first + n, len(wav))
    if hi > lo:
        seg[lo - first: hi - first] = wav[lo:hi]
    if audible is not None:
        a, b = (min(max(int(round(t * sr)), 0), n) for t in audible)
        seg[:a] = 0.0
        seg[b:] = 0.0
    return seg, duration


def _ping_pong(k: int, n: int) -> int:
    """Source offset for output frame k when a clip of n frames plays forward then backward."""
    if n == 1:
        return 0
    k %= 2 * n - 2
    return k if k < n else 2 * n - 2 - k


# Clip times come from another program's arithmetic (an editor's frame -> seconds); a frame that
# starts within a millisecond after the asked time counts as already on screen.
_TIME_TOLERANCE = 1e-3


def frame_at(info: VideoInfo, t: float) -> int:
    """The clip frame on screen at `t` seconds from the first frame: the last one that started
    by then; the first before the start, the last (held) after the end."""
    i = bisect.bisect_right(info.frame_times, t + _TIME_TOLERANCE) - 1
    return min(max(i, 0), info.frame_count - 1)


def make_plan(req: LipSyncRequest, info: VideoInfo, wav: np.ndarray) -> Plan:
    seg, duration = _audio_segment(wav, req.audio_start, req.duration, req.audible)
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
        chunk_starts = audio_mod.mel_chunk_starts(mel.shape[1], fps)
        mel_starts = [chunk_starts[min(k, len(chunk_starts) - 1)] for k in range(n_out)]
        last = len(req.source_times) - 1
        sources = [frame_at(info, req.source_times[min(k, last)]) for k in range(n_out)]
        start, used = min(sources), max(sources) - min(sources) + 1
    elif not follow_source_times:
        n_out = max(1, math.ceil(duration * fps - 1e-6))
        times = [k / fps for k in range(n_out)]
        chunk_starts = audio_mod.mel_chunk_starts(mel.shape[1], fps)
        mel_starts = [chunk_starts[min(k, len(chunk_starts) - 1)] for k in range(n_out)]
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
        mel_starts = [audio_mod.mel_window_start(t, mel.shape[1]) for t in times]
    return Plan(info=info, start=start, used=used, fps=fps, duration=duration, sources=sources,
                times=times, mel_starts=mel_starts, mel=mel)
