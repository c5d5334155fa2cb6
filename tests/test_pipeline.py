"""The whole pipeline (`run`, `make_plan`, `synthesize`) on real footage, the conformance
checkpoint and the real BlazeFace weights.

Expectations are computed here from the inputs (file lengths, packet timestamps, lossless test
clips whose frames are known exactly), not read back from the code under test. Runs are kept
short (`duration`, `frames`, a few output frames each) because every output frame costs a
Wav2Lip forward pass on a 2-core CPU.
"""

from __future__ import annotations

import itertools
import json
import math
import wave
from fractions import Fraction
from functools import lru_cache
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
import torch

from conftest import CONFORMANCE, MEDIA
from wav2lip_core.media.audio import load_audio
from wav2lip_core.media.probe import probe_video
from wav2lip_core.errors import AudioError, Cancelled, DetectorError, MediaError, Wav2LipError
from wav2lip_core.model.checkpoint import load_checkpoint
from wav2lip_core.sync.pipeline import (
    LipSyncRequest,
    detection_settings,
    find_faces,
    run,
)
from wav2lip_core.sync.request import check_request
from wav2lip_core.sync.plan import make_plan
from wav2lip_core.sync.stages import synthesize

FACE2 = MEDIA / "vretalk_face2.mp4"  # 844x844, 25 fps, 125 frames, AAC
FACE1_VFR = MEDIA / "vretalk_face1.mp4"  # 700x700, variable frame rate
KATIE = MEDIA / "sadtalker_WDA_KatieHill_000.mp4"  # 512x512, 25 fps, its own AAC speech
PORTRAIT = MEDIA / "liveportrait_d13.mp4"  # 720x1280, 30 fps, no audio
AUDIO1 = MEDIA / "vretalk_audio1.wav"  # 44.1 kHz stereo PCM16, 5 s
IMAGINE = MEDIA / "sadtalker_imagine.wav"  # 48 kHz 24-bit WAVEX
SPEECH16K = CONFORMANCE / "speech_16k.wav"  # 16 kHz mono, the conformance mel's source


def _never() -> bool:
    return False


def _noop(*_args) -> None:
    return None


# ---------------------------------------------------------------------------------------------
# helpers: inputs made here, outputs inspected with PyAV directly


@lru_cache(maxsize=None)
def _face2_frames(n: int) -> tuple[np.ndarray, ...]:
    """The first n frames of vretalk_face2 (plain PyAV decode); used as ground truth pictures
    for lossless test clips, so their exact values do not matter."""
    out = []
    with av.open(str(FACE2)) as c:
        for frame in c.decode(video=0):
            out.append(frame.to_ndarray(format="bgr24"))
            if len(out) == n:
                break
    assert len(out) == n
    return tuple(out)


def face2_frames(n: int) -> list[np.ndarray]:
    return [f.copy() for f in _face2_frames(n)]


def write_lossless(path: Path, frames: list[np.ndarray], fps: int = 25) -> Path:
    """An mp4 (H.264 RGB, qp 0: lossless) whose decoded frames are exactly `frames`."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264rgb", rate=Fraction(fps))
        stream.width, stream.height = frames[0].shape[1], frames[0].shape[0]
        stream.pix_fmt = "bgr24"
        stream.options = {"qp": "0", "preset": "ultrafast"}
        for i, bgr in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(bgr), format="bgr24")
            vf.pts, vf.time_base = i, Fraction(1, fps)
            for packet in stream.encode(vf):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    back = decode_video(path)
    assert len(back) == len(frames) and all(np.array_equal(a, b) for (_, a), b in zip(back, frames)), \
        "test helper: the lossless clip does not round-trip"
    return path


def write_wav_slice(src: Path, dst: Path, seconds: float) -> float:
    """The first `seconds` of a PCM wav as a new wav; returns its exact length in seconds."""
    with wave.open(str(src)) as r:
        params = r.getparams()
        n = int(round(seconds * params.framerate))
        data = r.readframes(n)
    with wave.open(str(dst), "wb") as w:
        w.setparams(params)
        w.writeframes(data)
    with wave.open(str(dst)) as r:
        return r.getnframes() / r.getframerate()


def decode_video(path) -> list[tuple[float, np.ndarray]]:
    """(time in seconds, BGR) of every frame, in presentation order."""
    with av.open(str(path)) as c:
        frames = [(float(f.time), f.to_ndarray(format="bgr24")) for f in c.decode(video=0)]
    frames.sort(key=lambda tf: tf[0])
    return frames


def source_frame_times(path) -> list[float]:
    """Presentation times of a video's frames from its packet timestamps, first frame at 0."""
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        pts = sorted(p.pts for p in c.demux(s) if p.size and p.pts is not None)
        return [float((p - pts[0]) * s.time_base) for p in pts]


def stream_summary(path) -> dict:
    """Codecs and end times (last packet pts + duration) of each stream."""
    with av.open(str(path)) as c:
        out = {"video": [s.codec_context.name for s in c.streams.video],
               "audio": [s.codec_context.name for s in c.streams.audio],
               "streams": len(c.streams)}
        ends: dict[int, float] = {}
        for packet in c.demux():
            if packet.size == 0 or packet.pts is None:
                continue
            end = float((packet.pts + (packet.duration or 0)) * packet.time_base)
            ends[packet.stream.index] = max(ends.get(packet.stream.index, 0.0), end)
        out["video_end"] = ends[c.streams.video[0].index] if c.streams.video else None
        out["audio_end"] = ends[c.streams.audio[0].index] if c.streams.audio else None
    return out


def cached_boxes(cache_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """(boxes y1 y2 x1 x2, has_face) from the one detection-cache file a run left."""
    files = sorted(Path(cache_dir).glob("*.npz"))
    assert len(files) == 1, f"expected one detection cache file, found {files}"
    with np.load(files[0]) as z:
        return np.asarray(z["boxes"]), np.asarray(z["has_face"], bool)


def psnr(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    d = a.astype(np.float64)[mask] - b.astype(np.float64)[mask]
    mse = float(np.mean(d * d))
    return float("inf") if mse == 0 else 10 * math.log10(255.0 ** 2 / mse)


def mouth(box) -> tuple[slice, slice]:
    """The mouth/jaw part of a face box (y1, y2, x1, x2): where every blend writes the model's face."""
    y1, y2, x1, x2 = (int(v) for v in box)
    h, w = y2 - y1, x2 - x1
    return slice(y1 + int(0.6 * h), y1 + int(0.88 * h)), slice(x1 + int(0.3 * w), x1 + int(0.7 * w))


def check_face_edit(out_frames, src_frames, boxes) -> None:
    """Outside the union of the face boxes the output is the source (up to H.264 noise); in the
    mouth region it clearly is not."""
    h, w = src_frames[0].shape[:2]
    outside = np.ones((h, w), bool)
    for y1, y2, x1, x2 in boxes:
        outside[y1:y2, x1:x2] = False
    assert outside.mean() > 0.3, "face boxes cover most of the frame; the check would be meaningless"
    for k, (out, src, box) in enumerate(zip(out_frames, src_frames, boxes)):
        assert out.shape == src.shape
        p = psnr(out, src, outside)
        assert p > 30, f"frame {k}: outside the face boxes PSNR {p:.1f} dB (source not preserved)"
        noise = float(np.abs(out.astype(np.int16) - src)[outside].mean())
        ys, xs = mouth(box)
        changed = float(np.abs(out[ys, xs].astype(np.int16) - src[ys, xs]).mean())
        assert changed > max(6.0, 4 * noise), \
            f"frame {k}: mouth region differs by {changed:.2f} only (encoding noise {noise:.2f})"


def stamped_clip(tmp_path: Path, n: int) -> tuple[list[np.ndarray], Path]:
    """A lossless 25 fps clip of vretalk_face2's first n frames, each stamped with its index (a
    white square at a position of its own, above the face box)."""
    frames = face2_frames(n)
    for i, f in enumerate(frames):
        cv2.rectangle(f, (10 + 80 * i, 10), (70 + 80 * i, 70), (255, 255, 255), -1)
    return frames, write_lossless(tmp_path / "stamped.mp4", frames)


def frames_shown(path, frames: list[np.ndarray]) -> list[int]:
    """Which of the stamped `frames` each frame of the video at `path` shows."""
    strip = (slice(0, 90), slice(None))
    shown = []
    for _, f in decode_video(path):
        err = [np.abs(f[strip].astype(np.int16) - s[strip]).mean() for s in frames]
        assert min(err) < 3, "a frame that is none of the stamped ones"
        shown.append(int(np.argmin(err)))
    return shown


# The face box of the conformance data in vretalk_face2 (a fixed box: no detection).
CONFORMANCE_BOX = tuple(int(v) for v in np.load(CONFORMANCE / "model_io.npz")["box"])


@pytest.fixture
def make_request(checkpoint, blazeface_dir, tmp_path):
    """A request with this test's own detection cache, fp32 on CPU."""
    def make(face, audio, out=None, **kw) -> LipSyncRequest:
        kw.setdefault("detector_weights", str(blazeface_dir / "blazeface.pth"))
        kw.setdefault("cache_dir", str(tmp_path / "cache"))
        kw.setdefault("device", "cpu")
        kw.setdefault("precision", "fp32")
        return LipSyncRequest(face=str(face), audio=str(audio), checkpoint=str(checkpoint),
                              out=str(out or tmp_path / "out.mp4"), **kw)
    return make


# ---------------------------------------------------------------------------------------------
# 1. end to end


def test_end_to_end_real_clip_length_streams_and_pixels(make_request, tmp_path):
    """vretalk_face2 (5 s) + 0.53 s of real 44.1 kHz speech, BlazeFace, default feather blend:
    the output stops with the audio."""
    audio = tmp_path / "speech.wav"
    audio_s = write_wav_slice(AUDIO1, audio, 0.53)
    fps = 25.0
    n = math.ceil(audio_s * fps)
    assert n == 14  # 13.25 frames of audio: the last frame is partly covered

    res = run(make_request(FACE2, audio))
    assert (res.frames, res.fps) == (n, fps)
    assert res.frames_with_face == n and res.detected_frames > 0 and not res.cache_hit

    s = stream_summary(res.out)
    assert (s["video"], s["audio"], s["streams"]) == (["h264"], ["aac"], 2)
    assert abs(s["video_end"] - audio_s) <= 1 / fps + 1e-3
    assert abs(s["audio_end"] - audio_s) <= 1 / fps + 1e-3

    out = decode_video(res.out)
    assert len(out) == n
    assert [round(t * fps) for t, _ in out] == list(range(n))
    src = [f for _, f in decode_video(FACE2)[:n]]
    boxes, has_face = cached_boxes(tmp_path / "cache")
    assert len(boxes) == n and has_face.all()
    check_face_edit([f for _, f in out], src, boxes)


def test_end_to_end_audio_from_the_video_itself(make_request, tmp_path):
    """KatieHill 512x512 driven by its own AAC track, cut to 0.5 s with `duration`."""
    duration, fps = 0.5, 25.0
    n = math.ceil(duration * fps)  # 12.5 -> 13
    res = run(make_request(KATIE, KATIE, duration=duration))
    assert res.frames == n and res.frames_with_face == n

    s = stream_summary(res.out)
    assert (s["video"], s["audio"], s["streams"]) == (["h264"], ["aac"], 2)
    assert abs(s["video_end"] - duration) <= 1 / fps + 1e-3
    assert abs(s["audio_end"] - duration) <= 1 / fps + 1e-3
    out = [f for _, f in decode_video(res.out)]
    assert len(out) == n and out[0].shape == (512, 512, 3)
    boxes, _ = cached_boxes(tmp_path / "cache")
    check_face_edit(out, [f for _, f in decode_video(KATIE)[:n]], boxes)


# ---------------------------------------------------------------------------------------------
# 2. the original's hard paste, bit for bit, before encoding


def test_hard_box_paste_matches_the_original_exactly(make_request, checkpoint, tmp_path):
    n_src, batch, n_check, fps = 8, 4, 8, 25
    src = face2_frames(n_src)
    clip = write_lossless(tmp_path / "clip.mp4", src, fps)
    z = np.load(CONFORMANCE / "model_io.npz")
    y1, y2, x1, x2 = (int(v) for v in z["box"])
    # silence="sync": the original drives every frame (hold would keep the source mouth in pauses).
    req = make_request(clip, SPEECH16K, box=(y1, y2, x1, x2), blend="hard", smooth=False, batch_size=batch,
                       silence="sync")

    info = probe_video(clip)
    plan = make_plan(req, info, load_audio(SPEECH16K))
    # The spectrogram agrees with the reference implementation's (conformance data).
    ref_mel = np.load(CONFORMANCE / "mel_reference.npy")
    assert plan.mel.shape == ref_mel.shape
    assert float(np.abs(plan.mel - ref_mel).max()) < 1e-4
    track = find_faces(plan, detection_settings(req, "cpu")[0], cache_dir=None, use_cache=False,
                       progress=_noop, cancel=_never)
    model = load_checkpoint(checkpoint, device="cpu")
    gen = synthesize(plan, track, model, device=torch.device("cpu"), precision="fp32", batch=batch,
                     blend="hard", cancel=_never)
    got = list(itertools.islice(gen, n_check))
    gen.close()
    assert [k for k, _ in got] == list(range(n_check))

    # The original: crop -> 96x96, lower half zeroed copy first, /255, NCHW; mel window by
    # int(i * 80 / fps); output *255 truncated to uint8, resized back into the box.
    starts = json.loads((CONFORMANCE / "mel_chunk_starts.json").read_text())[str(float(fps))]
    assert starts[:n_check] == [int(i * 80 / fps) for i in range(n_check)]
    expected = []
    for b0 in range(0, n_check, batch):
        ks = range(b0, min(b0 + batch, n_check))
        crops = np.stack([cv2.resize(src[k][y1:y2, x1:x2], (96, 96)) for k in ks])
        masked = crops.copy()
        masked[:, 48:] = 0
        faces = np.concatenate((masked, crops), axis=3) / 255.0
        # NCHW in standard (contiguous) layout: a channels-last view would take another conv
        # path and differ by ~1e-6, which the truncating cast can turn into 1-level flips.
        faces = torch.from_numpy(np.ascontiguousarray(faces.transpose(0, 3, 1, 2), dtype=np.float32))
        mels = torch.from_numpy(np.stack([plan.mel[:, starts[k]: starts[k] + 16] for k in ks])[:, None].copy())
        with torch.inference_mode():
            pred = model(mels, faces).numpy().transpose(0, 2, 3, 1) * 255.0
        for p in pred:
            expected.append(cv2.resize(p.astype(np.uint8), (x2 - x1, y2 - y1)))

    for k, frame in got:
        assert np.array_equal(frame[y1:y2, x1:x2], expected[k]), f"frame {k}: box differs from the original's paste"
        outside = frame.copy()
        outside[y1:y2, x1:x2] = src[k][y1:y2, x1:x2]
        assert np.array_equal(outside, src[k]), f"frame {k}: pixels outside the box changed"
        assert not np.array_equal(frame[y1:y2, x1:x2], src[k][y1:y2, x1:x2])


# ---------------------------------------------------------------------------------------------
# 3. variable frame rate and portrait footage


def test_variable_frame_rate_clip_keeps_source_frame_times(make_request):
    duration = 0.5
    times = source_frame_times(FACE1_VFR)
    steps = np.diff(times[:12])
    assert steps.max() - steps.min() > 0.02, "test premise: the clip's first frames are variable-rate"
    n = sum(t < duration - 1e-6 for t in times)

    res = run(make_request(FACE1_VFR, AUDIO1, duration=duration))
    assert res.frames == n and res.frames_with_face == n
    out = decode_video(res.out)
    assert len(out) == n
    got = [t for t, _ in out]
    assert np.allclose(got, times[:n], atol=1e-3), f"output times {got} vs source {times[:n]}"
    assert out[0][1].shape == (700, 700, 3)


def test_portrait_clip(make_request, tmp_path):
    duration, fps = 0.25, 30.0
    n = math.ceil(duration * fps)  # 7.5 -> 8
    res = run(make_request(PORTRAIT, AUDIO1, duration=duration))
    assert res.frames == n and res.frames_with_face == n and res.fps == pytest.approx(fps)
    out = [f for _, f in decode_video(res.out)]
    assert len(out) == n and out[0].shape == (1280, 720, 3)  # 720 wide, 1280 high
    boxes, _ = cached_boxes(tmp_path / "cache")
    check_face_edit(out, [f for _, f in decode_video(PORTRAIT)[:n]], boxes)


# ---------------------------------------------------------------------------------------------
# 4. frames without a face


def test_frames_without_face_pass_through_unchanged(make_request, checkpoint, tmp_path):
    n, gap = 20, range(7, 13)
    frames = face2_frames(n)
    rng = np.random.default_rng(7)
    for i in gap:
        frames[i] = np.full_like(frames[0], 128) if i < 10 else rng.integers(0, 256, frames[0].shape, np.uint8)
    clip = write_lossless(tmp_path / "gap.mp4", frames)
    req = make_request(clip, AUDIO1, duration=n / 25, cache=False)
    info = probe_video(clip)
    plan = make_plan(req, info, load_audio(AUDIO1))
    assert plan.sources == list(range(n))
    track = find_faces(plan, detection_settings(req, "cpu")[0], cache_dir=None, use_cache=False,
                       progress=_noop, cancel=_never)
    assert [i for i in range(n) if not track.has_face[i]] == list(gap)
    out = dict(synthesize(plan, track, load_checkpoint(checkpoint), device=torch.device("cpu"),
                          precision="fp32", batch=16, blend="feather", cancel=_never))
    assert sorted(out) == list(range(n))
    for i in gap:
        assert np.array_equal(out[i], frames[i]), f"frame {i} without a face was modified"
    for i in set(range(n)) - set(gap):  # before and after the gap: lip-synced
        ys, xs = mouth(track.boxes[i])
        assert np.abs(out[i][ys, xs].astype(np.int16) - frames[i][ys, xs]).mean() > 6, f"frame {i} not synced"


def test_clip_without_any_face_is_a_detector_error(make_request, tmp_path):
    rng = np.random.default_rng(3)
    # Blurred noise: BlazeFace reads a face (score 0.58) into raw per-pixel noise when a shot cut
    # makes it look at such a frame, which no camera makes.
    frames = [np.full((256, 256, 3), 128, np.uint8)] * 3 + [
        cv2.GaussianBlur(rng.integers(0, 256, (256, 256, 3), np.uint8), (0, 0), 6) for _ in range(3)]
    clip = write_lossless(tmp_path / "noface.mp4", frames)
    out = tmp_path / "o" / "out.mp4"
    out.parent.mkdir()
    with pytest.raises(DetectorError, match="no face") as e:
        run(make_request(clip, AUDIO1, out=out, duration=0.2))
    assert str(clip) in str(e.value) and "--box" in str(e.value)
    assert list(out.parent.iterdir()) == []


# ---------------------------------------------------------------------------------------------
# 5. still image


def test_still_image_becomes_a_talking_video(make_request, tmp_path):
    import skimage.data

    image = cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR)
    png = tmp_path / "astronaut.png"
    assert cv2.imwrite(str(png), image)
    audio = tmp_path / "a.wav"
    audio_s = write_wav_slice(AUDIO1, audio, 0.45)
    n = math.ceil(audio_s * 25)  # 11.25 -> 12

    res = run(make_request(png, audio))
    assert (res.frames, res.fps, res.frames_with_face) == (n, 25.0, n)
    s = stream_summary(res.out)
    assert (s["video"], s["audio"]) == (["h264"], ["aac"])
    out = decode_video(res.out)
    assert [round(t * 25) for t, _ in out] == list(range(n))
    boxes, _ = cached_boxes(tmp_path / "cache")
    assert len(boxes) == 1  # one source frame, detected once
    check_face_edit([f for _, f in out], [image] * n, [boxes[0]] * n)


# ---------------------------------------------------------------------------------------------
# 6. audio longer / shorter than the video


def _bounce(first: int, count: int, n_out: int) -> list[int]:
    """first, first+1, ..., first+count-1, first+count-2, ..., first, first+1, ... (n_out items)."""
    seq, i, step = [], 0, 1
    while len(seq) < n_out:
        seq.append(first + i)
        if count > 1 and not 0 <= i + step < count:
            step = -step
        i += step if count > 1 else 0
    return seq


@pytest.mark.parametrize("start_frame", [0, 30])
def test_long_audio_plays_the_clip_forward_then_backward(make_request, tmp_path, start_frame):
    audio = tmp_path / "three.wav"
    audio_s = write_wav_slice(AUDIO1, audio, 3.0)
    info = probe_video(FACE2)
    plan = make_plan(make_request(FACE2, audio, frames=40, start_frame=start_frame), info, load_audio(audio))
    n_out = math.ceil(audio_s * 25)
    assert len(plan.sources) == n_out == 75
    assert plan.sources[:41] == list(range(start_frame, start_frame + 40)) + [start_frame + 38]
    assert plan.sources == _bounce(start_frame, 40, n_out)
    assert all(abs(b - a) == 1 for a, b in zip(plan.sources, plan.sources[1:])), "jump cut"
    assert plan.times == pytest.approx([k / 25 for k in range(n_out)])


def test_short_audio_stops_the_video_with_the_audio(make_request, tmp_path):
    audio = tmp_path / "one.wav"
    audio_s = write_wav_slice(AUDIO1, audio, 1.1)
    plan = make_plan(make_request(FACE2, audio), probe_video(FACE2), load_audio(audio))
    n = math.ceil(audio_s * 25)
    assert plan.sources == list(range(n)) and plan.duration == pytest.approx(audio_s, abs=1e-4)


def test_ping_pong_in_the_encoded_output(make_request, tmp_path):
    """Frames stamped with their index (a marker outside the face box) so each output frame
    shows which source frame it came from."""
    frames, clip = stamped_clip(tmp_path, 10)
    duration = 0.5
    res = run(make_request(clip, AUDIO1, frames=6, duration=duration, box=CONFORMANCE_BOX))
    n = math.ceil(duration * 25)
    assert res.frames == n
    shown = frames_shown(res.out, frames)
    assert len(shown) == n
    assert shown == [0, 1, 2, 3, 4, 5, 4, 3, 2, 1, 0, 1, 2]


# ---------------------------------------------------------------------------------------------
# 7. detection cache


def test_detection_cache_reused_for_new_audio_and_bypassed(make_request, tmp_path):
    cache = tmp_path / "cache"
    first = run(make_request(FACE2, AUDIO1, out=tmp_path / "a.mp4", duration=0.2))
    assert not first.cache_hit and first.detected_frames > 0
    (entry,) = cache.glob("*.npz")
    stamp = entry.stat().st_mtime_ns

    second = run(make_request(FACE2, IMAGINE, out=tmp_path / "b.mp4", duration=0.2))
    assert second.cache_hit and second.detected_frames == 0
    assert second.frames_with_face == second.frames == 5

    third = run(make_request(FACE2, IMAGINE, out=tmp_path / "c.mp4", duration=0.2, cache=False))
    assert not third.cache_hit and third.detected_frames > 0
    # neither read nor (re)written
    assert sorted(cache.iterdir()) == [entry] and entry.stat().st_mtime_ns == stamp


# ---------------------------------------------------------------------------------------------
# 8. cancel


def test_cancel_during_sync_stops_within_a_batch_and_leaves_nothing(make_request, tmp_path):
    folder = tmp_path / "o"
    folder.mkdir()
    out = folder / "out.mp4"
    calls: list[tuple[str, int, int]] = []
    cancelled_at: list[int] = []

    def progress(stage, done, total):
        calls.append((stage, done, total))
        if stage == "sync" and done > 0 and not cancelled_at:
            cancelled_at.append(len(calls))

    batch = 4
    req = make_request(FACE2, AUDIO1, out=out, duration=0.6, batch_size=batch, box=(225, 608, 192, 565))
    with pytest.raises(Cancelled):
        run(req, progress=progress, cancel=lambda: bool(cancelled_at))
    assert cancelled_at, "sync progress never reported"
    assert calls[cancelled_at[0] - 1] == ("sync", batch, 15)
    after = [c for c in calls[cancelled_at[0]:] if c[0] == "sync"]
    assert len(after) <= 1 and all(done <= 2 * batch for _, done, _ in after), f"kept going: {after}"
    assert list(folder.iterdir()) == []


def test_cancel_during_detection_leaves_nothing(make_request, tmp_path):
    folder = tmp_path / "o"
    folder.mkdir()
    seen: list[str] = []
    with pytest.raises(Cancelled):
        run(make_request(FACE2, AUDIO1, out=folder / "out.mp4", duration=1.0),
            progress=lambda stage, done, total: seen.append(stage), cancel=lambda: "detect" in seen)
    assert "sync" not in seen
    assert list(folder.iterdir()) == []
    assert not (tmp_path / "cache").exists() or not list((tmp_path / "cache").glob("*.npz"))


# ---------------------------------------------------------------------------------------------
# 9. bad input


def test_missing_face_file(make_request, tmp_path):
    missing = tmp_path / "nope.mp4"
    with pytest.raises(Wav2LipError, match="not found") as e:
        run(make_request(missing, AUDIO1))
    assert str(missing) in str(e.value)
    assert not (tmp_path / "out.mp4").exists()


def test_corrupt_video(make_request, tmp_path):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(np.random.default_rng(1).integers(0, 256, 50_000, np.uint8).tobytes())
    with pytest.raises(MediaError, match="not a readable video") as e:
        run(make_request(bad, AUDIO1))
    assert str(bad) in str(e.value)
    assert not (tmp_path / "out.mp4").exists()


def test_audio_without_samples(make_request, tmp_path):
    empty = tmp_path / "empty.wav"
    with wave.open(str(empty), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(b"")
    with pytest.raises(AudioError, match="no audio samples") as e:
        run(make_request(FACE2, empty))
    assert str(empty) in str(e.value)
    assert not (tmp_path / "out.mp4").exists()


@pytest.mark.parametrize("how", ["face", "audio", "dot-path", "symlink"])
def test_output_equal_to_an_input_is_refused(make_request, tmp_path, how):
    face = tmp_path / "face.mp4"
    face.write_bytes(FACE2.read_bytes())
    audio = tmp_path / "audio.wav"
    write_wav_slice(AUDIO1, audio, 0.5)
    before = {p: p.read_bytes() for p in (face, audio)}
    out = {"face": face, "audio": audio, "dot-path": tmp_path / ".." / tmp_path.name / "face.mp4",
           "symlink": tmp_path / "link.mp4"}[how]
    if how == "symlink":
        out.symlink_to(face)
    with pytest.raises(MediaError, match="refusing to overwrite"):
        run(make_request(face, audio, out=out, box=(225, 608, 192, 565)))
    assert {p: p.read_bytes() for p in before} == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "cache") == sorted(
        ["face.mp4", "audio.wav"] + (["link.mp4"] if how == "symlink" else []))


def test_unwritable_output_folder(make_request, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("a regular file, not a folder")
    out = blocker / "out.mp4"
    with pytest.raises(MediaError, match="output folder") as e:
        run(make_request(FACE2, AUDIO1, out=out, duration=0.2, box=(225, 608, 192, 565)))
    assert str(blocker) in str(e.value)
    assert blocker.read_text() == "a regular file, not a folder"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_missing_detector_weights(make_request, tmp_path):
    weights = tmp_path / "no_such_dir" / "blazeface.pth"
    with pytest.raises(DetectorError) as e:
        run(make_request(FACE2, AUDIO1, duration=0.2, detector_weights=str(weights)))
    assert str(weights) in str(e.value) and "not found" in str(e.value)
    assert not (tmp_path / "out.mp4").exists()


# ---------------------------------------------------------------------------------------------
# 9. clip times (how an editor shows a clip), out-of-memory back-off


def test_source_times_show_the_frame_on_screen_and_hold_the_last(make_request, tmp_path):
    """Variable-rate clip shown by time at a nominal 30 fps for more frames than it has: each
    output frame shows the frame whose time span contains the asked time, and past the end the
    last frame is held (never played backwards)."""
    truth = source_frame_times(FACE1_VFR)  # from the packets, independently of the core
    n_asked = 200  # Blender counts 183 frames (6.1 s at 30 fps); ask for more than the clip has
    times = [k / 30 for k in range(n_asked)]
    req = make_request(FACE1_VFR, AUDIO1, fps=30.0, duration=n_asked / 30, source_times=tuple(times))
    plan = make_plan(req, probe_video(FACE1_VFR), load_audio(AUDIO1))
    expected = [max(j for j, ft in enumerate(truth) if ft <= t + 1e-3) for t in times]
    assert len(plan.sources) == n_asked
    assert plan.sources == expected
    assert expected[-1] == len(truth) - 1 and expected.count(len(truth) - 1) > 10  # held at the end
    assert all(b >= a for a, b in zip(plan.sources, plan.sources[1:])), "played backwards"


def test_source_times_in_the_encoded_output(make_request, tmp_path):
    frames, clip = stamped_clip(tmp_path, 6)  # 25 fps
    asked = [0.0, 0.035, 0.04, 0.1, 0.2, 0.5, 9.0]  # 0.035 s is still frame 0 at 25 fps
    res = run(make_request(clip, AUDIO1, fps=25.0, duration=len(asked) / 25, source_times=tuple(asked),
                           box=CONFORMANCE_BOX))
    assert frames_shown(res.out, frames) == [0, 0, 1, 2, 5, 5, 5]


def test_out_of_memory_halves_the_batch_for_the_rest_of_the_run(make_request, monkeypatch, tmp_path):
    """A model that runs out of memory above 4 frames: the first batch backs off 16 -> 8 -> 4, and
    every later batch starts at 4 instead of failing at 16 and 8 again."""
    import torch

    from wav2lip_core.model import checkpoint as model_mod

    real_load = model_mod.load_checkpoint
    calls: list[int] = []

    class SmallMemory(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, mel, face):
            calls.append(len(face))
            if len(face) > 4:
                raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
            return self.inner(mel, face)

    monkeypatch.setattr(model_mod, "load_checkpoint", lambda *a, **k: SmallMemory(real_load(*a, **k)))
    z = np.load(CONFORMANCE / "model_io.npz")
    notes: list[str] = []
    # runtime torch: the stand-in model is a torch module (auto would pick OpenVINO on a CPU).
    res = run(make_request(FACE2, AUDIO1, duration=1.0, batch_size=16, box=tuple(int(v) for v in z["box"]),
                           runtime="torch"), note=notes.append)
    assert res.frames == 25 and res.batch_size == 4
    assert calls[:3] == [16, 8, 4]
    assert max(calls[3:]) == 4 and sum(c for c in calls if c <= 4) == 25
    assert notes == ["the GPU ran out of memory: continuing with batch size 8",
                     "the GPU ran out of memory: continuing with batch size 4"]


def test_audible_window_silences_the_sound_outside_it(make_request, tmp_path):
    """A sound strip trimmed inside the clip's range: the model hears silence outside the window
    (the same features as a silent input there) and the sound itself inside it."""
    info = probe_video(FACE2)
    wav = load_audio(AUDIO1)
    full = make_plan(make_request(FACE2, AUDIO1, duration=3.0), info, wav)
    cut = make_plan(make_request(FACE2, AUDIO1, duration=3.0, audible=(1.0, 2.0)), info, wav)
    silent = make_plan(make_request(FACE2, AUDIO1, duration=3.0), info, np.zeros_like(wav))
    per_s = 80  # mel columns per second (hop 200 at 16 kHz)
    assert np.array_equal(cut.mel[:, : per_s - 4], silent.mel[:, : per_s - 4])
    assert np.array_equal(cut.mel[:, 2 * per_s + 4:], silent.mel[:, 2 * per_s + 4:])
    inside = slice(per_s + 4, 2 * per_s - 4)
    assert np.array_equal(cut.mel[:, inside], full.mel[:, inside])
    assert not np.array_equal(full.mel[:, inside], silent.mel[:, inside])  # the window is not silence anyway
    with pytest.raises(Wav2LipError, match="--audible"):
        check_request(make_request(FACE2, AUDIO1, audible=(2.0, 1.0)))


def test_audible_window_in_the_encoded_sound(make_request, tmp_path):
    """The output file's own sound is the audible window too (silence around it), so the synced
    clip plays what the lips were synced to."""
    z = np.load(CONFORMANCE / "model_io.npz")
    res = run(make_request(FACE2, AUDIO1, duration=1.2, audible=(0.4, 0.8), box=tuple(int(v) for v in z["box"])))
    with av.open(res.out) as c:
        rate = c.streams.audio[0].codec_context.sample_rate
        pcm = np.concatenate([f.to_ndarray()[0] for f in c.decode(audio=0)])  # AAC decodes to planar float

    def rms(a: float, b: float) -> float:
        seg = pcm[int(a * rate): int(b * rate)].astype(np.float64)
        return float(np.sqrt(np.mean(seg * seg)))

    assert rms(0.0, 0.35) < 1e-3 and rms(0.85, 1.2) < 1e-3
    assert rms(0.45, 0.75) > 0.01
