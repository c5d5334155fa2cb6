"""The sync meter inside a sync: the mouth signal of the output frames taken as the sync pass
makes them, and the sound it heard, so a finished job says how well its lips follow the sound
without decoding or detecting anything again.

`MouthRecorder.add(k, frame, box)` is called for every output frame after the generated face is
pasted (the sync pass's blend stage, in output order), with the face box the pass used: the
landmarks extra's lip opening over mouth width from the box's pixels, or without it the
vertical optical flow of the box's lower half (meter_signals, the same two signals as
`wav2lip meter`). `sound_of(samples)` is the envelope of the 16 kHz samples the output hears
(output time 0 = its first sample), computed in blocks so an hour of sound never makes one
giant FFT. `measure_recorded` runs meter.measure_loaded on the two: the whole output counts as
one shot (a job has one timing rule; where the face box jumps or vanishes the motion signal
restarts).

What a Wav2Lip output should read: the model was trained to draw the mouth that the sound
around its frame shapes, so an output in sync reads what a real clip in sync reads, the
meter's natural lead (meter.LEAD). A reading of L frames means the mouth comes L frames late;
--sync-offset -L moves it back (sync.autooffset).
"""

from __future__ import annotations

import threading

import cv2
import numpy as np

from ..faces import landmarks
from ..media.audio import SAMPLE_RATE
from ..media.picture import Picture
from . import meter
from .meter_signals import (ENV_STEP, FLOOR_NEPERS, METHOD_LANDMARKS, METHOD_MOTION, MOTION_SIZE, MouthSignal,
                            SoundEnvelope, integrate, lip_opening, opening_speed, sound_envelope)

# The envelope is computed over blocks of this many seconds, each with PAD_S more either side so
# the FFT's band mask has no edge inside what is kept.
BLOCK_S = 30.0
PAD_S = 0.5
# A box whose overlap with the previous frame's is below this is a new framing (a cut): the
# motion signal restarts there.
SAME_FRAMING_IOU = 0.5


def sound_of(samples: np.ndarray, rate: int = SAMPLE_RATE) -> SoundEnvelope:
    """The meter's envelope of mono `samples` whose first one is heard at time 0."""
    x = np.asarray(samples, np.float32)
    block, pad = int(BLOCK_S * rate), int(PAD_S * rate)
    if x.size <= block + 2 * pad:
        return sound_envelope(x, 0.0, rate)
    hop = int(round(ENV_STEP * rate))
    block -= block % hop  # blocks start on an envelope step, so their steps line up
    parts = []
    for a in range(0, x.size, block):
        lo, hi = max(0, a - pad), min(x.size, a + block + pad)
        env = sound_envelope(x[lo:hi], 0.0, rate).values
        skip = (a - lo) // hop
        parts.append(env[skip: skip + block // hop])
    values = np.concatenate(parts)
    # Each block is floored against its own loudest point; floor the whole against the loudest.
    return SoundEnvelope(np.maximum(values, values.max() - FLOOR_NEPERS), hop / rate, 0.0)


def _iou(a, b) -> float:
    (ay1, ay2, ax1, ax2), (by1, by2, bx1, bx2) = a, b
    iw = max(0, min(ax2, bx2) - max(ax1, bx1))
    ih = max(0, min(ay2, by2) - max(ay1, by1))
    inter = iw * ih
    union = (ay2 - ay1) * (ax2 - ax1) + (by2 - by1) * (bx2 - bx1) - inter
    return inter / union if union > 0 else 0.0


class MouthRecorder:
    """One mouth value per output frame, filled in as frames are finished (k in output order;
    called from one thread at a time, the sync pass's blend stage)."""

    def __init__(self, times, fps: float, use_landmarks: bool | None = None):
        self.times = np.asarray(times, np.float64)
        self.fps = float(fps)
        if use_landmarks is None:
            use_landmarks = landmarks.available()
        self._predictor = landmarks.load_predictor() if use_landmarks else None
        self.method = METHOD_LANDMARKS if use_landmarks else METHOD_MOTION
        self.values = np.full(len(self.times), np.nan)
        self._starts = [0]  # where the motion signal restarts
        self._prev: tuple[int, tuple, np.ndarray] | None = None  # (k, box, crop) of the last face
        self._lock = threading.Lock()

    def add(self, k: int, frame, box: tuple[int, int, int, int] | None) -> None:
        """Record output frame k (a BGR array or a Picture, the face already pasted) whose face
        is in `box` (y1, y2, x1, x2), or None where the pass found no face."""
        with self._lock:
            if box is None:
                self._prev = None
                return
            y1, y2, x1, x2 = (int(v) for v in box)
            if self._predictor is not None:
                region = _region(frame, y1, y2, x1, x2)
                grey = cv2.cvtColor(region, cv2.COLOR_BGR2GRAY)
                self.values[k] = lip_opening(self._predictor.raw(grey, (0, y2 - y1, 0, x2 - x1)))
                return
            mid = (y1 + y2) // 2
            crop = cv2.resize(cv2.cvtColor(_region(frame, mid, y2, x1, x2), cv2.COLOR_BGR2GRAY), MOTION_SIZE,
                              interpolation=cv2.INTER_AREA)
            prev = self._prev
            if prev is None or prev[0] != k - 1 or _iou(prev[1], (y1, y2, x1, x2)) < SAME_FRAMING_IOU:
                self.values[k] = 0.0
                if k:
                    self._starts.append(k)
            else:
                self.values[k] = opening_speed(prev[2], crop)
            self._prev = (k, (y1, y2, x1, x2), crop)

    def signal(self, first: int = 0, last: int | None = None) -> MouthSignal:
        """The recorded frames [first, last) as a MouthSignal (one shot)."""
        last = len(self.values) if last is None else last
        values = self.values[first:last].copy()
        if self._predictor is None:
            starts = sorted({0} | {s - first for s in self._starts if first < s < last})
            values = integrate(values, starts, self.fps)
        return MouthSignal(values, self.times[first:last], self.fps, self.method, (0,))


def _region(frame, y1: int, y2: int, x1: int, x2: int) -> np.ndarray:
    return frame.region_bgr(y1, y2, x1, x2) if isinstance(frame, Picture) else frame[y1:y2, x1:x2]


def measure_recorded(recorder: MouthRecorder, sound: SoundEnvelope, first: int = 0,
                     last: int | None = None) -> meter.SyncMeasure:
    """The meter's answer for output frames [first, last) against the sound the output hears."""
    return meter.measure_loaded(recorder.signal(first, last), sound)
