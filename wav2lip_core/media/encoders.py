"""Which H.264 encoder writes the result, with which settings, and starting it.

`choose_encoder` turns `--encoder`/`--preset`/`--crf` into an `EncoderChoice`; `open_stream`
adds that encoder's video stream to an output container and starts it, so a failure is one
MediaError before any frame is decoded instead of an error at the first frame.

Default x264 preset: veryfast, from this table (bench/bench_encode.py --frames 60 --sweep 14
16 20 22; crf 18; PyAV 18.1 / FFmpeg 8.1; 2-core AVX2 CPU shared with other jobs, so CPU time,
the steadier figure under load, is shown; size and PSNR are exact). "size at medium's quality":
the size the preset needs to match medium's PSNR, interpolated along its own crf curve.

| clip | preset | CPU ms/frame | KiB/s | size vs medium, crf 18 | PSNR dB | size at medium's quality |
|---|---|---|---|---|---|---|
| 512x512 | ultrafast | 2.6 | 565 | 1.92x | 43.77 | 1.80x |
| 512x512 | superfast | 5.8 | 315 | 1.07x | 42.72 | 1.21x |
| 512x512 | veryfast | 11.1 | 273 | 0.93x | 42.33 | 1.14x |
| 512x512 | faster | 15.4 | 295 | 1.00x | 43.05 | 1.06x |
| 512x512 | fast | 22.0 | 295 | 1.00x | 43.28 | 1.01x |
| 512x512 | medium | 29.1 | 294 | 1.00x | 43.34 | 1.00x |
| 1920x1080 (512 scaled) | ultrafast | 22.7 | 2585 | 1.85x | 46.42 | |
| 1920x1080 (512 scaled) | superfast | 69.6 | 1721 | 1.23x | 47.73 | |
| 1920x1080 (512 scaled) | veryfast | 109.3 | 1312 | 0.94x | 46.81 | |
| 1920x1080 (512 scaled) | faster | 139.3 | 1414 | 1.01x | 47.54 | |
| 1920x1080 (512 scaled) | fast | 214.2 | 1447 | 1.04x | 47.78 | |
| 1920x1080 (512 scaled) | medium | 269.9 | 1394 | 1.00x | 47.84 | |
| 720x1280 | ultrafast | 9.0 | 780 | 2.84x | 49.02 | |
| 720x1280 | superfast | 14.8 | 472 | 1.72x | 49.03 | 1.68x |
| 720x1280 | veryfast | 20.0 | 234 | 0.85x | 47.63 | 1.24x |
| 720x1280 | faster | 41.2 | 264 | 0.96x | 48.66 | 1.04x |
| 720x1280 | fast | 49.6 | 281 | 1.03x | 48.90 | |
| 720x1280 | medium | 67.1 | 275 | 1.00x | 48.95 | 1.00x |

(512x512: sadtalker_WDA_KatieHill_000.mp4; 1920x1080: its frames scaled; 720x1280:
liveportrait_d13.mp4; 60 frames each; empty cells were not swept.)

Why veryfast: it is the fastest preset whose file is no larger than medium's at the same crf on
all three clips (0.85-0.94x), at 1/3 to 1/2 of medium's CPU time, with PSNR 1.0-1.3 dB under
medium's at crf 18 (all above 42 dB: no visible difference at this crf). superfast saves another
quarter to half, but its files swing with the content (1.07x medium's on the 512 clip, 1.72x on the
720x1280 one, 2x veryfast's), as it drops x264's lookahead and mbtree; ultrafast doubles or
triples the size. faster/fast/medium buy 7-19% smaller files at equal quality for 1.3-3.4x the
time. So --preset superfast (or ultrafast) is the opt-in for speed, medium or slower for size.
Threads (bench_encode.py --threading SLICE FRAME): PyAV opens encoders with slice threads. On the
2-core CPU frame and slice threads measured the same within noise; on 16 cores (an H200 machine)
1080p veryfast took 8.1 ms/frame wall with frame threads against 12.6 with slice threads, with a
3% smaller file at a slightly higher PSNR, so x264 runs with frame threads (X264_THREADING).

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

import dataclasses
import functools
from dataclasses import dataclass, field
from fractions import Fraction

import av
import numpy as np

from .. import protocol
from .colour import Colour, tag
from ..errors import MediaError, Wav2LipError, reason

__all__ = ["EncoderChoice", "choose_encoder", "open_stream", "nvenc_problem", "DEFAULT_PRESET"]

X264 = protocol.ENCODER_X264
NVENC = protocol.ENCODER_NVENC
DEFAULT_PRESET = protocol.PRESET_DEFAULT
NVENC_PRESET = "p4"
PIX_FMT = "yuv420p"
CRF_RANGE = protocol.CRF_RANGE
# x264's threads: frame threads encode several frames at once (slice threads, PyAV's default,
# cut each frame into one slice per thread); measured in the module docstring.
X264_THREADING = "FRAME"
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
    # FFmpeg's thread_type for the codec context (None: PyAV's default, slice threads).
    threading: str | None = None

    def describe(self) -> str:
        """Short label for logs and results: `libx264 veryfast crf 18`, `h264_nvenc p4 cq 18`."""
        words = [self.codec, self.options.get("preset")]
        words += [f"{k} {self.options[k]}" for k in ("crf", "cq") if k in self.options]
        return " ".join(w for w in words if w)


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
        # the note says what NVENC needs instead.
        return f"FFmpeg: {getattr(exc, 'strerror', None) or reason(exc)}"
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
    x264 = EncoderChoice(X264, x264_options(preset or DEFAULT_PRESET, crf), threading=X264_THREADING)
    if encoder == X264 or (encoder == protocol.ENCODER_AUTO and not cuda):
        return x264
    problem = nvenc_problem(size)
    if problem is not None:
        asked = f"{protocol.OPT_ENCODER} {NVENC}" if encoder == NVENC else f"{protocol.OPT_ENCODER} auto on CUDA"
        at = f" at {_even(size[0])}x{_even(size[1])}" if size else ""
        return dataclasses.replace(x264, note=f"encoder: libx264, as NVENC ({asked}) did not start{at} ({problem}); "
                                              "it needs an NVIDIA GPU with an NVENC unit and a recent driver")
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
    if choice.threading is not None:
        ctx.thread_type = choice.threading
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
