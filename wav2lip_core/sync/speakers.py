"""Several people in one pass, each driven by their own audio (`--speaker X Y AUDIO[@SEC] [T [FROM
TO]]`):
the speakers as data, the output's sound (their audios mixed, or --out-audio), and each
speaker's own plan (the same frames and times as the job's, with the mel windows and --silence
weights of that speaker's audio alone, placed where it starts in the output).
"""

from __future__ import annotations

import dataclasses
import math
import os
import tempfile
import wave
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import protocol
from ..errors import AudioError, Wav2LipError
from ..media import audio as audio_mod
from ..media.probe import VideoInfo
from .plan import Plan, make_plan

# The mix is written at this rate (the encoder resamples to the output's AAC rate anyway).
MIX_RATE = 48000


@dataclass(frozen=True)
class Speaker:
    """The face at clip pixel (x, y) at clip time `time` (None: the request's --face-time),
    driven by `audio`, whose time 0 is heard `start` seconds into the output."""

    x: int
    y: int
    audio: str
    start: float = 0.0
    time: float | None = None
    # Output seconds (FROM, TO) in which this audio is heard, silence elsewhere (a trimmed sound
    # strip in Blender); None: wherever it plays.
    heard: tuple[float, float] | None = None

    @property
    def label(self) -> str:
        return f"the face at ({self.x}, {self.y}) <- {Path(self.audio).name}"


def parse_speaker(values: list[str]) -> Speaker:
    """`X Y AUDIO[@SEC] [T [FROM TO]]` as given to --speaker; Wav2LipError with one line otherwise."""
    usage = f"{protocol.OPT_SPEAKER} takes X Y AUDIO[{protocol.SPEAKER_AT}SEC] [FACE_TIME [FROM TO]]"
    if len(values) not in (3, 4, 6):
        raise Wav2LipError(f"{usage}, got {' '.join(values)!r}")
    try:
        x, y = int(values[0]), int(values[1])
    except ValueError:
        raise Wav2LipError(f"{usage}: X and Y are whole clip pixels, got {values[0]!r} {values[1]!r}") from None
    audio, at = protocol.split_speaker_audio(values[2])
    start = float(at[1:]) if at else 0.0
    time, heard = None, None
    try:
        numbers = [float(v) for v in values[3:]]
    except ValueError:
        raise Wav2LipError(f"{usage}: FACE_TIME is clip seconds and FROM TO output seconds, "
                           f"got {' '.join(values[3:])!r}") from None
    if numbers:
        time = numbers[0]
    if len(numbers) == 3:
        heard = (numbers[1], numbers[2])
    if (not all(math.isfinite(v) for v in [start, *numbers]) or x < 0 or y < 0
            or (heard is not None and not heard[0] < heard[1])):
        raise Wav2LipError(f"{usage}: give pixels >= 0, finite times and FROM < TO, got {' '.join(values)!r}")
    return Speaker(x=x, y=y, audio=audio, start=start, time=time, heard=heard)


def check_speakers(speakers: tuple[Speaker, ...]) -> None:
    for s in speakers:
        if not Path(s.audio).expanduser().is_file():
            raise AudioError(f"speaker audio file not found: {s.audio}. Check the path.")


def placed(wav: np.ndarray, start: float, rate: int, length: int,
           heard: tuple[float, float] | None = None) -> np.ndarray:
    """`wav` (at `rate`) heard from `start` seconds on, in a track of `length` samples (cut
    before 0 and after the end, and outside `heard`, output seconds FROM, TO, when given)."""
    out = np.zeros(length, np.float32)
    first = int(round(start * rate))
    lo, hi = max(first, 0), min(first + len(wav), length)
    if heard is not None:
        lo, hi = max(lo, int(round(heard[0] * rate))), min(hi, int(round(heard[1] * rate)))
    if hi > lo:
        out[lo:hi] = wav[lo - first: hi - first]
    return out


def mix(speakers: tuple[Speaker, ...], out_wav: str | os.PathLike) -> tuple[float, float]:
    """Write the speakers' audios, each placed at its start, summed, as a 16-bit mono WAV; the
    mix's length (s, to the end of the last audio) and the gain applied (below 1 when the sum
    would clip: the whole mix is turned down, never clipped)."""
    tracks = [(audio_mod.load_audio(s.audio, MIX_RATE), s) for s in speakers]
    end = max(min(s.start + len(w) / MIX_RATE, s.heard[1] if s.heard else math.inf) for w, s in tracks)
    if end <= 0:
        raise AudioError("the speakers' audios all end before the output starts: check their @SEC")
    length = int(math.ceil(end * MIX_RATE))
    total = np.zeros(length, np.float32)
    for w, s in tracks:
        total += placed(w, s.start, MIX_RATE, length, s.heard)
    peak = float(np.abs(total).max()) if length else 0.0
    gain = 0.99 / peak if peak > 0.99 else 1.0
    pcm = np.clip(np.rint(total * gain * 32767.0), -32768, 32767).astype("<i2")
    with wave.open(os.fspath(out_wav), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(MIX_RATE)
        f.writeframes(pcm.tobytes())
    return length / MIX_RATE, gain


def speaker_plan(request, info: VideoInfo, plan: Plan, speaker: Speaker) -> Plan:
    """`plan` (the job's frames and times) with this speaker's mel windows and silence weights:
    their audio alone, placed at its start on the output's timeline."""
    wav = placed(audio_mod.load_audio(speaker.audio), speaker.start, audio_mod.SAMPLE_RATE,
                 int(math.ceil(plan.duration * audio_mod.SAMPLE_RATE)) + 1, speaker.heard)
    solo = dataclasses.replace(request, audio=speaker.audio, audio_start=0.0, duration=plan.duration, audible=None)
    own = make_plan(solo, info, wav, sound=bool(request.meter))
    if own.sources != plan.sources:  # same timing fields, so the same frames: a guard, not a case
        raise Wav2LipError("internal: a speaker's plan shows other frames than the job's")
    return own


@contextmanager
def mixed_sound(request, tell: Callable[[str], None]):
    """The request whose `audio` is the output's sound: as given without speakers; with them,
    --out-audio, or the speakers' audios mixed into a temporary WAV (removed afterwards)."""
    if not request.speakers:
        yield request
        return
    if request.out_audio:
        yield dataclasses.replace(request, audio=request.out_audio)
        return
    with tempfile.TemporaryDirectory(prefix="wav2lip-mix-") as folder:
        path = os.path.join(folder, "speakers.wav")
        seconds, gain = mix(request.speakers, path)
        turned = f", turned down {20 * math.log10(gain):.1f} dB so it does not clip" if gain < 1 else ""
        tell(f"the output's sound: {len(request.speakers)} speakers' audios mixed ({seconds:.2f} s{turned})")
        yield dataclasses.replace(request, audio=path)
