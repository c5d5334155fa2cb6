"""Which H.264 encoder writes the result, with which settings, and starting it.

`choose_encoder` turns `--encoder`/`--preset`/`--crf` into an `EncoderChoice`; `open_stream`
adds that encoder's video stream to an output container and starts it, so a failure is one
MediaError before any frame is decoded instead of an error at the first frame.

x264 preset (measured; table below): DEFAULT_PRESET
    TABLE

NVENC (`--encoder h264_nvenc`, or `auto` when the model runs on CUDA): FFmpeg lists h264_nvenc
in every PyAV wheel, with or without an NVIDIA GPU, so whether it works is found by opening a
real encoder once per process and frame size. It runs in constant-quality mode (`rc vbr`, `cq`
= --crf, which CQ mode uses without an average-bitrate cap) at preset p4 (FFmpeg's default,
NVIDIA's balanced one), tune hq. cq and crf are both on H.264's 0-51 QP scale but are different
rate controls: the same number gives similar, not equal, quality and size (unmeasured here; no
NVENC hardware was available, and data-centre GPUs such as the A100/H100 have none). --crf 0
(x264's lossless) becomes cq 1, as NVENC reads cq 0 as "no quality target". --preset names x264
presets and does not apply to NVENC (a note says so when one was given).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from fractions import Fraction

import av
import numpy as np

from . import protocol
from .colour import Colour, tag
from .errors import MediaError, Wav2LipError, reason

__all__ = ["EncoderChoice", "choose_encoder", "open_stream", "nvenc_problem", "DEFAULT_PRESET"]

X264 = protocol.ENCODER_X264
NVENC = protocol.ENCODER_NVENC
DEFAULT_PRESET = protocol.PRESET_DEFAULT
NVENC_PRESET = "p4"
PIX_FMT = "yuv420p"
CRF_RANGE = protocol.CRF_RANGE
# What the probe opens when the caller does not say which size it will encode.
PROBE_SIZE = (256, 256)


@dataclass(frozen=True)
class EncoderChoice:
    """An encoder to run: FFmpeg's name for it, the options its codec context opens with, the
    pixel format it is fed, and one line for the user (why this one, or what was ignored)."""

    codec: str
    options: dict[str, str] = field(default_factory=dict)
    pix_fmt: str = PIX_FMT
    note: str | None = None

    def describe(self) -> str:
        """Short label for logs and results, e.g. `libx264 veryfast crf 18`."""
        if self.codec == X264:
            return f"{X264} {self.options.get('preset', '')} crf {self.options.get('crf', '')}".replace("  ", " ")
        if self.codec == NVENC:
            return f"{NVENC} {self.options.get('preset', '')} cq {self.options.get('cq', '')}"
        return self.codec


def x264_options(preset: str, crf: int) -> dict[str, str]:
    return {"crf": str(int(crf)), "preset": preset}


def nvenc_options(crf: int) -> dict[str, str]:
    return {"preset": NVENC_PRESET, "tune": "hq", "rc": "vbr", "cq": str(max(int(crf), 1))}


def _even(n: int) -> int:
    return int(n) + (int(n) % 2)


@functools.lru_cache(maxsize=None)
def _nvenc_problem(width: int, height: int) -> str | None:
    try:
        ctx = av.CodecContext.create(NVENC, "w")
    except (av.error.FFmpegError, ValueError):
        return "this FFmpeg build has no h264_nvenc"
    ctx.width, ctx.height = width, height
    ctx.pix_fmt = PIX_FMT
    ctx.time_base = Fraction(1, 25)
    ctx.framerate = Fraction(25)
    ctx.options = nvenc_options(18)
    planes = np.full((height * 3 // 2, width), 128, np.uint8)
    try:
        ctx.open()
        frame = av.VideoFrame.from_ndarray(planes, format=PIX_FMT)
        frame.pts = 0
        ctx.encode(frame)
        ctx.encode(None)
    except av.error.FFmpegError as exc:
        # FFmpeg's errno here is generic (EPERM without a CUDA driver, ENOSYS for an old one);
        # what the user can act on is the list of causes.
        return (f"{getattr(exc, 'strerror', None) or reason(exc)}: no NVIDIA GPU with an NVENC unit, "
                "or its driver is missing or too old")
    return None


def nvenc_problem(size: tuple[int, int] | None = None) -> str | None:
    """None when FFmpeg's h264_nvenc opens and encodes a frame of `size` (width, height; padded
    to even like the writer does) on this machine, else why not. Probed once per process and size:
    the codec is listed whether or not a GPU with NVENC is present."""
    width, height = size or PROBE_SIZE
    return _nvenc_problem(_even(width), _even(height))


def choose_encoder(encoder: str, *, preset: str | None, crf: int, cuda: bool,
                   size: tuple[int, int] | None = None) -> EncoderChoice:
    """The encoder for `--encoder` (protocol.ENCODERS), `--preset` (protocol.PRESETS, None: the
    measured default) and `--crf`. `cuda`: the model runs on CUDA, so `auto` wants NVENC. `size`:
    the frame size to probe NVENC at (None: a small probe frame).

    NVENC that cannot start falls back to libx264 with a note, whether it was asked for or only
    wanted by auto; bad names or a crf out of range raise Wav2LipError."""
    if encoder not in protocol.names(protocol.ENCODERS):
        raise Wav2LipError(f"unknown encoder {encoder!r}: use one of {', '.join(protocol.names(protocol.ENCODERS))}")
    if preset is not None and preset not in protocol.names(protocol.PRESETS):
        raise Wav2LipError(f"unknown x264 preset {preset!r}: use one of {', '.join(protocol.names(protocol.PRESETS))}")
    if isinstance(crf, bool) or not isinstance(crf, int) or not CRF_RANGE[0] <= crf <= CRF_RANGE[1]:
        raise Wav2LipError(f"--crf {crf!r} is out of range: use {CRF_RANGE[0]} (lossless) to {CRF_RANGE[1]} "
                           "(smallest file); 18 looks the same as the source")
    x264 = x264_options(preset or DEFAULT_PRESET, crf)
    if encoder == X264 or (encoder == protocol.ENCODER_AUTO and not cuda):
        return EncoderChoice(X264, x264)
    problem = nvenc_problem(size)
    if problem is not None:
        asked = f"{protocol.OPT_ENCODER} {NVENC}" if encoder == NVENC else f"{protocol.OPT_ENCODER} auto on CUDA"
        at = f" at {_even(size[0])}x{_even(size[1])}" if size else ""
        return EncoderChoice(X264, x264, note=f"encoder: libx264, as NVENC ({asked}) cannot start here{at}: {problem}")
    note = None
    if preset is not None:
        note = (f"encoder: NVENC at its own preset {NVENC_PRESET}; {protocol.OPT_PRESET} {preset} applies to "
                f"libx264 only (add {protocol.OPT_ENCODER} {X264} to use it)")
    return EncoderChoice(NVENC, nvenc_options(crf), note=note)


def open_stream(container, choice: EncoderChoice, *, width: int, height: int, rate: Fraction,
                time_base: Fraction, colour: Colour | None = None, name: str = "") -> av.VideoStream:
    """Add `choice`'s video stream to an output `container` and start the encoder now.

    `rate` is the nominal frame rate (players, x264's rate control), `time_base` the one frame
    pts are given in, `colour` the description to tag (already `Colour.output()`), `name` the
    output file the error message names. Raises MediaError with one actionable line when the
    encoder cannot start or rejects one of the options."""
    what = f"{name}: " if name else ""
    try:
        stream = container.add_stream(choice.codec, rate=rate)
    except (av.error.FFmpegError, ValueError) as exc:
        raise MediaError(f"{what}this PyAV has no {choice.codec} encoder ({reason(exc)}); {_advice(choice)}") from None
    stream.width, stream.height = int(width), int(height)
    stream.pix_fmt = choice.pix_fmt
    stream.time_base = time_base
    ctx = stream.codec_context
    ctx.time_base = time_base
    ctx.options = dict(choice.options)
    if colour is not None:
        tag(ctx, colour)
    try:
        ctx.open()
    except av.error.FFmpegError as exc:
        raise MediaError(f"{what}cannot start the {choice.codec} encoder at {width}x{height} ({reason(exc)}); "
                         f"{_advice(choice)}") from None
    # PyAV leaves the options the encoder did not use in ctx.options: a misspelt one would
    # otherwise be silently ignored.
    if ctx.options:
        raise MediaError(f"{what}the {choice.codec} encoder does not know the option(s) "
                         f"{', '.join(sorted(ctx.options))}; {_advice(choice)}")
    return stream


def _advice(choice: EncoderChoice) -> str:
    if choice.codec == NVENC:
        return f"use {protocol.OPT_ENCODER} {X264}"
    return "reinstall PyAV from its wheels (pip install --force-reinstall av), which include libx264"
