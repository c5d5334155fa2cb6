"""Pick Face without Blender: pick_map's arithmetic with hand-checked numbers, and the engine's
command line (sync_request.py) for no pick, one pick and two picks, read back by the core's own
parser of JOBS lines (jobs_export.job_line)."""

from __future__ import annotations

import math

import pytest

from ._load import load

pm = load("pick_map")
sr = load("sync_request")
jf = load("jobs_export")

# A 100 x 50 clip in a 200 x 100 frame: centred at (50, 25) .. (150, 75) (frame, y up).
BASE = dict(clip_w=100, clip_h=50, frame_w=200, frame_h=100)


def close(a, b, tol=1e-9):
    return a is not None and all(abs(x - y) <= tol for x, y in zip(a, b))


@pytest.mark.parametrize("extra, clip, view", [
    ({}, (0, 0), (-50, 25)),  # top left corner: frame (50, 75)
    ({}, (100, 50), (50, -25)),
    ({}, (50, 25), (0, 0)),  # the clip's centre is the frame's
    # offset (10, -5), scale 2 about the centre: (0, 0) is 100 left and 50 up of the centre (50, 25)
    (dict(offset_x=10, offset_y=-5, scale_x=2, scale_y=2), (0, 0), (-90, 45)),
    # a quarter turn counter-clockwise: the right edge's middle goes to the top
    (dict(rotation=math.pi / 2), (100, 25), (0, 50)),
    # origin at the image's bottom left (frame point (50, 25)), scale 2: the bottom right corner
    # goes 200 px right of it, to frame (250, 25)
    (dict(origin=(0.0, 0.0), scale_x=2, scale_y=2), (100, 50), (150, -25)),
    # flip x mirrors the whole frame: the top left corner shows at the top right
    (dict(flip_x=True), (0, 0), (50, 25)),
    (dict(flip_y=True), (0, 0), (-50, -25)),
    # flip in the image (before the transform) with an offset: mirrored about the image, then moved
    (dict(flip_x=True, flip_in_image=True, offset_x=30), (0, 0), (80, 25)),
])
def test_clip_to_view_and_back_hand_checked(extra, clip, view):
    p = pm.Placement(**BASE, **extra)
    assert close(pm.clip_to_view(p, *clip), view)
    assert close(pm.view_to_clip(p, *view), clip)


def test_centring_truncates_like_c_integer_division():
    p = pm.Placement(clip_w=101, clip_h=51, frame_w=200, frame_h=100)  # (200 - 101) / 2 -> 49, not 49.5
    assert close(pm.clip_to_frame(p, 0, 51), (49, 24))
    q = pm.Placement(clip_w=301, clip_h=51, frame_w=200, frame_h=100)  # -101 / 2 -> -50 (toward zero)
    assert close(pm.clip_to_frame(q, 0, 51), (-50, 24))


def test_crop_and_outside_give_nothing():
    p = pm.Placement(**BASE, crop=(10, 0, 5, 0))  # left 10, top 5 cropped off
    assert pm.view_to_clip(p, -45, 0) is None  # clip x 5: cropped
    assert close(pm.view_to_clip(p, -35, 0), (15, 25))
    assert pm.view_to_clip(p, 0, 23) is None  # clip y 2: under the top crop
    assert pm.view_to_clip(p, 60, 0) is None  # right of the clip
    assert pm.view_to_clip(pm.Placement(**BASE, scale_x=0), 0, 0) is None


def test_pixel_boxes_and_labels():
    p = pm.Placement(**BASE)
    assert pm.pixel((99.99, 0.2), p) == (99, 0) and pm.pixel((100.0, 50.0), p) == (99, 49)
    boxes = [[0, 0, 60, 50], [10, 10, 30, 30], [70, 5, 95, 40]]
    assert pm.box_at(boxes, 20, 20) == 1  # inside two: the smaller one
    assert pm.box_at(boxes, 50, 40) == 0 and pm.box_at(boxes, 65, 45) is None
    assert pm.box_centre(boxes[2]) == (82, 22)
    assert [pm.side(x, 90) for x in (0, 29, 30, 59, 60, 89)] == ["left", "left", "centre", "centre", "right", "right"]
    quad = pm.box_outline(pm.Placement(**BASE, rotation=math.pi), [0, 0, 100, 50])
    assert close(quad[0], (50, -25), 1e-6) and close(quad[2], (-50, 25), 1e-6)  # a half turn


def _request(**kw):
    base = dict(source_name="Face", source_channel=2, face_path="/m/face.mp4", is_image=False, scene_fps=25.0,
                insert_frame=10, used_frames=50, start_frame=0, audio_path="/m/a.wav", audio_start=-0.4,
                duration=2.0, audible=(0.4, 2.0))
    base.update(kw)
    return sr.SyncRequest(**base)


ARGS = dict(checkpoint="/w.pth", out="/o.mp4", detector="blazeface", device="cpu")
HEAD = ["--face", "/m/face.mp4"]
COMMON = ["--checkpoint", "/w.pth", "--out", "/o.mp4", "--fps", "25"]
TAIL = ["--duration", "2", "--progress", "json", "--protocol", "5"]
END = ["--start-frame", "0", "--frames", "50", "--detector", "blazeface", "--device", "cpu"]


def test_argv_without_picks_is_unchanged():
    assert _request().engine_args(**ARGS) == (
        HEAD + ["--audio", "/m/a.wav"] + COMMON + ["--audio-start", "-0.4"] + TAIL + ["--audible", "0.4", "2"] + END)


def test_argv_with_one_pick_follows_that_face_with_the_usual_audio():
    req = _request(speakers=(sr.Speaker(x=120, y=80, face_time=1.5, audio_path="/m/a.wav", audio_at=0.4),))
    assert req.engine_args(**ARGS) == (
        HEAD + ["--audio", "/m/a.wav"] + COMMON + ["--audio-start", "-0.4"] + TAIL + ["--audible", "0.4", "2"]
        + ["--face-at", "120", "80", "--face-time", "1.5"] + END)


def test_argv_with_two_picks_gives_each_its_sound_and_no_audio():
    req = _request(speakers=(sr.Speaker(x=120, y=80, face_time=1.5, audio_path="/m/a.wav", audio_at=0.4),
                             sr.Speaker(x=500, y=90, face_time=0.04, audio_path="/m/b@2.wav", audio_at=-1.25)))
    argv = req.engine_args(**ARGS)
    assert argv == (HEAD + COMMON + TAIL + ["--speaker", "120", "80", "/m/a.wav@0.4", "1.5",
                                            "--speaker", "500", "90", "/m/b@2.wav@-1.25", "0.04"] + END)
    assert "--audio" not in argv and "--audio-start" not in argv and "--audible" not in argv
    # A JOBS line: one list per speaker, numbers as numbers.
    job = jf.job_line(jf.StripRef("Scene", "Face", 10, 50), argv, None)
    assert job["speaker"] == [[120, 80, "/m/a.wav@0.4", 1.5], [500, 90, "/m/b@2.wav@-1.25", 0.04]]
    assert job["duration"] == 2 and job["face"] == "/m/face.mp4" and "audio" not in job
    one = jf.job_line(jf.StripRef("Scene", "Face", 10, 50), _request(
        speakers=(sr.Speaker(x=120, y=80, face_time=1.5),)).engine_args(**ARGS), None)
    assert one["face-at"] == [120, 80] and one["face-time"] == 1.5 and "speaker" not in one
