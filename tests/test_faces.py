"""Face detection stage and detection cache, on real footage with the real BlazeFace weights."""

from __future__ import annotations

import shutil
import socket
from functools import lru_cache

import cv2
import numpy as np
import pytest

from conftest import CONFORMANCE, MEDIA
from wav2lip_core.faces import cache as cache_mod
from wav2lip_core.faces.cache import FaceCache
from wav2lip_core.errors import Cancelled, DetectorError
from wav2lip_core.faces.detectors import DetectorSettings, make_detector
from wav2lip_core.faces.tracking import FaceTrack, iou, pad_boxes, smooth_boxes, track_faces


@lru_cache(maxsize=None)
def _read(name: str, count: int, step: int = 1) -> tuple[np.ndarray, ...]:
    cap = cv2.VideoCapture(str(MEDIA / name))
    out, i = [], 0
    while len(out) < count:
        ok, frame = cap.read()
        if not ok:
            break
        if i % step == 0:
            out.append(frame)
        i += 1
    cap.release()
    assert out, f"cannot read {name}"
    return tuple(out)


def frames(name: str, count: int, step: int = 1) -> list[np.ndarray]:
    return [f.copy() for f in _read(name, count, step)]


def yyxx_to_xyxy(b):
    b = np.asarray(b, np.float64)
    return b[..., [2, 0, 3, 1]]


@pytest.fixture(scope="module")
def front_settings(blazeface_dir) -> DetectorSettings:
    return DetectorSettings(kind="blazeface", weights=str(blazeface_dir / "blazeface.pth"))


@pytest.fixture(scope="module")
def front(front_settings):
    return make_detector(front_settings)


def run(fr, settings, detector=None, **kw):
    return track_faces(enumerate(fr), len(fr), settings, detector=detector, **kw)


# ---------------------------------------------------------------------------------------------
# detection on real footage


def test_blazeface_matches_original_crop_box(front, front_settings):
    fr = frames("vretalk_face2.mp4", 8)
    track = run(fr, front_settings, front)
    assert track.has_face.all()
    assert 0 < track.detected_frames < len(fr)
    ref = np.load(CONFORMANCE / "model_io.npz")["box"]  # the original's S3FD box, padded + smoothed
    for b in track.boxes:
        assert iou(yyxx_to_xyxy(b), yyxx_to_xyxy(ref)) > 0.6, (b, ref)


def test_blazeface_portrait_clip(front, front_settings):
    fr = frames("liveportrait_d13.mp4", 12, step=30)  # spread over the whole clip
    h, w = fr[0].shape[:2]
    assert (h, w) == (1280, 720)
    track = run(fr, front_settings, front)
    assert track.has_face.all()
    y1, y2, x1, x2 = track.boxes.T
    assert ((x2 - x1) > 0.3 * w).all() and ((x2 - x1) < 0.95 * w).all()
    assert ((y1 >= 0) & (y2 <= h) & (x1 >= 0) & (x2 <= w)).all()


def test_face_outside_centre_square_of_portrait_frame(front, front_settings):
    # face_alignment's BlazeFace centre-crops to a square; a face near the top of a tall frame
    # must still be found (the detector letterboxes instead).
    face = cv2.resize(frames("vretalk_face2.mp4", 1)[0], (420, 420), interpolation=cv2.INTER_AREA)
    canvas = np.full((1280, 720, 3), 90, np.uint8)
    canvas[20:440, 150:570] = face
    track = run([canvas] * 3, front_settings, front)
    assert track.has_face.all()
    y1, y2, x1, x2 = track.boxes[0]
    assert 20 <= (y1 + y2) / 2 <= 440 and 150 <= (x1 + x2) / 2 <= 570


def test_blazeface_back_model(blazeface_dir, front, front_settings):
    settings = DetectorSettings(kind="blazeface-back", weights=str(blazeface_dir / "blazefaceback.pth"))
    fr = frames("sadtalker_WDA_KatieHill_000.mp4", 3)
    track = run(fr, settings)
    assert track.has_face.all()
    ref = run(fr, front_settings, front)
    assert iou(yyxx_to_xyxy(track.boxes), yyxx_to_xyxy(ref.boxes)).min() > 0.7


def _moving(base: np.ndarray, n: int, speed: float) -> list[np.ndarray]:
    """The face pasted on a plain canvas, sliding right and down at `speed` px/frame."""
    face = cv2.resize(base, (300, 300), interpolation=cv2.INTER_AREA)
    out = []
    for i in range(n):
        c = np.full((480, 640, 3), 70, np.uint8)
        x = int(10 + speed * i) % 320
        y = int(10 + 0.4 * speed * i) % 160
        c[y : y + 300, x : x + 300] = face
        out.append(c)
    return out


def test_keyframes_stay_close_to_every_frame_detection(front, front_settings):
    from dataclasses import replace

    every = replace(front_settings, keyframe_interval=1, smooth=False, pads=(0, 0, 0, 0))
    keyed = replace(every, keyframe_interval=front_settings.keyframe_interval)
    assert keyed.keyframe_interval > 1
    real = frames("sadtalker_WDA_KatieHill_000.mp4", 25)
    fast = _moving(frames("vretalk_face2.mp4", 1)[0], 21, speed=4.0)  # too fast to interpolate over k
    for fr in (real, fast):
        a = run(fr, every, front)
        b = run(fr, keyed, front)
        assert a.detected_frames == len(fr)
        assert b.detected_frames < len(fr)
        assert (a.has_face == b.has_face).all() and a.has_face.all()
        ious = iou(yyxx_to_xyxy(b.boxes), yyxx_to_xyxy(a.boxes))
        assert ious.min() > 0.8, ious.min()
    # the fast one needed the in-between frames (bisection), the real one mostly not
    assert b.detected_frames > len(fast) // keyed.keyframe_interval + 1


def test_frames_without_face(front, front_settings):
    fr = frames("vretalk_face2.mp4", 30)
    rng = np.random.default_rng(0)
    grey = np.full_like(fr[0], 128)
    noise = cv2.GaussianBlur(rng.integers(0, 256, fr[0].shape, dtype=np.uint8), (0, 0), 6)
    empty = {0: grey, 7: noise, 16: grey, 17: grey, 29: noise}
    for i, img in empty.items():
        fr[i] = img
    track = run(fr, front_settings, front)
    assert sorted(np.flatnonzero(~track.has_face)) == sorted(empty)
    assert track.detected_frames < len(fr)


def test_no_face_anywhere_is_one_line_error(front, front_settings):
    grey = [np.full((240, 320, 3), 128, np.uint8)] * 4
    with pytest.raises(DetectorError) as e:
        run(grey, front_settings, front, source="/clips/empty.mp4")
    msg = str(e.value)
    assert "\n" not in msg and "/clips/empty.mp4" in msg and "--box" in msg


def _two_faces(n: int):
    """Frames with a large (400 px) and a small (260 px) copy of a real face, both moving; with
    the top-left corner of each per frame."""
    base = frames("vretalk_face2.mp4", 1)[0]
    big = cv2.resize(base, (400, 400), interpolation=cv2.INTER_AREA)
    small = cv2.resize(base, (260, 260), interpolation=cv2.INTER_AREA)
    fr, big_at, small_at = [], [], []
    for i in range(n):
        c = np.full((560, 760, 3), 60, np.uint8)
        bx, by = 10 + 4 * i, 60
        sx, sy = 480 - 3 * i, 20 + 5 * i
        c[sy : sy + 260, sx : sx + 260] = small
        c[by : by + 400, bx : bx + 400] = big
        fr.append(c)
        big_at.append((bx, by))
        small_at.append((sx, sy))
    return fr, big_at, small_at


def test_follows_the_larger_of_two_faces(front, front_settings):
    fr, big_at, _ = _two_faces(24)
    # both faces are visible to the detector, so choosing matters
    assert len(front.detect(cv2.cvtColor(fr[0], cv2.COLOR_BGR2RGB))) >= 2
    track = run(fr, front_settings, front)
    assert track.has_face.all()
    for (y1, y2, x1, x2), (bx, by) in zip(track.boxes, big_at):
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        assert bx < cx < bx + 400 and by < cy < by + 400


def test_face_at_follows_the_face_the_user_points_at(front, front_settings):
    from dataclasses import replace

    fr, _, small_at = _two_faces(12)
    track = run(fr, replace(front_settings, face_at=(480 + 130, 20 + 140)), front)
    assert track.has_face.all()
    for (y1, y2, x1, x2), (sx, sy) in zip(track.boxes, small_at):
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        assert sx < cx < sx + 260 and sy < cy < sy + 260
    assert replace(front_settings, face_at=(1, 2)).cache_key_fields() != front_settings.cache_key_fields()


def test_smoothing_off_and_on(front, front_settings):
    from dataclasses import replace

    fr = frames("sadtalker_WDA_KatieHill_000.mp4", 20)
    raw = run(fr, replace(front_settings, smooth=False), front)
    smooth = run(fr, front_settings, front)
    assert not np.array_equal(raw.boxes, smooth.boxes)
    expect = smooth_boxes(raw.boxes.astype(float), raw.has_face)
    assert np.abs(smooth.boxes - expect).max() <= 1


# ---------------------------------------------------------------------------------------------
# padding and smoothing, by hand


def test_padding_as_original():
    boxes = np.array([[100.0, 50.0, 300.0, 260.0], [5.0, 3.0, 630.0, 475.0]])  # x1 y1 x2 y2
    out = pad_boxes(boxes, (10, 20, 30, 40), height=480, width=640)
    # y1 - top, y2 + bottom, x1 - left, x2 + right, clipped to the frame
    np.testing.assert_array_equal(out, [[70, 40, 340, 280], [0, 0, 640, 480]])
    np.testing.assert_array_equal(pad_boxes(boxes, (0, 10, 0, 0), 480, 640)[0], [100, 50, 300, 270])


def test_centred_smoothing_is_symmetric_around_a_step():
    x = np.array([0.0] * 5 + [10.0] * 5)
    boxes = np.stack([x, x, x + 100, x + 100], axis=1)
    s = smooth_boxes(boxes, np.ones(10, bool))[:, 0]
    np.testing.assert_allclose(s, [0, 0, 0, 2, 4, 6, 8, 10, 10, 10])
    np.testing.assert_allclose(s[:5] + s[::-1][:5], 10)  # symmetric about the step at 4.5
    # the original forward mean over i..i+4 moves early: frame 1 already shifts
    fwd = [x[i : i + 5].mean() if i + 5 <= 10 else x[5:].mean() for i in range(10)]
    assert fwd[1] == 2 and s[1] == 0


def test_smoothing_skips_frames_without_face_and_cuts():
    x = np.array([0.0, 10.0, 999.0, 20.0, 30.0, 40.0])
    boxes = np.stack([x, x, x + 1, x + 1], axis=1)
    has = np.array([True, True, False, True, True, True])
    s = smooth_boxes(boxes, has)[:, 0]
    np.testing.assert_allclose(s[[0, 1, 3, 4, 5]], [5, 10, 25, 30, 30])
    runs = np.array([0, 0, 0, 1, 1, 1])
    s = smooth_boxes(boxes, has, runs)[:, 0]
    np.testing.assert_allclose(s[[0, 1, 3, 4, 5]], [5, 5, 30, 30, 30])


# ---------------------------------------------------------------------------------------------
# settings, weights, fixed box, cancel


class _NoNetwork:
    def __init__(self, monkeypatch):
        self.attempts = []

        def refuse(*args, **kwargs):
            self.attempts.append(args)
            raise OSError("network disabled in tests")

        monkeypatch.setattr(socket.socket, "connect", refuse)
        monkeypatch.setattr(socket, "create_connection", refuse)
        monkeypatch.setattr(socket, "getaddrinfo", refuse)


def test_missing_blazeface_weights(tmp_path, monkeypatch, blazeface_dir):
    net = _NoNetwork(monkeypatch)
    missing = tmp_path / "nowhere" / "blazeface.pth"
    with pytest.raises(DetectorError) as e:
        make_detector(DetectorSettings(kind="blazeface", weights=str(missing)))
    assert str(missing) in str(e.value) and "--detector-weights" in str(e.value)
    # weights there but the anchors beside them missing
    shutil.copy(blazeface_dir / "blazefaceback.pth", tmp_path / "blazefaceback.pth")
    with pytest.raises(DetectorError) as e:
        make_detector(DetectorSettings(kind="blazeface-back", weights=str(tmp_path / "blazefaceback.pth")))
    assert str(tmp_path / "anchorsback.npy") in str(e.value)
    # default location: the torch hub cache, never a download
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(DetectorError) as e:
        make_detector(DetectorSettings(kind="blazeface"))
    assert str(tmp_path / "torch" / "hub" / "checkpoints" / "blazeface.pth") in str(e.value)
    assert net.attempts == []


def test_missing_s3fd_weights(tmp_path, monkeypatch):
    net = _NoNetwork(monkeypatch)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(DetectorError) as e:
        make_detector(DetectorSettings(kind="s3fd"))
    expected = tmp_path / "torch" / "hub" / "checkpoints" / "s3fd-619a316812.pth"
    assert str(expected) in str(e.value) and "\n" not in str(e.value)
    explicit = tmp_path / "my_s3fd.pth"
    with pytest.raises(DetectorError) as e:
        make_detector(DetectorSettings(kind="s3fd", weights=str(explicit)))
    assert str(explicit) in str(e.value)
    assert net.attempts == []


def test_unreadable_weights_file(tmp_path, blazeface_dir):
    bad = tmp_path / "blazeface.pth"
    bad.write_bytes(b"not a checkpoint")
    shutil.copy(blazeface_dir / "anchors.npy", tmp_path / "anchors.npy")
    with pytest.raises(DetectorError) as e:
        make_detector(DetectorSettings(kind="blazeface", weights=str(bad)))
    assert str(bad) in str(e.value) and "\n" not in str(e.value)


def test_bad_settings():
    with pytest.raises(DetectorError):
        DetectorSettings(kind="mtcnn")
    with pytest.raises(DetectorError):
        DetectorSettings(kind="box")
    with pytest.raises(DetectorError):
        DetectorSettings(box=(100, 50, 0, 10))


def test_fixed_box():
    def never():
        raise AssertionError("a fixed box needs no frames")
        yield

    settings = DetectorSettings(box=(10, 200, 20, 220), pads=(5, 5, 5, 5))
    assert settings.kind == "box"
    track = track_faces(never(), 7, settings)
    assert track.detected_frames == 0 and track.has_face.all()
    assert track.boxes.dtype == np.int32
    np.testing.assert_array_equal(track.boxes, np.tile([10, 200, 20, 220], (7, 1)))


def test_cancel_and_progress(front, front_settings):
    fr = frames("vretalk_face2.mp4", 12)
    calls = []
    track = run(fr, front_settings, front, progress=lambda d, t: calls.append((d, t)))
    assert track.has_face.all() and calls[-1] == (12, 12)
    assert all(a[0] <= b[0] for a, b in zip(calls, calls[1:]))
    seen = []

    def gen():
        for i, f in enumerate(fr):
            seen.append(i)
            yield i, f

    with pytest.raises(Cancelled):
        track_faces(gen(), len(fr), front_settings, detector=front, cancel=lambda: len(seen) >= 4)
    assert len(seen) <= 5


# ---------------------------------------------------------------------------------------------
# cache


def _track(n=6) -> FaceTrack:
    rng = np.random.default_rng(1)
    return FaceTrack(
        boxes=rng.integers(0, 500, (n, 4)).astype(np.int32), has_face=rng.random(n) > 0.3, detected_frames=3
    )


def test_cache_round_trip(tmp_path, front_settings):
    video = tmp_path / "v.mp4"
    shutil.copy(MEDIA / "vretalk_face2.mp4", video)
    c = FaceCache(tmp_path / "cache")
    key = c.key(video, front_settings)
    assert c.load(key) is None
    t = _track()
    c.save(key, t)
    got = c.load(key)
    assert got.from_cache and got.detected_frames == 0
    np.testing.assert_array_equal(got.boxes, t.boxes)
    np.testing.assert_array_equal(got.has_face, t.has_face)
    assert got.boxes.dtype == np.int32 and got.has_face.dtype == bool
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [f"{key}.npz"]  # no temp files left


def test_cache_key(tmp_path, front_settings):
    from dataclasses import replace

    c = FaceCache(tmp_path / "cache")
    a = tmp_path / "a.mp4"
    shutil.copy(MEDIA / "vretalk_face2.mp4", a)
    b = tmp_path / "sub" / "renamed.mp4"
    b.parent.mkdir()
    shutil.copy(a, b)
    k = c.key(a, front_settings)
    assert c.key(b, front_settings) == k  # content, not path
    assert c.key(a, replace(front_settings, device="cuda")) == k
    for other in (
        replace(front_settings, pads=(0, 20, 0, 0)),
        replace(front_settings, smooth=False),
        replace(front_settings, keyframe_interval=1),
        replace(front_settings, max_side=512),
        replace(front_settings, kind="blazeface-back", weights=None),
        DetectorSettings(box=(1, 2, 3, 4)),
    ):
        assert c.key(a, other) != k, other
    data = bytearray(b.read_bytes())
    data[len(data) // 2] ^= 1
    b.write_bytes(bytes(data))
    assert c.key(b, front_settings) != k


def test_cache_key_sampled_for_large_files(tmp_path, monkeypatch, front_settings):
    monkeypatch.setattr(cache_mod, "FULL_HASH_LIMIT", 1 << 20)
    f = tmp_path / "big.bin"
    data = bytearray(np.random.default_rng(2).integers(0, 256, 12 << 20, dtype=np.uint8).tobytes())
    f.write_bytes(bytes(data))
    c = FaceCache(tmp_path / "cache")
    k = c.key(f, front_settings)
    for pos in (100, len(data) - 100):  # header and trailer (moov) edits
        d = bytearray(data)
        d[pos] ^= 1
        f.write_bytes(bytes(d))
        assert c.key(f, front_settings) != k
    f.write_bytes(bytes(data) + b"x")
    assert c.key(f, front_settings) != k


def test_corrupt_cache_file_is_a_miss(tmp_path, front_settings):
    c = FaceCache(tmp_path / "cache")
    key = "0" * 40
    c.folder.mkdir(parents=True)
    c.path(key).write_bytes(b"garbage, e.g. a file cut short by a crash")
    assert c.load(key) is None
    t = _track()
    c.save(key, t)
    np.testing.assert_array_equal(c.load(key).boxes, t.boxes)
    # a valid npz with the wrong contents is a miss too
    np.savez(c.path(key), boxes=np.zeros((3, 2)), has_face=np.ones(3, bool), version=np.int64(1))
    assert c.load(key) is None


def _reference_iou(track) -> float:
    from wav2lip_core.faces.tracking import iou

    ref = np.load(CONFORMANCE / "model_io.npz")["box"]  # the original's S3FD crop box (y1, y2, x1, x2)
    b = track.boxes[0]
    return float(iou(np.array([b[2], b[0], b[3], b[1]]), np.array([ref[2], ref[0], ref[3], ref[1]])))


def test_haar_needs_no_weights_and_matches_the_original_s3fd_box(media):
    from wav2lip_core.media.decode import read_frames
    from wav2lip_core.media.probe import probe_video

    info = probe_video(media / "vretalk_face2.mp4")
    track = track_faces(read_frames(info, range(6)), 6, DetectorSettings(kind="haar"))
    assert track.has_face.all()
    assert _reference_iou(track) > 0.9


def test_blazeface_boxes_are_reshaped_like_s3fd(media, blazeface_dir, monkeypatch):
    """The reshape's constants were tuned on vretalk_face2's reference S3FD box; on another clip
    (a 720x1280 portrait, frames 100-105) the reshaped BlazeFace boxes must still cover what
    the S3FD-shaped Haar boxes cover (Haar matches the original's S3FD box within 7 px), clearly
    better than the raw BlazeFace boxes, which start at the brows."""
    from wav2lip_core.faces import detectors
    from wav2lip_core.media.decode import read_frames
    from wav2lip_core.faces.tracking import iou
    from wav2lip_core.media.probe import probe_video

    info = probe_video(media / "liveportrait_d13.mp4")
    frames = range(100, 106)

    def boxes(kind: str, **kw):
        track = track_faces(((i - frames.start, f) for i, f in read_frames(info, frames)), len(frames),
                            DetectorSettings(kind=kind, smooth=False, pads=(0, 0, 0, 0), **kw))
        assert track.has_face.all()
        return [np.array([b[2], b[0], b[3], b[1]], float) for b in track.boxes]  # x1, y1, x2, y2

    weights = str(blazeface_dir / "blazeface.pth")
    haar = boxes("haar")
    shaped = [float(np.squeeze(iou(b, h))) for b, h in zip(boxes("blazeface", weights=weights), haar)]
    monkeypatch.setattr(detectors, "BLAZE_TO_S3FD_SCALE", 1.0)
    monkeypatch.setattr(detectors, "BLAZE_TO_S3FD_SHIFT", 0.0)
    raw = [float(np.squeeze(iou(b, h))) for b, h in zip(boxes("blazeface", weights=weights), haar)]
    # Measured: reshaped 0.88-0.92, raw 0.71-0.75.
    assert min(shaped) > 0.82, shaped
    assert min(s - r for s, r in zip(shaped, raw)) > 0.08, (shaped, raw)


def test_auto_detector_prefers_blazeface_where_its_weights_are(tmp_path, monkeypatch, blazeface_dir):
    """auto: --detector-weights, then what install.py recorded for this engine, then the hub
    cache; with none of them the bundled Haar cascade, with a note on getting BlazeFace."""
    import json
    import sys

    from wav2lip_core import protocol
    from wav2lip_core.faces.detectors import resolve_detector

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-hub"))
    monkeypatch.setattr(sys, "prefix", str(tmp_path / "venv"))
    kind, weights, line = resolve_detector("auto", None)
    assert (kind, weights) == ("haar", None) and str(tmp_path / "empty-hub") in line

    given = blazeface_dir / "blazeface.pth"
    assert resolve_detector("auto", str(given))[:2] == ("blazeface", str(given))

    (tmp_path / "venv").mkdir()
    (tmp_path / "venv" / protocol.CONFIG_NAME).write_text(json.dumps({protocol.CONFIG_DETECTOR_WEIGHTS: str(given)}))
    kind, weights, line = resolve_detector("auto", None)
    assert (kind, weights) == ("blazeface", str(given)) and line == f"face detector: blazeface ({given})"

    with pytest.raises(DetectorError, match="nowhere"):
        resolve_detector("auto", str(tmp_path / "nowhere" / "blazeface.pth"))
    assert resolve_detector("s3fd", None) == ("s3fd", None, "")  # an explicit choice is kept
    assert resolve_detector("blazeface", None) == ("blazeface", str(given), "")  # with the recorded weights
