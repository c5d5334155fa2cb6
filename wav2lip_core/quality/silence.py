"""Which output frames are lip-synced and which keep the source mouth (--silence hold).

The original drives every frame from its audio window, so in a pause the model still invents a
mouth (usually a slack, slightly moving one). Here a frame whose 0.2 s window is silent, relative
to the track's own speech level, keeps the source face; the model does not run for it. Between
held and synced stretches a few frames fade (the prediction blended with the source by a weight).

Levels are RMS over the same 50 ms frames and 12.5 ms hop as the mel spectrogram's columns
(librosa.feature.rms(frame_length=800, hop_length=200, center=True), zero-padded), so column c's
level describes what mel column c heard.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..media import audio as audio_mod

# A column quieter than this (dB re full scale) is silence whatever the track: digital zeros,
# dither, a muted stretch. A track with no column above it has no speech at all.
FLOOR_DB = -60.0
# The track's speech level: this percentile of the levels of its columns above FLOOR_DB (a
# speech track is mostly speech; pauses and quiet consonants fall below it).
SPEECH_PERCENTILE = 90.0
# A frame is silent when no column of its window comes within this of the speech level. Pauses
# in the shared real recordings sit 22-50 dB below it (room noise, breaths); quiet consonants
# inside words 10-20 dB (and a 0.2 s window always holds louder columns beside them).
SILENT_BELOW_DB = 20.0
# Seconds kept synced around speech beyond what the 0.2 s window already covers (it looks 0.2 s
# ahead, so onsets are anticipated): word ends and trailing consonants are not cut.
HANGOVER_BEFORE_S = 0.0
HANGOVER_AFTER_S = 0.08
# The fade between synced and held, inside the held stretch (~3 frames at 25 fps).
FADE_S = 0.12
# Pauses shorter than this stay synced: a brief hold between two words would flicker (the fades
# alone take 2 * FADE_S) and save almost no model calls.
MIN_HOLD_S = 0.4


@dataclass
class SilenceWeights:
    """Per output frame, how much of the model's mouth is shown: 1 synced, 0 held (no forward)."""

    weights: np.ndarray  # float32 (n_out,)
    speech_db: float | None  # the track's speech level (dBFS); None when it has no speech

    @property
    def held(self) -> int:
        return int(np.count_nonzero(self.weights == 0))

    @property
    def has_speech(self) -> bool:
        return self.speech_db is not None


def column_levels_db(seg: np.ndarray) -> np.ndarray:
    """RMS level (dBFS) per mel column of the 16 kHz samples `seg`: one value per column of
    audio.melspectrogram(seg), each over the 50 ms centred on that column."""
    n, hop, block = audio_mod.N_FFT, audio_mod.HOP, audio_mod.BLOCK_FRAMES
    x = np.pad(np.asarray(seg, np.float32), n // 2)
    frames = np.lib.stride_tricks.sliding_window_view(x, n)[::hop]
    power = np.empty(len(frames), np.float64)
    for first in range(0, len(frames), block):  # the float64 products a block at a time, as the mel
        rows = frames[first: first + block]
        power[first: first + len(rows)] = np.einsum("ij,ij->i", rows, rows, dtype=np.float64) / n
    return (10.0 * np.log10(np.maximum(power, 1e-20))).astype(np.float32)


def frame_weights(seg: np.ndarray, mel_starts: list[int], mel_fracs: list[float] | None,
                  fps: float) -> SilenceWeights:
    """Weights for output frames whose mel windows start at columns `mel_starts` (plus
    `mel_fracs`, where a fractional sync offset reaches into the next column) at `fps`."""
    levels = column_levels_db(seg)
    loud = levels[levels > FLOOR_DB]
    n_out = len(mel_starts)
    if loud.size == 0:
        return SilenceWeights(np.zeros(n_out, np.float32), None)
    speech_db = float(np.percentile(loud, SPEECH_PERCENTILE))
    threshold = max(speech_db - SILENT_BELOW_DB, FLOOR_DB)
    # Frame level: the loudest column its window reaches (a fractional start reaches one more).
    # A running maximum over MEL_STEP + 1 columns, then per frame the one that applies.
    step = audio_mod.MEL_STEP
    padded = np.concatenate([levels, np.full(step + 1, -np.inf, np.float32)])
    win = np.lib.stride_tricks.sliding_window_view(padded, step)
    starts = np.minimum(np.asarray(mel_starts, np.int64), len(levels) - 1)
    level = win[starts].max(axis=1)
    if mel_fracs is not None:
        reach = np.asarray(mel_fracs) > 0
        level = np.where(reach, np.maximum(level, padded[np.minimum(starts + step, len(padded) - 1)]), level)
    voiced = level >= threshold
    return SilenceWeights(_weights(voiced, fps), speech_db)


def _weights(voiced: np.ndarray, fps: float) -> np.ndarray:
    """Dilate `voiced` by the hangover, keep short pauses synced, fade into and out of holds."""
    n = len(voiced)
    before, after = (int(round(s * fps)) for s in (HANGOVER_BEFORE_S, HANGOVER_AFTER_S))
    synced = voiced.copy()
    for k in np.flatnonzero(voiced):
        synced[max(k - before, 0): k + after + 1] = True
    fade = max(1, int(round(FADE_S * fps)))
    min_hold = max(int(round(MIN_HOLD_S * fps)), 2 * fade + 1)
    w = np.ones(n, np.float32)
    k = 0
    while k < n:
        if synced[k]:
            k += 1
            continue
        end = k
        while end < n and not synced[end]:
            end += 1
        # A pause touching the clip's start or end fades only on its speech side.
        at_start, at_end = k == 0, end == n
        if at_start and at_end or end - k >= min_hold or (at_start or at_end) and end - k > fade:
            run = np.zeros(end - k, np.float32)
            ramp = 1.0 - np.arange(1, fade + 1, dtype=np.float32) / (fade + 1)  # e.g. .75 .5 .25
            m = min(fade, len(run))
            if not at_start:
                run[:m] = np.maximum(run[:m], ramp[:m])
            if not at_end:
                run[len(run) - m:] = np.maximum(run[len(run) - m:], ramp[:m][::-1])
            w[k:end] = run
        k = end
    return w
