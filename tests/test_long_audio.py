"""A job on a window of a long sound file decodes that window, not the whole file: the model's
samples (audio.read_segment) and the writer's sound equal the same window cut from a decode of
the whole file, and a real run reads a small part of the file (counted by the kernel)."""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import soxr

from conftest import MEDIA
from wav2lip_core.media import audio as audio_mod
from wav2lip_core.media.soundtrack import Soundtrack

FACE2 = MEDIA / "vretalk_face2.mp4"


def _signal(n: int, rate: int, seed: int) -> np.ndarray:
    """Speech-like stand-in: a gliding tone under a slow envelope plus noise, never periodic
    over a seek's reach, so a misplaced window cannot match by accident."""
    t = np.arange(n) / rate
    rng = np.random.default_rng(seed)
    tone = np.sin(2 * np.pi * (180 * t + 40 * np.sin(0.7 * t)))
    return (0.3 * tone * (0.6 + 0.4 * np.sin(1.3 * t)) + 0.03 * rng.standard_normal(n)).astype(np.float32)


def write_long(path: Path, codec: str, seconds: float, rate: int = 48000, channels: int = 2) -> Path:
    layout = "stereo" if channels == 2 else "mono"
    block = rate  # one second at a time: a long file is never held whole here
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=rate)
        stream.layout = layout
        fmt = stream.codec_context.codec.audio_formats[0].name
        resampler = av.AudioResampler(format=fmt, layout=layout, rate=rate)
        pts = 0
        for k in range(int(seconds)):
            mono = _signal(block, rate, k)
            data = np.vstack([mono, 0.5 * mono])[:channels]
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(data), format="fltp", layout=layout)
            frame.sample_rate, frame.pts, frame.time_base = rate, pts, Fraction(1, rate)
            pts += block
            for f in resampler.resample(frame):
                for p in stream.encode(f):
                    out.mux(p)
        for f in resampler.resample(None):
            for p in stream.encode(f):
                out.mux(p)
        for p in stream.encode(None):
            out.mux(p)
    return path


def full_decode(path: Path) -> tuple[np.ndarray, int]:
    """(channels, n) float32 of the whole file from its start, the plain way."""
    with av.open(str(path)) as c:
        s = c.streams.audio[0]
        blocks = []
        for f in c.decode(s):
            d = f.to_ndarray()
            if f.format.is_packed:
                d = d.reshape(-1, len(f.layout.channels)).T
            if d.dtype == np.int16:
                d = d.astype(np.float32) / 32768.0
            blocks.append(d.astype(np.float32))
        return np.concatenate(blocks, axis=1), s.codec_context.sample_rate


def bytes_read() -> int:
    """Bytes this process has read through read() calls, all threads (the kernel's count)."""
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    raise AssertionError("no rchar in /proc/self/io")


needs_proc_io = pytest.mark.skipif(not Path("/proc/self/io").exists(), reason="counts reads with Linux's /proc/self/io")


CODECS = {"wav": "pcm_s16le", "m4a": "aac", "mp3": "libmp3lame"}


@pytest.fixture(scope="module")
def three_minutes(tmp_path_factory):
    folder = tmp_path_factory.mktemp("long")
    return {ext: write_long(folder / f"talk.{ext}", codec, 180) for ext, codec in CODECS.items()}


@pytest.fixture(scope="module")
def ten_minute_wav(tmp_path_factory):
    return write_long(tmp_path_factory.mktemp("long10") / "dialogue.wav", "pcm_s16le", 600)


@pytest.mark.parametrize("ext", list(CODECS))
@pytest.mark.parametrize("start", [97.123, 0.05, -0.4, 178.9])
def test_window_samples_and_mel_equal_the_full_decode_slice(three_minutes, ext, start):
    path = three_minutes[ext]
    whole, rate = full_decode(path)
    mono16 = soxr.resample(whole.mean(axis=0), rate, audio_mod.SAMPLE_RATE, quality="HQ").astype(np.float32)
    first, n = round(start * audio_mod.SAMPLE_RATE), 2 * audio_mod.SAMPLE_RATE
    expected = np.zeros(n, np.float32)  # zeros before the file's start and after its end
    lo, hi = max(first, 0), min(first + n, mono16.size)
    expected[lo - first: hi - first] = mono16[lo:hi]

    got, duration = audio_mod.read_segment(path, start, 2.0)
    assert duration == 2.0 and got.dtype == np.float32 and got.shape == expected.shape
    assert np.abs(got - expected).max() < 2e-5, ext
    assert np.abs(audio_mod.melspectrogram(got) - audio_mod.melspectrogram(expected)).max() < 1e-3


@pytest.mark.parametrize("ext", list(CODECS))
@pytest.mark.parametrize("start", [97.123, 0.3, -0.25])
def test_writer_sound_equals_the_full_decode_slice(three_minutes, ext, start):
    path = three_minutes[ext]
    whole, rate = full_decode(path)
    src = Soundtrack(str(path), start, 2.0)
    try:
        assert src.rate == rate
        blocks = []
        while (block := src.read(None)) is not None:
            blocks.append(block)
    finally:
        src.close()
    got = np.concatenate(blocks, axis=1)
    first, n = round(start * rate), 2 * rate
    expected = np.zeros((whole.shape[0], n), np.float32)
    lo, hi = max(first, 0), min(first + n, whole.shape[1])
    expected[:, lo - first: hi - first] = whole[:, lo:hi]
    assert got.shape == expected.shape
    assert np.abs(got - expected).max() < 1e-6, ext


@needs_proc_io
def test_a_window_from_minute_eight_reads_the_window_not_the_file(ten_minute_wav):
    size = os.path.getsize(ten_minute_wav)  # 115 MB
    before = bytes_read()
    got, _ = audio_mod.read_segment(ten_minute_wav, 480.0, 2.0)
    read = bytes_read() - before
    assert got.size == 32000 and np.abs(got).max() > 0.1
    assert read < 4_000_000 < size, f"read {read / 1e6:.1f} MB of a {size / 1e6:.0f} MB file for 2 s"

    src = Soundtrack(str(ten_minute_wav), 480.0, 2.0)
    before = bytes_read()
    try:
        while src.read(None) is not None:
            pass
    finally:
        src.close()
    read = bytes_read() - before
    assert read < 4_000_000, f"the writer read {read / 1e6:.1f} MB of a {size / 1e6:.0f} MB file for 2 s"


@needs_proc_io
def test_a_job_from_minute_eight_reads_its_window_and_writes_its_sound(ten_minute_wav, checkpoint, tmp_path):
    """The real pipeline, model loaded beforehand and a first job run on a short file: what a
    job reads once per process (the model, the landmark predictor) is not counted."""
    from wav2lip_core.sync.pipeline import LipSyncRequest, run
    from wav2lip_core.model.runtime import load_executor

    executor = load_executor(str(checkpoint), runtime="openvino", device="cpu", precision="fp32")
    out = tmp_path / "out.mp4"
    req = LipSyncRequest(face=str(FACE2), audio=str(ten_minute_wav), checkpoint=str(checkpoint), out=str(out),
                         box=(225, 608, 192, 565), audio_start=480.0, duration=2.0, frames=50, device="cpu",
                         runtime="openvino", cache=False)
    run(LipSyncRequest(**{**req.__dict__, "audio": str(MEDIA / "vretalk_audio1.wav"), "audio_start": 1.0,
                          "out": str(tmp_path / "warm.mp4")}), executor=executor)
    before = bytes_read()
    result = run(req, executor=executor)
    read = bytes_read() - before
    size = os.path.getsize(ten_minute_wav)
    face = os.path.getsize(FACE2)
    # The face clip is decoded twice (detect, sync); the sound file's share must be its window.
    assert read < 2 * face + 8_000_000 < size, f"read {read / 1e6:.1f} MB for a 2 s job on a {size / 1e6:.0f} MB file"
    assert result.frames == 50

    written, rate = full_decode(out)
    whole, src_rate = full_decode(ten_minute_wav)
    assert rate == src_rate
    window = whole[:, 480 * rate: 482 * rate]
    got = written[:, : window.shape[1]]
    assert got.shape == window.shape
    # AAC is lossy: the written sound is the window (no shift: best alignment at lag 0) within
    # the codec's error.
    lags = range(-96, 97)
    score = [float(np.dot(np.roll(got[0], lag), window[0])) for lag in lags]
    assert list(lags)[int(np.argmax(score))] == 0
    err = np.sqrt(np.mean((got - window) ** 2)) / np.sqrt(np.mean(window ** 2))
    assert err < 0.2, err  # 0.14 measured (the noise floor costs AAC the most)
