"""Any clip a user has: containers, codecs, timestamps, rotation, odd sizes, audio layouts and
rates, non-ASCII paths. Each is read correctly (right frames, in the right order, at the right
times) or refused with one line.

Clips are made here with PyAV from the first frames of a shared clip. Every picture carries its
own number as six black/white blocks along the top, so a frame read back names itself whatever
the codec did to it: a wrong frame, order or seek cannot pass for a right one.
"""

from __future__ import annotations

import math
import wave
from fractions import Fraction

import av
import cv2
import numpy as np
import pytest

from conftest import MEDIA
from wav2lip_core.media.audio import load_audio
from wav2lip_core.media.decode import read_frames
from wav2lip_core.media.probe import probe_video
from wav2lip_core.media.encode import VideoWriter
from wav2lip_core.errors import MediaError
from wav2lip_core.sync.pipeline import LipSyncRequest, run

FACE2 = MEDIA / "vretalk_face2.mp4"
W, H, N, FPS = 128, 96, 30, 25
BOX = (30, 90, 30, 100)  # y1 y2 x1 x2 for the end-to-end runs: below the number blocks

_pictures: list[np.ndarray] = []


def pictures() -> list[np.ndarray]:
    if not _pictures:
        with av.open(str(FACE2)) as c:
            for i, frame in enumerate(c.decode(video=0)):
                bgr = cv2.resize(frame.to_ndarray(format="bgr24"), (W, H), interpolation=cv2.INTER_AREA)
                for b in range(6):
                    bgr[2:18, 4 + b * 20:20 + b * 20] = 255 if (i >> b) & 1 else 0
                _pictures.append(bgr)
                if len(_pictures) == N:
                    break
    return [p.copy() for p in _pictures]


def number_of(bgr: np.ndarray) -> int:
    return sum(1 << b for b in range(6) if bgr[6:14, 8 + b * 20:16 + b * 20].mean() > 128)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b) ** 2))
    return float("inf") if mse == 0 else 10 * math.log10(255.0 ** 2 / mse)


def tone(rate: int, channels: int, seconds: float, loud: tuple[int, ...] | None = None) -> np.ndarray:
    """(channels, samples) float32: a 440 Hz tone in the `loud` channels (all by default)."""
    t = np.arange(int(round(rate * seconds))) / rate
    x = np.zeros((channels, t.size), np.float32)
    for c in (range(channels) if loud is None else loud):
        x[c] = 0.3 * np.sin(2 * np.pi * 440 * t)
    return x


def write_clip(path, *, codec="libx264", fmt=None, pix="yuv420p", options=None, audio=None, rotation=0,
               size=(W, H), container_options=None):
    """The numbered pictures as a clip; `audio`: an audio codec for a stereo tone track."""
    frames = pictures()
    with av.open(str(path), "w", format=fmt, options=container_options or {}) as out:
        s = out.add_stream(codec, rate=FPS)
        s.width, s.height = size
        s.pix_fmt = pix
        s.options = options if options is not None else {"crf": "14", "bf": "3", "g": "10", "preset": "veryfast"}
        if rotation:
            s.set_display_rotation(rotation)
        a = None
        if audio:
            a = out.add_stream(audio, rate=48000)
            a.layout = "stereo"
        for i, bgr in enumerate(frames):
            if size != (W, H):
                bgr = grown(bgr, size)
            vf = av.VideoFrame.from_ndarray(bgr, format="bgr24").reformat(format=pix)
            vf.pts, vf.time_base = i, Fraction(1, FPS)
            for p in s.encode(vf):
                out.mux(p)
        for p in s.encode():
            out.mux(p)
        if a is not None:
            pcm = tone(48000, 2, N / FPS)
            step = a.codec_context.frame_size or 1024
            for k in range(0, pcm.shape[1], step):
                af = av.AudioFrame.from_ndarray(np.ascontiguousarray(pcm[:, k:k + step]), format="fltp", layout="stereo")
                af.sample_rate, af.pts, af.time_base = 48000, k, Fraction(1, 48000)
                for p in a.encode(af):
                    out.mux(p)
            for p in a.encode():
                out.mux(p)
    return path


def grown(bgr: np.ndarray, size) -> np.ndarray:
    """The picture with its last row/column repeated up to `size` (the numbers stay put)."""
    return cv2.copyMakeBorder(bgr, 0, size[1] - H, 0, size[0] - W, cv2.BORDER_REPLICATE)


def with_duplicate_timestamp(src, dst, at=7):
    """A copy of `src` whose packet `at` carries the previous packet's timestamp (screen
    recorders and some phone apps write these when a frame tick is late)."""
    with av.open(str(src)) as i, av.open(str(dst), "w") as o:
        si = i.streams.video[0]
        so = o.add_stream_from_template(si)
        previous = None
        for k, packet in enumerate(p for p in i.demux(si) if p.size):
            if k == at:
                packet.pts = packet.dts = previous
            previous = packet.pts
            packet.stream = so
            o.mux(packet)
    return dst


def plain_numbers(path) -> list[int]:
    """Numbers of the frames a plain PyAV decode outputs, in order."""
    with av.open(str(path)) as c:
        return [number_of(f.to_ndarray(format="bgr24")) for f in c.decode(video=0)]


NO_BFRAMES = {"crf": "14", "bf": "0", "g": "10", "preset": "veryfast"}
KINDS = {
    # name: (file name, write_clip keyword arguments)
    "mp4": ("clip.mp4", dict(audio="aac")),
    "mov": ("clip.mov", dict(audio="aac")),
    "mkv": ("clip.mkv", dict(audio="aac")),
    "webm vp9+opus": ("clip.webm", dict(codec="libvpx-vp9", audio="libopus",
                                        options={"deadline": "realtime", "cpu-used": "8", "crf": "20", "b": "0", "g": "10"})),
    "avi mpeg4+pcm": ("clip.avi", dict(codec="mpeg4", audio="pcm_s16le", options={"qscale": "2", "g": "10"})),
    "avi h264 b-frames (no pts)": ("b.avi", dict(audio="pcm_s16le")),
    "ts h264+aac": ("clip.ts", dict(audio="aac")),
    "mts mpeg2+mp2": ("clip.mts", dict(fmt="mpegts", codec="mpeg2video", audio="mp2",
                                       options={"qscale": "2", "bf": "2", "g": "12"})),
    "m2ts 192-byte packets": ("clip.m2ts", dict(fmt="mpegts", audio="aac", container_options={"mpegts_m2ts_mode": "1"})),
    "raw h264 (no timestamps)": ("clip.h264", dict(fmt="h264")),
    "hevc mkv": ("hevc.mkv", dict(codec="libx265", options={"x265-params": "log-level=none:bframes=3:keyint=10", "crf": "20"})),
}


def make_kind(tmp_path, kind):
    name, kw = KINDS[kind]
    return write_clip(tmp_path / name, **kw)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_frame_at_its_time_forward_and_backward(tmp_path, kind):
    path = make_kind(tmp_path, kind)
    info = probe_video(path)
    assert (info.frame_count, info.width, info.height) == (N, W, H)
    assert info.fps == pytest.approx(FPS, rel=1e-3) and not info.variable_frame_rate
    np.testing.assert_allclose(info.frame_times, [i / FPS for i in range(N)], atol=1e-3)
    src = pictures()
    forward = list(read_frames(info, range(N)))
    assert [number_of(bgr) for _, bgr in forward] == list(range(N))
    assert min(psnr(bgr, s) for (_, bgr), s in zip(forward, src)) > 25  # the numbers prove identity
    # Ping-pong, a jump back into the middle of a GOP, a repeat: what the pipeline asks for.
    schedule = list(range(N)) + list(range(N - 2, -1, -1)) + [17, 17, 3, 25, 24]
    assert [number_of(bgr) for _, bgr in read_frames(info, schedule, max_buffer_bytes=6 * W * H * 3)] == schedule


def test_duplicate_timestamps_keep_every_frame_in_order(tmp_path):
    src = write_clip(tmp_path / "src.mkv", options=NO_BFRAMES)
    path = with_duplicate_timestamp(src, tmp_path / "dup.mkv")
    with av.open(str(path)) as c:
        stamps = [p.pts for p in c.demux(video=0) if p.size]
    assert len(set(stamps)) == N - 1, "test premise: one timestamp repeats"
    info = probe_video(path)
    assert info.frame_count == N and info.fps == pytest.approx(FPS, rel=1e-3)
    np.testing.assert_allclose(info.frame_times, [i / FPS for i in range(N)], atol=1e-3)
    schedule = list(range(N)) + list(range(N - 2, -1, -1)) + [9, 2]
    assert [number_of(bgr) for _, bgr in read_frames(info, schedule)] == schedule


def test_transport_stream_cut_mid_gop(tmp_path):
    """A .ts captured or split at an arbitrary point starts inside a GOP: the frames before the
    first keyframe cannot be decoded, so the clip starts at the first frame that can."""
    whole = write_clip(tmp_path / "whole.ts", audio="aac").read_bytes()
    path = tmp_path / "cut.ts"
    path.write_bytes(whole[188 * 30:])
    decodable = plain_numbers(path)
    assert 0 < decodable[0] and len(decodable) < N, "test premise: the cut drops undecodable frames"
    info = probe_video(path)
    assert info.frame_count == len(decodable)
    np.testing.assert_allclose(info.frame_times, [i / FPS for i in range(len(decodable))], atol=1e-3)
    n = info.frame_count
    schedule = list(range(n)) + list(range(n - 2, -1, -1))
    assert [number_of(bgr) for _, bgr in read_frames(info, schedule)] == [decodable[i] for i in schedule]


@pytest.mark.parametrize("rotation", [90, 180, 270])
def test_rotation_is_applied(tmp_path, rotation):
    path = write_clip(tmp_path / f"rot{rotation}.mp4", rotation=rotation)
    info = probe_video(path)
    assert info.rotation == rotation
    assert (info.width, info.height) == ((H, W) if rotation in (90, 270) else (W, H))
    # Display rotation is counter-clockwise.
    turn = {90: cv2.ROTATE_90_COUNTERCLOCKWISE, 180: cv2.ROTATE_180, 270: cv2.ROTATE_90_CLOCKWISE}[rotation]
    src = pictures()
    for i, bgr in read_frames(info, [0, 11, 5]):
        assert psnr(bgr, cv2.rotate(src[i], turn)) > 30
        assert number_of(cv2.rotate(bgr, {90: cv2.ROTATE_90_CLOCKWISE, 180: cv2.ROTATE_180,
                                           270: cv2.ROTATE_90_COUNTERCLOCKWISE}[rotation])) == i


@pytest.mark.parametrize("codec, pix, name", [("libx264", "yuv444p", "odd.mp4"), ("mjpeg", "yuvj420p", "odd.avi")])
def test_odd_sizes(tmp_path, codec, pix, name):
    size = (161, 121)
    path = write_clip(tmp_path / name, codec=codec, pix=pix, size=size,
                      options={"crf": "14"} if codec == "libx264" else {"qscale": "2"})
    info = probe_video(path)
    assert (info.width, info.height, info.frame_count) == (*size, N)
    src = [grown(p, size) for p in pictures()]
    for i, bgr in read_frames(info, [0, 7, 29, 3]):
        assert bgr.shape == (121, 161, 3) and psnr(bgr, src[i]) > 27 and number_of(bgr) == i


def test_damaged_files_are_refused_in_one_line(tmp_path):
    whole = write_clip(tmp_path / "clip.ts").read_bytes()
    for name, data in [("empty.ts", b""), ("noise.ts", np.random.default_rng(3).integers(0, 256, 40_000, np.uint8).tobytes()),
                       ("head.mts", whole[:188 * 2])]:
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(MediaError) as e:
            info = probe_video(path)
            list(read_frames(info, range(info.frame_count)))
        message = str(e.value)
        assert name in message and "\n" not in message


# -- audio: channels and rates ------------------------------------------------------------


def write_wav(path, pcm: np.ndarray, rate: int, layout: str | None):
    """16-bit wav: through PyAV with a channel layout, or with the wave module (no channel
    mask, as many recorders write multichannel files)."""
    if layout is None:
        with wave.open(str(path), "wb") as w:
            w.setnchannels(pcm.shape[0])
            w.setsampwidth(2)
            w.setframerate(rate)
            w.writeframes((pcm.T * 32767).astype("<i2").tobytes())
        return path
    with av.open(str(path), "w") as out:
        s = out.add_stream("pcm_s16le", rate=rate)
        s.layout = layout
        for k in range(0, pcm.shape[1], 1024):
            block = (pcm[:, k:k + 1024].T.reshape(1, -1) * 32767).astype(np.int16)
            af = av.AudioFrame.from_ndarray(block, format="s16", layout=layout)
            af.sample_rate, af.pts, af.time_base = rate, k, Fraction(1, rate)
            for p in s.encode(af):
                out.mux(p)
        for p in s.encode():
            out.mux(p)
    return path


def decoded_audio(path):
    with av.open(str(path)) as c:
        stream = c.streams.audio[0]
        pcm = np.concatenate([f.to_ndarray() for f in c.decode(stream)], axis=1)
        return pcm, stream.codec_context.sample_rate, stream.codec_context.channels


AUDIO_CASES = [
    # (channels, rate, layout (None: wav without a channel mask), loud channel)
    (1, 8000, "mono", 0),
    (2, 11025, "stereo", 1),
    (3, 22050, None, 2),
    (6, 48000, "5.1", 2),  # dialogue in the centre channel, as films carry it
    (8, 96000, "7.1", 2),
    (8, 44100, None, 7),
    (2, 37800, "stereo", 0),  # not an AAC rate: resampled to 48 kHz
]


@pytest.mark.parametrize("channels, rate, layout, loud", AUDIO_CASES)
def test_audio_channels_and_rates(tmp_path, channels, rate, layout, loud):
    seconds = 0.6
    path = write_wav(tmp_path / "speech.wav", tone(rate, channels, seconds, loud=(loud,)), rate, layout)
    mono16k = load_audio(path)
    assert mono16k.size == pytest.approx(seconds * 16000, abs=2)
    assert np.sqrt(np.mean(mono16k ** 2)) == pytest.approx(0.3 / math.sqrt(2) / channels, rel=0.05)  # the channels' mean

    out = tmp_path / "out.mp4"
    with VideoWriter(out, width=64, height=48, fps=FPS, audio_path=path, duration=0.4) as w:
        for i in range(10):
            w.write(np.zeros((48, 64, 3), np.uint8), i / FPS)
    pcm, out_rate, out_channels = decoded_audio(out)
    assert out_rate == (rate if rate != 37800 else 48000)
    # Mono stays mono, known layouts are downmixed to stereo, channels of unknown order averaged.
    assert out_channels == (1 if channels == 1 or layout is None and channels > 2 else 2)
    assert pcm.shape[1] == pytest.approx(0.4 * out_rate, abs=1024 + 1)
    middle = pcm[:, out_rate // 20: -out_rate // 20]
    # The one sounding channel is heard, not lost in the downmix, and nothing clips.
    averaged = layout is None and channels > 2
    assert np.sqrt(np.mean(middle ** 2)) > (0.5 * 0.3 / math.sqrt(2) / channels if averaged else 0.05)
    assert np.abs(pcm).max() <= 1.0


# -- end to end ----------------------------------------------------------------------------


@pytest.fixture
def sync(checkpoint, tmp_path):
    """Run the pipeline with a fixed box (the clips are too small for a detector to matter)."""
    def go(face, audio, out, **kw):
        req = LipSyncRequest(face=str(face), audio=str(audio), checkpoint=str(checkpoint), out=str(out), box=BOX,
                             blend="hard", smooth=False, device="cpu", precision="fp32", cache=False, **kw)
        return run(req)
    return go


def numbers_in(path) -> list[int]:
    with av.open(str(path)) as c:
        frames = sorted(((f.time, f.to_ndarray(format="bgr24")) for f in c.decode(video=0)), key=lambda tf: tf[0])
    return [number_of(bgr) for _, bgr in frames]


@pytest.mark.parametrize("kind", ["mts mpeg2+mp2", "raw h264 (no timestamps)", "avi h264 b-frames (no pts)"])
def test_end_to_end_with_the_clip_as_its_own_audio_or_a_wav(sync, tmp_path, kind):
    clip = make_kind(tmp_path, kind)
    audio = clip
    if kind.startswith("raw"):
        audio = write_wav(tmp_path / "speech.wav", tone(44100, 2, N / FPS), 44100, "stereo")
    # Long enough audio to play the clip forward and back: frames 0..29, then 28, 27, ...
    duration = (N + 4) / FPS
    res = sync(clip, audio, tmp_path / "out.mp4", duration=duration)
    assert res.frames == N + 4
    assert numbers_in(res.out) == list(range(N)) + [28, 27, 26, 25]
    _, _, channels = decoded_audio(res.out)
    assert channels == 2


def test_end_to_end_rotated_clip_comes_out_upright(sync, tmp_path):
    clip = write_clip(tmp_path / "phone.mp4", rotation=270, audio="aac")
    res = sync(clip, clip, tmp_path / "out.mp4", duration=0.2, )
    with av.open(str(res.out)) as c:
        s = c.streams.video[0]
        assert (s.width, s.height) == (H, W)
        first = next(c.decode(s)).to_ndarray(format="bgr24")
    assert number_of(cv2.rotate(first, cv2.ROTATE_90_COUNTERCLOCKWISE)) == 0


def test_end_to_end_non_ascii_paths_with_spaces(sync, tmp_path):
    folder = tmp_path / "Mes vidéos – 日本語 clips"
    folder.mkdir()
    clip = write_clip(folder / "Interview Ünïcødé 1.webm", **KINDS["webm vp9+opus"][1])
    audio = write_wav(folder / "Dialogue – prise 2.wav", tone(48000, 2, 0.3), 48000, "stereo")
    out = folder / "Résultat synchronisé.mp4"
    res = sync(clip, audio, out, duration=0.2)
    assert res.frames == 5 and out.exists()
    assert numbers_in(out) == list(range(5))
    assert sorted(p.name for p in folder.iterdir()) == sorted([clip.name, audio.name, out.name])
