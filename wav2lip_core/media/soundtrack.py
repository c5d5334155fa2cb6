"""The output's soundtrack: the sound file streamed as fltp blocks at its own sample rate (or 48
kHz where AAC cannot take it), trimmed or padded to the output's timeline, silent outside the
audible span. encode.VideoWriter encodes it as AAC alongside the video.

It reads the same file as audio.py, whose 16 kHz mono is only for the model: here the sound
keeps its rate and up to two channels, and a window from minute 25 starts at a seek (the same
samples as decoding from the start: audio.indexed_frames), not by decoding the 25 minutes
before it.
"""

from __future__ import annotations

import av
import numpy as np

from .audio import indexed_frames, mono_samples
from ..errors import AudioError, reason

__all__ = ["Soundtrack", "AAC_RATES"]

# Sample rates FFmpeg's native AAC encoder accepts; anything else is resampled to 48 kHz.
AAC_RATES = {96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350}


class Soundtrack:
    """Streams an audio file as fltp blocks at its own rate, trimmed/padded to the output
    timeline: output sample 0 is file time `start` (negative start = leading silence); outside
    `audible` (output seconds from, to), when given, it is silence."""

    def __init__(self, path: str, start: float, duration: float | None,
                 audible: tuple[float, float] | None = None):
        self.path = path
        try:
            self._container = av.open(path, "r")
        except av.error.FileNotFoundError:
            raise AudioError(f"{path}: audio file not found; check the path") from None
        except (av.error.FFmpegError, OSError) as exc:
            raise AudioError(f"{path}: not a readable audio file ({reason(exc)}); use wav, mp3, flac or a video with sound") from None
        if not self._container.streams.audio:
            self._container.close()
            raise AudioError(f"{path}: has no audio stream; give a file with sound as the audio input")
        stream = self._container.streams.audio[0]
        src_rate = stream.codec_context.sample_rate or 48000
        self.rate = src_rate if src_rate in AAC_RATES else 48000
        # Dialogue needs no surround; mono and stereo are kept, anything wider is downmixed.
        # Channels of unknown order (a multichannel wav without a channel mask) cannot be
        # downmixed by position (FFmpeg would guess one is the LFE and drop it): they are
        # averaged to mono, as load_audio does for the model, so the output carries the sound
        # the lips were synced to.
        layout = stream.codec_context.layout
        self._average = stream.codec_context.channels > 2 and all(c.name == "NONE" for c in layout.channels)
        self.layout = "mono" if stream.codec_context.channels == 1 or self._average else "stereo"
        self.channels = 1 if self.layout == "mono" else 2
        self._stream = stream
        self._resampler = av.AudioResampler(format="fltp", layout=self.layout, rate=self.rate)
        skip = round(start * self.rate)
        self._silence_left = max(-skip, 0)
        self._skip_left = max(skip, 0)
        seek = self.rate == src_rate
        self._blocks = self._decoded_blocks(self._skip_left if seek else 0)
        if seek:
            self._skip_left = 0  # the blocks start there already
        self.total = None if duration is None else max(round(duration * self.rate), 0)
        self._audible = None if audible is None else (round(audible[0] * self.rate), round(audible[1] * self.rate))
        self.produced = 0
        self._exhausted = False
        self._carry: np.ndarray | None = None

    def close(self) -> None:
        self._container.close()

    def _decoded_blocks(self, first: int):
        """Source blocks from file sample `first` on. Without a change of rate it starts at a seek
        near there (audio.indexed_frames: the same samples as decoding from the start), so a
        window from minute 25 does not decode the 25 minutes before it; `first` must be 0 with
        a rate change (rare: a rate AAC cannot take), whose filter state runs from the start."""
        pos = None  # file index of the next sample out of the resampler (one to one at one rate)
        try:
            for index, frame in indexed_frames(self._container, self._stream, first):
                if index + frame.samples <= first:
                    continue
                if pos is None:
                    pos = index
                if self._average:
                    frame = _averaged(frame)
                for out in self._resampler.resample(frame):
                    block = out.to_ndarray()
                    if pos < first:
                        cut = min(first - pos, block.shape[1])
                        block, pos = block[:, cut:], pos + cut
                    pos += block.shape[1]
                    yield block
            for out in self._resampler.resample(None):
                yield out.to_ndarray()
        except av.error.FFmpegError as exc:
            raise AudioError(f"{self.path}: the audio cannot be decoded ({reason(exc)}); re-export it as wav") from None

    def read(self, until_sample: int | None) -> np.ndarray | None:
        """Next block of samples (channels, n) ending no later than `until_sample` (None = any);
        None when the output timeline is complete."""
        limit = self.total if until_sample is None else (
            until_sample if self.total is None else min(until_sample, self.total))
        if limit is not None and self.produced >= limit:
            return None
        room = None if limit is None else limit - self.produced
        block = self._next_source_block(room)
        if block is None:
            return None
        if self._audible is not None:
            a, b = (min(max(t - self.produced, 0), block.shape[1]) for t in self._audible)
            block = block.copy()
            block[:, :a] = 0.0
            block[:, b:] = 0.0
        self.produced += block.shape[1]
        return block

    def _next_source_block(self, room: int | None) -> np.ndarray | None:
        if self._silence_left:
            n = self._silence_left if room is None else min(self._silence_left, room)
            n = min(n, 48000)
            self._silence_left -= n
            return np.zeros((self.channels, n), np.float32)
        while not self._exhausted or self._carry is not None:
            if self._carry is not None:
                block, self._carry = self._carry, None
            else:
                block = next(self._blocks, None)
                if block is None:
                    self._exhausted = True
                    break
            if self._skip_left:
                cut = min(self._skip_left, block.shape[1])
                self._skip_left -= cut
                block = block[:, cut:]
            if room is not None and block.shape[1] > room:
                # Keep what does not fit for the next call; the timeline must not lose samples.
                block, self._carry = block[:, :room], block[:, room:]
            if block.shape[1]:
                return block
        if self.total is not None:  # pad to the requested duration after the file ends
            left = self.total - self.produced if room is None else room
            if left > 0:
                return np.zeros((self.channels, min(left, 48000)), np.float32)
        return None


def _averaged(frame: av.AudioFrame) -> av.AudioFrame:
    """The mean of all channels as a mono fltp frame (swresample cannot be given channels of
    unknown order safely)."""
    mono = av.AudioFrame.from_ndarray(np.ascontiguousarray(mono_samples(frame)[None]), format="fltp", layout="mono")
    mono.sample_rate = frame.sample_rate
    return mono
