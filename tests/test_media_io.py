"""Streaming decode (probe_video/read_frames) and the atomic MP4 writer, on real footage."""

from __future__ import annotations

import hashlib
import shutil

import av
import cv2
import numpy as np
import pytest

from wav2lip_core.media.colour import to_bgr

from wav2lip_core.media.decode import read_frames

from wav2lip_core.media.probe import probe_video
from wav2lip_core.media.encode import VideoWriter
from wav2lip_core.errors import MediaError

CLIPS = {
    # name: (frames, fps, width, height, variable)
    "vretalk_face2.mp4": (125, 25.0, 844, 844, False),
    "vretalk_face1.mp4": (135, 22.13, 700, 700, True),
    "sadtalker_WDA_KatieHill_000.mp4": (200, 25.0, 512, 512, False),
    "liveportrait_d13.mp4": (352, 30.0, 720, 1280, False),
}


def plain_decode(path, limit=None):
    """Reference: every frame in decoder order with its time, no seeking, no bookkeeping."""
    with av.open(str(path)) as c:
        out = []
        for frame in c.decode(video=0):
            out.append((float(frame.time), to_bgr(frame)))
            if limit and len(out) >= limit:
                break
        return out


def digest(bgr):
    return hashlib.blake2b(np.ascontiguousarray(bgr).tobytes(), digest_size=16).hexdigest()


@pytest.fixture(scope="module")
def face2(media):
    """The clip's info and a digest of every frame of a plain decode (all frames would be 267 MB)."""
    info = probe_video(media / "vretalk_face2.mp4")
    return info, [digest(bgr) for _, bgr in plain_decode(info.path)]


def leftovers(folder):
    return sorted(p.name for p in folder.iterdir())


# -- probing -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(CLIPS))
def test_probe_shared_clips(media, name):
    frames, fps, width, height, variable = CLIPS[name]
    info = probe_video(media / name)
    assert (info.frame_count, info.width, info.height) == (frames, width, height)
    assert info.fps == pytest.approx(fps, abs=0.01)
    assert info.variable_frame_rate is variable
    assert not info.is_image and info.rotation == 0
    assert len(info.frame_times) == frames and info.frame_times[0] == 0.0
    assert all(b > a for a, b in zip(info.frame_times, info.frame_times[1:]))
    assert info.duration == pytest.approx(frames / info.fps, rel=1e-6)


def test_vfr_times_match_decoded_frames(media):
    info = probe_video(media / "vretalk_face1.mp4")
    decoded = [t for t, _ in plain_decode(info.path)]
    relative = np.array(decoded) - decoded[0]
    assert len(decoded) == info.frame_count
    np.testing.assert_allclose(info.frame_times, relative, atol=1e-4)
    steps = np.diff(info.frame_times)
    assert steps.max() > 1.5 * steps.min()  # really irregular, not a disguised CFR clip
    assert info.duration == pytest.approx(6.1, abs=0.01)


def test_probe_still_image(tmp_path):
    from skimage import data

    path = tmp_path / "face.png"
    rgb = data.astronaut()[:301, :257]  # odd size on purpose
    cv2.imwrite(str(path), rgb[:, :, ::-1])
    info = probe_video(path, image_fps=30)
    assert info.is_image and info.frame_count == 1
    assert (info.width, info.height, info.fps) == (257, 301, 30.0)
    frames = list(read_frames(info, [0, 0, 0]))
    assert [i for i, _ in frames] == [0, 0, 0]
    for _, bgr in frames:
        np.testing.assert_array_equal(bgr, rgb[:, :, ::-1])


def test_rotation_metadata_is_applied(tmp_path):
    path = tmp_path / "rotated.mp4"
    marker = np.zeros((32, 64, 3), np.uint8)
    marker[:8, :8] = 255  # top-left corner of the stored picture
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = 64, 32, "yuv420p"
        s.set_display_rotation(90)  # counter-clockwise, like a phone held sideways
        for i in range(3):
            f = av.VideoFrame.from_ndarray(marker, format="bgr24")
            f.pts = i
            for p in s.encode(f):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    info = probe_video(path)
    assert (info.rotation, info.width, info.height) == (90, 32, 64)
    _, bgr = next(read_frames(info, [1]))
    assert bgr.shape == (64, 32, 3)
    # Rotating counter-clockwise moves the stored top-left corner to the bottom-left.
    assert bgr[-4:, :4].mean() > 200 and bgr[:4, :4].mean() < 50


# -- reading -------------------------------------------------------------------------------


def test_forward_read_equals_plain_decode(face2):
    info, reference = face2
    got = [(i, digest(bgr)) for i, bgr in read_frames(info, range(info.frame_count))]
    assert [i for i, _ in got] == list(range(info.frame_count))
    assert [d for _, d in got] == reference


def test_partial_forward_range(face2):
    info, reference = face2
    got = list(read_frames(info, range(40, 45)))
    assert [i for i, _ in got] == list(range(40, 45))
    assert [digest(bgr) for _, bgr in got] == reference[40:45]


def test_ping_pong_schedule_matches_forward(face2):
    info, reference = face2
    n = info.frame_count
    schedule = list(range(n)) + list(range(n - 2, -1, -1)) + [0, 0, 7, 3]
    budget = 48 * info.width * info.height * 3
    order = []
    for i, bgr in read_frames(info, schedule, max_buffer_bytes=budget):  # compared as they stream
        order.append(i)
        assert digest(bgr) == reference[i], f"frame {i} differs from the forward decode"
    assert order == schedule


def test_repeated_frames_are_independent_copies(face2):
    info, reference = face2
    frames = read_frames(info, [3, 3])
    _, first = next(frames)
    first[:] = 0  # the pipeline draws into frames; a repeat must still be the source picture
    _, second = next(frames)
    assert digest(second) == reference[3]


def test_descending_run_memory_is_bounded(media):
    # PyAV allocates frame buffers outside Python's allocator (tracemalloc cannot see them), so
    # the bound is checked on the reader's own bookkeeping of frames held at once.
    info = probe_video(media / "sadtalker_WDA_KatieHill_000.mp4")
    frame_bytes = info.width * info.height * 3
    reference = [digest(bgr) for _, bgr in plain_decode(info.path)]
    got, stats = {}, {}
    schedule = range(info.frame_count - 1, -1, -1)
    for i, bgr in read_frames(info, schedule, max_buffer_bytes=8 * frame_bytes, spill_bytes=0, stats=stats):
        got[i] = digest(bgr)
    assert stats["max_held"] == 8  # 200 frames (157 MB) were never held together
    assert stats["seeks"] == 25  # one seek per chunk of 8
    assert stats["decoded"] < 2 * info.frame_count  # 12-frame GOPs: seeking back is cheap
    assert [got[i] for i in range(info.frame_count)] == reference

    unbounded = {}
    for _ in read_frames(info, schedule, max_buffer_bytes=1 << 40, stats=unbounded):
        pass
    assert unbounded["max_held"] == info.frame_count and unbounded["seeks"] <= 1


def test_long_descending_run_is_staged_on_disk_not_in_memory(media):
    """Past the memory budget a backward run goes to a temp file: one decode pass, one frame in
    memory at a time, identical pixels, and the file gone afterwards."""
    info = probe_video(media / "sadtalker_WDA_KatieHill_000.mp4")
    frame_bytes = info.width * info.height * 3
    reference = [digest(bgr) for _, bgr in plain_decode(info.path)]
    got, stats = {}, {}
    schedule = list(range(info.frame_count)) + list(range(info.frame_count - 2, -1, -1))
    for i, bgr in read_frames(info, schedule, max_buffer_bytes=8 * frame_bytes, stats=stats):
        got.setdefault(i, digest(bgr))
        assert digest(bgr) == reference[i]
    assert stats["max_held"] <= 8 and stats["spilled"] >= info.frame_count - 1  # the turn joins the run
    assert stats["seeks"] <= 2 and stats["decoded"] <= 2 * info.frame_count  # the start, then one back
    assert len(got) == info.frame_count


def test_out_of_range_index(face2):
    info, _ = face2
    with pytest.raises(IndexError):
        list(read_frames(info, [info.frame_count]))


# -- writing -------------------------------------------------------------------------------


def synthetic(i, w=64, h=48):
    img = np.zeros((h, w, 3), np.uint8)
    img[:, : (i * 3) % w + 1] = (40, 120, 200)
    return img


def streams_of(path):
    with av.open(str(path)) as c:
        v, a = c.streams.video, c.streams.audio
        info = {
            "video": [(s.codec_context.name, s.codec_context.pix_fmt, s.width, s.height) for s in v],
            "audio": [(s.codec_context.name, s.codec_context.sample_rate, s.codec_context.channels,
                       float(s.duration * s.time_base)) for s in a],
        }
    return info


@pytest.mark.parametrize("wav, rate", [("vretalk_audio1.wav", 44100), ("sadtalker_imagine.wav", 48000)])
def test_round_trip_with_original_audio(media, tmp_path, wav, rate):
    out = tmp_path / "out.mp4"
    n, fps = 40, 25.0
    with VideoWriter(out, width=64, height=48, fps=fps, audio_path=media / wav, duration=n / fps) as w:
        for i in range(n):
            w.write(synthetic(i), i / fps)
    s = streams_of(out)
    assert s["video"] == [("h264", "yuv420p", 64, 48)]
    [(codec, sample_rate, channels, audio_duration)] = s["audio"]
    assert (codec, sample_rate, channels) == ("aac", rate, 2)
    assert audio_duration == pytest.approx(n / fps, abs=1 / fps)
    info = probe_video(out)
    assert info.frame_count == n and info.fps == pytest.approx(fps)
    assert leftovers(tmp_path) == ["out.mp4"]


def decoded_audio(path):
    with av.open(str(path)) as c:
        return np.concatenate([f.to_ndarray() for f in c.decode(audio=0)], axis=1), c.streams.audio[0].sample_rate


def test_negative_audio_start_inserts_silence_and_pads(media, tmp_path):
    out = tmp_path / "late.mp4"
    duration = 6.0  # the wav is 5.0 s: 0.5 s silence + 5.0 s speech + 0.5 s padding
    with VideoWriter(out, width=64, height=48, fps=25, audio_path=media / "vretalk_audio1.wav",
                     audio_start=-0.5, duration=duration) as w:
        for i in range(150):
            w.write(synthetic(i), i / 25)
    samples, rate = decoded_audio(out)
    assert np.abs(samples[:, : int(0.45 * rate)]).max() < 1e-3
    assert np.abs(samples[:, int(0.6 * rate): int(4.5 * rate)]).max() > 0.05
    assert streams_of(out)["audio"][0][3] == pytest.approx(duration, abs=0.04)


def test_positive_audio_start_and_cut(media, tmp_path):
    src, rate = decoded_audio(media / "vretalk_face2.mp4")  # AAC track of an mp4 as the audio input
    out = tmp_path / "cut.mp4"
    with VideoWriter(out, width=64, height=48, fps=25, audio_path=media / "vretalk_face2.mp4",
                     audio_start=1.0, duration=2.0) as w:
        for i in range(50):
            w.write(synthetic(i), i / 25)
    got, got_rate = decoded_audio(out)
    assert got_rate == rate
    assert streams_of(out)["audio"][0][3] == pytest.approx(2.0, abs=0.04)
    # Loudness envelope of the written audio follows the source from 1.0 s on (AAC is lossy).
    win = rate // 10
    env = lambda x, k: float(np.sqrt(np.mean(x[:, k * win:(k + 1) * win] ** 2)))  # noqa: E731
    ours = [env(got, k) for k in range(1, 18)]
    theirs = [env(src[:, rate:], k) for k in range(1, 18)]
    assert np.corrcoef(ours, theirs)[0, 1] > 0.9


def test_vfr_times_are_kept(tmp_path):
    out = tmp_path / "vfr.mp4"
    times = [0.0, 0.04, 0.1, 0.133, 0.2, 0.31, 0.35, 0.5]
    with VideoWriter(out, width=64, height=48, fps=22.0) as w:
        for i, t in enumerate(times):
            w.write(synthetic(i), t)
    info = probe_video(out)
    assert info.variable_frame_rate and info.frame_count == len(times)
    np.testing.assert_allclose(info.frame_times, times, atol=1 / 90000)
    assert [t for t, _ in plain_decode(out)] == pytest.approx(times, abs=1 / 90000)
    assert streams_of(out)["audio"] == []


def test_odd_size_is_padded_and_pixels_survive(face2, tmp_path):
    info, _ = face2
    crop = [np.ascontiguousarray(f[300:401, 380:457]) for _, f in read_frames(info, range(5))]
    out = tmp_path / "odd.mp4"
    with VideoWriter(out, width=77, height=101, fps=25, crf=10) as w:
        assert (w.width, w.height) == (78, 102)
        for i, f in enumerate(crop):
            w.write(f, i / 25)
    back = [bgr for _, bgr in read_frames(probe_video(out), range(5))]
    assert back[0].shape == (102, 78, 3)
    err = np.abs(back[2][:101, :77].astype(int) - crop[2])
    assert err.mean() < 2.0 and abs((back[2][:101, :77].astype(int) - crop[2]).mean()) < 0.5


# -- failures ------------------------------------------------------------------------------


def test_exception_in_block_leaves_nothing(tmp_path, media):
    out = tmp_path / "result.mp4"
    with pytest.raises(RuntimeError, match="boom"):
        with VideoWriter(out, width=64, height=48, fps=25, audio_path=media / "vretalk_audio1.wav") as w:
            w.write(synthetic(0), 0.0)
            raise RuntimeError("boom")
    assert leftovers(tmp_path) == []


def test_abort_keeps_previous_output(tmp_path):
    out = tmp_path / "result.mp4"
    out.write_bytes(b"previous result")
    w = VideoWriter(out, width=64, height=48, fps=25)
    w.write(synthetic(0), 0.0)
    w.abort()
    assert out.read_bytes() == b"previous result"
    assert leftovers(tmp_path) == ["result.mp4"]


def test_refuses_to_overwrite_a_source(media, tmp_path):
    src = tmp_path / "input.mp4"
    shutil.copy(media / "vretalk_face2.mp4", src)
    before = src.read_bytes()
    for alias in (src, tmp_path / "." / "input.mp4"):
        with pytest.raises(MediaError, match="refusing to overwrite the input"):
            VideoWriter(alias, width=64, height=48, fps=25, source_paths=[str(src), None])
    assert src.read_bytes() == before
    assert leftovers(tmp_path) == ["input.mp4"]


@pytest.mark.parametrize("where", ["missing_folder", "parent_is_file"])
def test_unwritable_output_folder(tmp_path, where):
    if where == "missing_folder":
        out = tmp_path / "no" / "such" / "out.mp4"
    else:
        (tmp_path / "afile").write_text("x")
        out = tmp_path / "afile" / "out.mp4"
    with pytest.raises(MediaError, match="folder"):
        VideoWriter(out, width=64, height=48, fps=25)


@pytest.mark.parametrize("kind", ["random", "truncated", "text"])
def test_corrupt_video_is_a_media_error(media, tmp_path, kind):
    path = tmp_path / "bad.mp4"
    if kind == "random":
        path.write_bytes(np.random.default_rng(0).integers(0, 256, 50_000, dtype=np.uint8).tobytes())
    elif kind == "truncated":
        path.write_bytes((media / "vretalk_face2.mp4").read_bytes()[:30_000])
    else:
        path.write_text("this is not a video\n")
    with pytest.raises(MediaError, match="bad.mp4"):
        info = probe_video(path)
        list(read_frames(info, range(info.frame_count)))


def test_missing_file(tmp_path):
    with pytest.raises(MediaError, match="not found"):
        probe_video(tmp_path / "nope.mp4")


def test_wav_as_video_says_no_video_stream(media):
    with pytest.raises(MediaError, match="no video stream"):
        probe_video(media / "vretalk_audio1.wav")
