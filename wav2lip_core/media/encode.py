"""Streaming H.264/AAC MP4 writer with PyAV.

The result appears at `out_path` only when everything succeeded: frames go to a hidden temp
file in the same folder (same filesystem, so the final os.replace is atomic) and any failure,
cancellation or abort deletes it, leaving a previous output untouched.

Odd sizes: yuv420p needs even dimensions, so an odd width/height is PADDED by one pixel that
repeats the last column/row. Cropping would drop real picture; a replicated edge line is
invisible, and `VideoWriter.width/height` report the encoded (even) size.

Colours: frames are encoded with the source's matrix and range and tagged with its colour
description (`colour=VideoInfo.colour`; see colour.py), so every player reads the output as it
reads the source. Without one (an image, an RGB clip) the output is BT.601 limited range, tagged.
A picture.Picture holding 4:2:0 planes in that YUV is encoded from its planes as they are (no
conversion), so every sample the pipeline did not change is the source's.

Timing: video pts are in a 1/90000 time base (MPEG's tick, exact for 24/25/30/50/60 and for
NTSC 1001-based rates) taken from the times given to write(), so variable-frame-rate sources
keep their cadence; the codec frame rate (`fps`) is still recorded for players and x264's
rate control. Audio is encoded alongside the video as it is written (interleaved, streaming)
from the original file at its own sample rate (soundtrack.py reads it).

This writer does not use files.write_atomic, the core's writer of small files: a video is
streamed by an encoder for minutes and can be gigabytes, so it is never held as bytes, and
its temp file is named so that a later run and the user can tell it belongs to `out_path`
(`.NAME.partXXXX`). The rule is the same: a temp file in the folder, then one os.replace.
"""

from __future__ import annotations

import os
import secrets
import weakref
from fractions import Fraction

import av
import numpy as np

from .colour import RGB_SOURCE, Colour, from_bgr, pad_even
from .encoders import EncoderChoice, choose_encoder, open_stream
from ..errors import MediaError, reason
from .picture import Picture
from .soundtrack import Soundtrack

__all__ = ["VideoWriter", "check_output"]

VIDEO_TIME_BASE = Fraction(1, 90000)
AAC_FRAME = 1024
# Audio is encoded this far ahead of the last video frame so the muxer always has both streams
# to interleave without buffering.
AUDIO_LEAD_S = 0.5


def _same_file(a: str, b: str) -> bool:
    try:
        if os.path.exists(a) and os.path.exists(b):
            return os.path.samefile(a, b)
    except OSError:
        pass
    return os.path.normcase(os.path.realpath(a)) == os.path.normcase(os.path.realpath(b))


def _remove(path: str) -> None:
    try:
        os.remove(path)
    except OSError:
        pass


def check_output(out_path, source_paths=()) -> str:
    """The absolute output path, or MediaError when it is one of the inputs, its folder is
    missing, or it is a folder. The pipeline calls this before any slow work, too."""
    out = os.path.abspath(os.path.expanduser(os.fspath(out_path)))
    for src in source_paths:
        if src and _same_file(out, os.path.abspath(os.path.expanduser(os.fspath(src)))):
            raise MediaError(f"{out}: refusing to overwrite the input {os.fspath(src)}; choose another --out")
    folder = os.path.dirname(out)
    if not os.path.isdir(folder):
        raise MediaError(f"{folder}: output folder does not exist (or is not a folder); create it or choose another --out")
    if os.path.isdir(out):
        raise MediaError(f"{out}: is a folder; give a file name such as result.mp4 for --out")
    return out


class VideoWriter:
    """Context manager writing H.264 (libx264, yuv420p) + optional AAC to `out_path` atomically.

    On exception inside the with-block, or abort(), the temp file is deleted and out_path is not
    touched. Frames are BGR uint8 of shape (height, width, 3) as given to the constructor,
    decoded as `colour` describes (the source's, from VideoInfo.colour), or Pictures of that size.
    """

    def __init__(self, out_path, *, width: int, height: int, fps: float, audio_path=None,
                 audio_start: float = 0.0, duration: float | None = None, crf: int = 18,
                 preset: str | None = None, encoder: EncoderChoice | None = None, source_paths=(),
                 colour: Colour | None = None, audible: tuple[float, float] | None = None):
        self.out_path = check_output(out_path, source_paths)
        self.source_width, self.source_height = int(width), int(height)
        # Padding (not cropping) to even sizes: see the module docstring.
        self.width = self.source_width + (self.source_width % 2)
        self.height = self.source_height + (self.source_height % 2)
        if self.source_width <= 0 or self.source_height <= 0 or not fps or fps <= 0:
            raise ValueError(f"invalid video size/fps: {width}x{height} @ {fps}")
        self.fps = float(fps)
        self.duration = duration
        self.colour = (colour or RGB_SOURCE).output()
        # `encoder`: what encoders.choose_encoder picked for the job; without one, x264 at
        # `preset` (None: the measured default) and `crf`.
        self.encoder = encoder or choose_encoder("libx264", preset=preset, crf=crf, cuda=False)
        self._tmp_path = self._create_temp()
        self._finalizer = weakref.finalize(self, _remove, self._tmp_path)
        self._container = None
        self._audio: Soundtrack | None = None
        self._done = False
        try:
            self._open(audio_path, audio_start, duration, audible)
        except BaseException:
            self.abort()
            raise

    # -- setup ------------------------------------------------------------------------------

    def _create_temp(self) -> str:
        folder, name = os.path.split(self.out_path)
        path = os.path.join(folder, f".{name}.part{secrets.token_hex(4)}")
        try:
            # O_EXCL with mode 0o666: the umask applies, so the renamed result gets the
            # user's normal permissions (mkstemp would leave it private 0600).
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except OSError as exc:
            raise MediaError(f"{folder}: cannot write to the output folder ({reason(exc)}); "
                             "choose a writable folder for --out") from None
        return path

    def _open(self, audio_path, audio_start, duration, audible=None) -> None:
        if audio_path is not None:
            self._audio = Soundtrack(os.fspath(audio_path), float(audio_start), duration, audible)
        try:
            self._container = av.open(self._tmp_path, "w", format="mp4")
        except (av.error.FFmpegError, OSError) as exc:
            raise MediaError(f"{self.out_path}: cannot create the output file ({reason(exc)}); "
                             "choose a writable folder for --out") from None
        self._video = open_stream(self._container, self.encoder, width=self.width, height=self.height,
                                  rate=Fraction(self.fps).limit_denominator(1001000), time_base=VIDEO_TIME_BASE,
                                  colour=self.colour, name=self.out_path)
        self._last_pts: int | None = None
        self._durations: dict[int, int] = {}
        if self._audio is not None:
            audio = self._container.add_stream("aac", rate=self._audio.rate)
            audio.layout = self._audio.layout
            audio.format = "fltp"
            audio.time_base = Fraction(1, self._audio.rate)
            self._audio_stream = audio
            self._audio_pending = np.zeros((self._audio.channels, 0), np.float32)
            self._audio_pts = 0

    # -- writing ----------------------------------------------------------------------------

    def write(self, frame: np.ndarray | Picture, time: float) -> None:
        """Encode one frame (BGR array or Picture) shown at `time` seconds (strictly increasing)."""
        if self._done:
            raise RuntimeError("VideoWriter is closed")
        if isinstance(frame, Picture):
            if (frame.height, frame.width) != (self.source_height, self.source_width):
                raise ValueError(f"picture must be {self.source_width}x{self.source_height}, got {frame.width}x{frame.height}")
        elif frame.shape != (self.source_height, self.source_width, 3) or frame.dtype != np.uint8:
            raise ValueError(f"frame must be uint8 {(self.source_height, self.source_width, 3)}, got {frame.dtype} {frame.shape}")
        pts = round(time / VIDEO_TIME_BASE)
        if self._last_pts is not None and pts <= self._last_pts:
            raise ValueError(f"frame times must increase: {time:.6f}s after {float(self._last_pts * VIDEO_TIME_BASE):.6f}s")
        if self._last_pts is not None:
            self._durations[self._last_pts] = pts - self._last_pts
        self._last_pts = pts
        self._encode(self._to_frame(frame, pts))
        if self._audio is not None:
            self._pump_audio(until=time + AUDIO_LEAD_S)

    def _to_frame(self, image: np.ndarray | Picture, pts: int) -> av.VideoFrame:
        if isinstance(image, Picture):
            frame = image.video_frame(self.colour)
        else:
            frame = from_bgr(np.ascontiguousarray(pad_even(image)), self.colour)
        frame.pts = pts
        frame.time_base = VIDEO_TIME_BASE
        return frame

    def _encode(self, frame: av.VideoFrame | None) -> None:
        try:
            for packet in self._video.encode(frame):
                self._mux_video(packet)
        except av.error.FFmpegError as exc:
            raise MediaError(f"{self.out_path}: video encoding failed ({reason(exc)}); check free disk space") from None

    def _mux_video(self, packet) -> None:
        # Without explicit durations the MP4 muxer guesses the last frame's length; a known
        # duration per frame makes the stream end exactly at last time + 1/fps.
        default = round(1 / (self.fps * VIDEO_TIME_BASE))
        packet.duration = self._durations.pop(packet.pts, default)
        self._mux(packet)

    def _mux(self, packet) -> None:
        try:
            self._container.mux(packet)
        except (av.error.FFmpegError, OSError) as exc:
            raise MediaError(f"{self.out_path}: writing failed ({reason(exc)}); check free disk space") from None

    def _pump_audio(self, until: float | None) -> None:
        """Encode audio up to output time `until` (None: to the end of the timeline)."""
        limit = None if until is None else round(until * self._audio.rate)
        while True:
            block = self._audio.read(limit)
            if block is None:
                break
            self._audio_pending = np.concatenate([self._audio_pending, block], axis=1)
            while self._audio_pending.shape[1] >= AAC_FRAME:
                self._encode_audio(self._audio_pending[:, :AAC_FRAME])
                self._audio_pending = self._audio_pending[:, AAC_FRAME:]
        if until is None:
            if self._audio_pending.shape[1]:
                self._encode_audio(self._audio_pending)  # the encoder accepts a short last frame
                self._audio_pending = self._audio_pending[:, :0]
            self._encode_audio(None)

    def _encode_audio(self, samples: np.ndarray | None) -> None:
        frame = None
        if samples is not None:
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples, dtype=np.float32),
                                               format="fltp", layout=self._audio.layout)
            frame.sample_rate = self._audio.rate
            frame.pts = self._audio_pts
            frame.time_base = Fraction(1, self._audio.rate)
            self._audio_pts += samples.shape[1]
        try:
            packets = self._audio_stream.encode(frame)
        except av.error.FFmpegError as exc:
            raise MediaError(f"{self.out_path}: audio encoding failed ({reason(exc)})") from None
        for packet in packets:
            self._mux(packet)

    # -- finishing --------------------------------------------------------------------------

    def close(self) -> None:
        """Flush video, finish the audio, close the file and move it onto out_path."""
        if self._done:
            return
        try:
            if self._last_pts is None:
                raise MediaError(f"{self.out_path}: no frames were written; nothing to save")
            self._encode(None)
            if self._audio is not None:
                self._pump_audio(until=None)
            self._close_container()
            try:
                os.replace(self._tmp_path, self.out_path)
            except OSError as exc:
                raise MediaError(f"{self.out_path}: cannot replace the output ({reason(exc)}); "
                                 "close it in other programs or choose another --out") from None
        except BaseException:
            self.abort()
            raise
        self._done = True
        self._finalizer.detach()

    def abort(self) -> None:
        """Discard everything written so far; out_path is left as it was."""
        self._done = True
        try:
            self._close_container()
        except Exception:
            pass  # a half-written file is being deleted anyway
        _remove(self._tmp_path)
        self._finalizer.detach()

    def _close_container(self) -> None:
        container, self._container = self._container, None
        audio, self._audio = self._audio, None
        try:
            if container is not None:
                container.close()
        finally:
            if audio is not None:
                audio.close()

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is None:
            self.close()
        else:
            self.abort()
        return False
