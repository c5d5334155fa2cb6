"""Encoder choice (wav2lip_core/encoders.py): what --encoder/--preset/--crf turn into, and that
the settings reach the file.

The x264 settings are read back from the written file: x264 stores its full option string in an
SEI message of the first frame ("x264 - core ... options: cabac=1 ref=3 ... crf=18.0 ..."); the
expected values per preset are x264's documented preset definitions (`x264 --fullhelp`).
"""

from __future__ import annotations

import re
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from conftest import MEDIA
from wav2lip_core import protocol
from wav2lip_core.media.encoders import DEFAULT_PRESET, EncoderChoice, choose_encoder, nvenc_problem, open_stream
from wav2lip_core.errors import MediaError, Wav2LipError

CLIP = MEDIA / "sadtalker_WDA_KatieHill_000.mp4"  # 512x512, 25 fps
TIME_BASE = Fraction(1, 90000)


@pytest.fixture(scope="module")
def frames() -> list[np.ndarray]:
    """The clip's first 12 frames as yuv420p planes (h * 3/2, w)."""
    out = []
    with av.open(str(CLIP)) as c:
        for frame in c.decode(video=0):
            out.append(frame.to_ndarray(format="yuv420p"))
            if len(out) == 12:
                break
    return out


def write(path: Path, choice: EncoderChoice, planes: list[np.ndarray]) -> Path:
    h, w = planes[0].shape[0] * 2 // 3, planes[0].shape[1]
    with av.open(str(path), "w", format="mp4") as container:
        stream = open_stream(container, choice, width=w, height=h, rate=Fraction(25), time_base=TIME_BASE,
                             name=str(path))
        for k, p in enumerate(planes):
            frame = av.VideoFrame.from_ndarray(p, format="yuv420p")
            frame.pts, frame.time_base = k * 3600, TIME_BASE
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def read_back(path: Path) -> tuple[str, list[np.ndarray], dict[str, str]]:
    """(codec name, decoded yuv420p planes, x264's option string as a dict; {} when absent)."""
    with av.open(str(path)) as c:
        codec = c.streams.video[0].codec_context.name
        planes = [f.to_ndarray(format="yuv420p") for f in c.decode(video=0)]
    text = path.read_bytes()
    m = re.search(rb"x264 - core \d+.*? options: ([^\x00]*)", text)
    options = dict(kv.split("=", 1) for kv in m.group(1).decode().split() if "=" in kv) if m else {}
    return codec, planes, options


def psnr(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    d = np.stack(a).astype(np.float64) - np.stack(b)
    return 10 * np.log10(255.0 ** 2 / np.mean(d * d))


# --- choosing ---------------------------------------------------------------------------------

def test_auto_without_cuda_is_x264_at_the_default_preset():
    choice = choose_encoder("auto", preset=None, crf=18, cuda=False)
    assert choice.codec == "libx264" and choice.note is None
    assert choice.options == {"crf": "18", "preset": DEFAULT_PRESET}
    assert DEFAULT_PRESET == protocol.PRESET_DEFAULT and DEFAULT_PRESET in protocol.names(protocol.PRESETS)


@pytest.mark.skipif(nvenc_problem() is None, reason="NVENC works on this machine: there is nothing to fall back from")
@pytest.mark.parametrize("encoder, cuda, asked", [("h264_nvenc", False, "--encoder h264_nvenc"),
                                                 ("h264_nvenc", True, "--encoder h264_nvenc"),
                                                 ("auto", True, "--encoder auto on CUDA")])
def test_nvenc_that_cannot_start_falls_back_to_x264_with_a_note(encoder, cuda, asked):
    choice = choose_encoder(encoder, preset="fast", crf=23, cuda=cuda)
    assert choice.codec == "libx264"
    assert choice.options == {"crf": "23", "preset": "fast"}  # the user's x264 settings still apply
    assert choice.note is not None and "\n" not in choice.note
    assert choice.note.startswith("encoder: libx264") and asked in choice.note and "NVENC" in choice.note


@pytest.mark.parametrize("kwargs, words", [
    (dict(encoder="hevc", preset=None, crf=18), ["unknown encoder 'hevc'", "libx264", "h264_nvenc"]),
    (dict(encoder="auto", preset="placebo", crf=18), ["unknown x264 preset 'placebo'", "veryfast"]),
    (dict(encoder="libx264", preset=None, crf=52), ["--crf 52", "0 (lossless) to 51"]),
    (dict(encoder="libx264", preset=None, crf=-1), ["--crf -1"]),
])
def test_bad_settings_are_refused_with_one_line(kwargs, words):
    with pytest.raises(Wav2LipError) as e:
        choose_encoder(**kwargs, cuda=False)
    assert "\n" not in str(e.value)
    for w in words:
        assert w in str(e.value)


# --- the settings reach the file --------------------------------------------------------------

def test_preset_and_crf_reach_x264(frames, tmp_path):
    files = {(preset, crf): write(tmp_path / f"{preset}-{crf}.mp4",
                                  choose_encoder("libx264", preset=preset, crf=crf, cuda=False), frames)
             for preset, crf in [("ultrafast", 18), ("medium", 18), ("medium", 30)]}
    seen = {key: read_back(path) for key, path in files.items()}
    for (preset, crf), (codec, planes, options) in seen.items():
        assert codec == "h264" and len(planes) == len(frames)
        assert options["rc"] == "crf" and float(options["crf"]) == crf
    # x264's preset definitions: ultrafast turns off CABAC and subpixel refinement, medium uses
    # CABAC, 3 reference frames and subme 7.
    ultrafast, medium = seen[("ultrafast", 18)][2], seen[("medium", 18)][2]
    assert (ultrafast["cabac"], ultrafast["subme"], ultrafast["ref"]) == ("0", "0", "1")
    assert (medium["cabac"], medium["subme"], medium["ref"]) == ("1", "7", "3")
    # The same preset at a higher crf: a smaller file that still shows the picture.
    assert files[("medium", 30)].stat().st_size < 0.6 * files[("medium", 18)].stat().st_size
    assert psnr(seen[("medium", 18)][1], frames) > psnr(seen[("medium", 30)][1], frames) > 30


def test_open_stream_starts_the_encoder_before_any_frame(tmp_path):
    with av.open(str(tmp_path / "o.mp4"), "w", format="mp4") as container:
        stream = open_stream(container, choose_encoder("libx264", preset="ultrafast", crf=18, cuda=False),
                             width=64, height=48, rate=Fraction(25), time_base=TIME_BASE)
        assert stream.codec_context.is_open
        assert stream.codec_context.extradata  # SPS/PPS ready for the MP4 header


@pytest.mark.parametrize("choice, words", [
    (EncoderChoice("libx264", {"crf": "18", "preset": "veryfast", "no-such-option": "1"}),
     ["does not know the option(s) no-such-option"]),
    (EncoderChoice("libx264", {"preset": "no-such-preset"}), ["cannot start the libx264 encoder"]),
    (EncoderChoice("no_such_encoder"), ["no no_such_encoder encoder"]),
])
def test_an_encoder_that_cannot_start_is_one_media_error(tmp_path, choice, words):
    out = tmp_path / "o.mp4"
    with av.open(str(out), "w", format="mp4") as container:
        with pytest.raises(MediaError) as e:
            open_stream(container, choice, width=64, height=48, rate=Fraction(25), time_base=TIME_BASE, name=str(out))
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"{out}: ")
    for w in words:
        assert w in msg


# --- NVENC, where it exists -------------------------------------------------------------------

def _nvenc_missing() -> str | None:
    """Why the NVENC test cannot run here, or None (torch is imported only when NVENC works)."""
    if nvenc_problem() is not None:
        return f"NVENC cannot start here ({nvenc_problem()})"
    try:
        import torch
    except ImportError:
        return "torch is not installed"
    return None if torch.cuda.is_available() else "no CUDA here"


@pytest.mark.skipif(_nvenc_missing() is not None, reason=str(_nvenc_missing()))
def test_nvenc_round_trip(frames, tmp_path):
    choice = choose_encoder("auto", preset=None, crf=18, cuda=True, size=(512, 512))
    assert choice.codec == "h264_nvenc" and choice.note is None
    codec, planes, x264 = read_back(write(tmp_path / "nvenc.mp4", choice, frames))
    assert codec == "h264" and x264 == {}  # H.264, and not written by x264
    assert len(planes) == len(frames)
    assert psnr(planes, frames) > 35
    # An x264 preset given with NVENC is not silently dropped.
    noted = choose_encoder("h264_nvenc", preset="medium", crf=18, cuda=True)
    assert noted.codec == "h264_nvenc" and "--preset medium applies to libx264 only" in noted.note


def test_describe_names_what_runs():
    assert choose_encoder("libx264", preset="fast", crf=20, cuda=False).describe() == "libx264 fast crf 20"
