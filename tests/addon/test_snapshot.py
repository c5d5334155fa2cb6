"""Scene-time arithmetic of the add-on (pure data, no Blender)."""

from __future__ import annotations

import pytest

from ._load import load

snap = load("snapshot")
StripInfo, plan, SnapshotError = snap.StripInfo, snap.plan, snap.SnapshotError


def movie(**kw):
    base = dict(name="Face", kind="MOVIE", filepath="/m/face.mp4", channel=2, frame_start=10.0,
                final_start=10, final_end=135, frame_duration=125, media_fps=25.0)
    base.update(kw)
    return StripInfo(**base)


def sound(**kw):
    base = dict(name="Speech", kind="SOUND", filepath="/m/speech.wav", channel=1, frame_start=10.0,
                final_start=10, final_end=130, frame_duration=120)
    base.update(kw)
    return StripInfo(**base)


def _args(req, **kw):
    a = req.engine_args(checkpoint="c.pth", out="o.mp4", **kw)
    return {a[i]: a[i + 1] for i in range(0, len(a) - 1) if a[i].startswith("--") and not a[i + 1].startswith("--")}


def test_aligned_strips():
    req = plan(movie(), sound(), 24.0)
    assert (req.insert_frame, req.used_frames, req.start_frame) == (10, 125, 0)
    assert req.audio_start == 0.0 and req.duration == pytest.approx(125 / 24)
    assert req.audio_cut is None  # the sound just ends: silence after it, as in Blender
    a = _args(req, detector="blazeface", detector_weights="/w/bf.pth")
    assert a["--fps"] == "24" and a["--start-frame"] == "0" and a["--frames"] == "125"
    assert a["--audio-start"] == "0" and float(a["--duration"]) == pytest.approx(125 / 24)
    assert a["--detector"] == "blazeface" and a["--progress"] == "json"


def test_trimmed_movie_and_offset_sound():
    # Movie content starts at 10, left handle moved to 20 (10 clip frames trimmed), right to 80.
    v = movie(final_start=20, final_end=80)
    # Sound starts at frame 5: at frame 20 we hear 15 frames = 0.625 s into the file.
    s = sound(frame_start=5.0, final_start=5, final_end=125)
    req = plan(v, s, 24.0)
    assert (req.insert_frame, req.used_frames, req.start_frame) == (20, 60, 10)
    assert req.audio_start == pytest.approx(15 / 24)
    assert req.duration == pytest.approx(60 / 24)
    assert req.audio_cut is None


def test_sound_starting_later_is_negative_audio_start():
    req = plan(movie(), sound(frame_start=34.0, final_start=34, final_end=154), 24.0)
    assert req.audio_start == pytest.approx(-1.0)
    assert req.audio_cut is None and req.notes


def test_hard_trim_and_sound_offset():
    v = movie(frame_start=0.0, final_start=0, final_end=50, frame_duration=100, animation_offset_start=25)
    s = sound(frame_start=0.0, final_start=0, final_end=50, frame_duration=50, sound_offset=1.5,
              animation_offset_start=12)
    req = plan(v, s, 25.0)
    assert req.start_frame == 25
    assert req.audio_start == pytest.approx(12 / 25 - 1.5)  # sound_offset delays the sound


def test_trimmed_sound_inside_video_is_cut_to_what_is_heard():
    # Sound file content spans frames 0..200 but only 40..60 is played (handles trimmed).
    s = sound(frame_start=0.0, final_start=40, final_end=60, frame_duration=200)
    v = movie(frame_start=30.0, final_start=30, final_end=90, frame_duration=125)
    req = plan(v, s, 20.0)
    cut = req.audio_cut
    assert cut is not None
    assert cut.lead == pytest.approx(0.5)  # frames 30..39 silent
    assert (cut.start, cut.end) == (pytest.approx(2.0), pytest.approx(3.0))  # file seconds of frames 40..59
    assert cut.total == pytest.approx(3.0)
    a = _args(req, audio_path="/tmp/heard.wav")
    assert a["--audio"] == "/tmp/heard.wav" and a["--audio-start"] == "0"


def test_image_strip():
    img = movie(kind="IMAGE", filepath="/m/face.png", frame_duration=50, final_start=10, final_end=60)
    req = plan(img, sound(), 30.0)
    assert req.is_image and req.start_frame is None
    a = req.engine_args(checkpoint="c", out="o", box=(1, 2, 3, 4))
    assert "--start-frame" not in a and "--frames" not in a
    assert a[a.index("--box") + 1:a.index("--box") + 5] == ["1", "2", "3", "4"]
    assert "--detector" not in a


@pytest.mark.parametrize("change, match", [
    (dict(speed_factor=2.0), "speed factor"),
    (dict(reversed=True), "reversed"),
    (dict(strobe=3.0), "strobe"),
    (dict(speed_effects=("Speed",)), "Speed Control"),
    (dict(retiming_keys=2, media_frames=250), "retiming"),
    (dict(media_frames=130, media_fps=30.0), "playback rate adjusted from 30 to 24"),
    (dict(final_start=5), "held first/last"),
    (dict(final_end=140), "held first/last"),
    (dict(kind="IMAGE", image_count=10), "image sequence"),
])
def test_refused(change, match):
    with pytest.raises(SnapshotError, match=match):
        plan(movie(**change), sound(), 24.0)


def test_unchanged_speed_with_known_frame_count_is_fine():
    assert plan(movie(media_frames=125, retiming_keys=2), sound(), 24.0).used_frames == 125


def test_sound_refusals():
    with pytest.raises(SnapshotError, match="does not play under"):
        plan(movie(), sound(frame_start=200.0, final_start=200, final_end=300), 24.0)
    with pytest.raises(SnapshotError, match="retimed"):
        plan(movie(), sound(retiming_keys=3), 24.0)


def test_first_free_channel():
    occ = [(3, 0, 100), (4, 50, 60), (5, 200, 300)]
    assert snap.first_free_channel(2, 10, 40, occ) == 4
    assert snap.first_free_channel(2, 40, 70, occ) == 5
    assert snap.first_free_channel(2, 150, 250, occ) == 3


def test_fractional_fps_is_passed_exactly():
    req = plan(movie(), sound(), 30000 / 1001)
    a = _args(req)
    assert float(a["--fps"]) == 30000 / 1001
    assert float(a["--duration"]) * float(a["--fps"]) == pytest.approx(125, abs=1e-9)
