"""Scene-time arithmetic of the add-on (pure data, no Blender)."""

from __future__ import annotations

import pytest

from ._load import load

snap, timing, request = load("snapshot"), load("scene_time"), load("sync_request")
StripInfo, plan, SnapshotError = snap.StripInfo, timing.plan, snap.SnapshotError


def movie(**kw):
    base = dict(name="Face", kind="MOVIE", filepath="/m/face.mp4", channel=2, frame_start=10.0,
                final_start=10, final_end=135, frame_duration=125, media_fps=25.0, media_frames=125)
    base.update(kw)
    return StripInfo(**base)


def sound(**kw):
    base = dict(name="Speech", kind="SOUND", filepath="/m/speech.wav", channel=1, frame_start=10.0,
                final_start=10, final_end=130, frame_duration=120)
    base.update(kw)
    return StripInfo(**base)


def _args(req, **kw):
    kw.setdefault("source_times_path", "/t/times.json")
    a = req.engine_args(checkpoint="c.pth", out="o.mp4", **kw)
    return {a[i]: a[i + 1] for i in range(0, len(a) - 1) if a[i].startswith("--") and not a[i + 1].startswith("--")}


def test_aligned_strips():
    req = plan(movie(), sound(), 24.0)
    assert (req.insert_frame, req.used_frames, req.start_frame) == (10, 125, 0)
    assert req.audio_start == 0.0 and req.duration == pytest.approx(125 / 24)
    assert req.audible is None  # the sound just ends: silence after it, as in Blender
    a = _args(req, detector="blazeface", detector_weights="/w/bf.pth", source_times_path="/t/times.json")
    assert a["--fps"] == "24" and a["--source-times"] == "/t/times.json" and a["--protocol"] == str(request.protocol.PROTOCOL_VERSION)
    assert "--start-frame" not in a  # the times say which frames
    # A 25 fps clip in a 24 fps scene, playback rate not adjusted: one clip frame per scene frame.
    assert req.source_times == pytest.approx([k / 25 for k in range(125)])
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
    assert req.audible is None


def test_sound_starting_later_is_negative_audio_start():
    req = plan(movie(), sound(frame_start=34.0, final_start=34, final_end=154), 24.0)
    assert req.audio_start == pytest.approx(-1.0)
    assert req.audible is None and req.notes


def test_hard_trim_and_sound_offset():
    v = movie(frame_start=0.0, final_start=0, final_end=50, frame_duration=100, animation_offset_start=25)
    s = sound(frame_start=0.0, final_start=0, final_end=50, frame_duration=50, sound_offset=1.5,
              animation_offset_start=12)
    req = plan(v, s, 25.0)
    assert req.start_frame == 25
    assert req.audio_start == pytest.approx(12 / 25 - 1.5)  # sound_offset delays the sound


def test_trimmed_sound_inside_video_is_heard_only_where_it_plays():
    # Sound file content spans frames 0..200 but only 40..60 is played (handles trimmed).
    s = sound(frame_start=0.0, final_start=40, final_end=60, frame_duration=200)
    v = movie(frame_start=30.0, final_start=30, final_end=90, frame_duration=125)
    req = plan(v, s, 20.0)
    assert req.audible == (pytest.approx(0.5), pytest.approx(1.5))  # frames 40..59 of 30..89
    assert req.audio_start == pytest.approx(1.5)  # the file's time at frame 30
    a = req.engine_args(checkpoint="c.pth", out="o.mp4", source_times_path="/t/times.json")
    i = a.index("--audible")
    assert a[i + 1:i + 3] == ["0.5", "1.5"]
    assert _args(req)["--audio"] == s.filepath


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
    (dict(media_frames=130, media_fps=30.0), "retiming"),  # neither 130 nor 130 * 24 / 30 frames long
    (dict(media_fps=0.0, final_start=5), "held first/last"),  # no clip rate: only the index mapping
    (dict(media_fps=0.0, final_end=140), "held first/last"),
    (dict(kind="IMAGE", image_count=10), "image sequence"),
])
def test_refused(change, match):
    with pytest.raises(SnapshotError, match=match):
        plan(movie(**change), sound(), 24.0)


def test_unchanged_speed_with_known_frame_count_is_fine():
    assert plan(movie(media_frames=125, retiming_keys=2), sound(), 24.0).used_frames == 125


def test_unknown_frame_count_with_another_rate_is_refused_clearly():
    with pytest.raises(SnapshotError, match="cannot read the frame count"):
        plan(movie(media_frames=None), sound(), 24.0)


# Frame content Blender 5.0.1 rendered for numbered clips (tests/addon/numbered_clip.py), scene
# frames from the strip's start: these are measurements, reproduced by test_timing_blender.py.
A30_IN_25_ADJUSTED = [0, 1, 2, 4, 5, 6, 7, 8, 10, 11, 12, 13, 14, 16, 17, 18, 19, 20, 22, 23, 24]
A30_IN_20_ADJUSTED = [0, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15]  # 1.5 clip frames per scene frame: halves round up
A30_IN_24_ADJUSTED = [0, 1, 3, 4, 5, 6, 8, 9, 10, 11, 13, 14, 15, 16, 18]
# Blender 3.4.1 truncates instead: the same 30 fps clip, adjusted, in a 25 fps scene.
A30_IN_25_ADJUSTED_34 = [0, 1, 2, 3, 4, 6, 7, 8, 9, 10, 12, 13, 14, 15, 16]


def _cfr_frames(times, fps=30.0):
    """The frame on screen at each time in a constant-rate clip (frame k spans [k/fps, (k+1)/fps))."""
    return [int(t * fps + 1e-6) for t in times]


@pytest.mark.parametrize("scene_fps, seen, rounds", [
    (25, A30_IN_25_ADJUSTED, True), (20, A30_IN_20_ADJUSTED, True), (24, A30_IN_24_ADJUSTED, True),
    (25, A30_IN_25_ADJUSTED_34, False),
])
def test_adjusted_playback_rate_matches_blender(scene_fps, seen, rounds):
    # 90 frames at 30 fps; "adjust playback rate" on makes the strip 90 * scene / 30 frames long.
    n = int(90 * scene_fps / 30)
    v = movie(frame_start=1.0, final_start=1, final_end=1 + n, frame_duration=n, media_fps=30.0, media_frames=90)
    assert timing.playback_rate(v, scene_fps) == pytest.approx(30 / scene_fps)
    times = timing.source_times(v, scene_fps, rounds)
    assert len(times) == n
    assert _cfr_frames(times[:len(seen)]) == seen
    assert _cfr_frames(times[-1:]) == [89 if rounds else int((n - 1) * 30 / scene_fps)]


def test_not_adjusted_plays_one_clip_frame_per_scene_frame():
    v = movie(frame_start=1.0, final_start=1, final_end=91, frame_duration=90, media_fps=30.0, media_frames=90)
    assert timing.playback_rate(v, 25.0) == 1.0
    assert _cfr_frames(timing.source_times(v, 25.0)) == list(range(90))


def test_hard_trim_adjusted_and_held_ends():
    # Measured: 30 fps clip adjusted into 25 fps, starting at frame 10, hard trim 7: frames 10..19
    # show 7, 8, 9, 11, 12, 13, 14, 15, 17, 18.
    v = movie(frame_start=10.0, final_start=10, final_end=79, frame_duration=69, media_fps=30.0, media_frames=90,
              animation_offset_start=7)
    assert _cfr_frames(timing.source_times(v, 25.0)[:10]) == [7, 8, 9, 11, 12, 13, 14, 15, 17, 18]
    # Measured: handles pulled 3 frames before and 5 after the content hold the first and last frame.
    v = movie(frame_start=10.0, final_start=7, final_end=90, frame_duration=75, media_fps=30.0, media_frames=90)
    times = timing.source_times(v, 25.0)
    assert _cfr_frames(times[:6]) == [0, 0, 0, 0, 1, 2]
    assert _cfr_frames(times[-10:]) == [84, 85, 86, 88, 89, 89, 89, 89, 89, 89]  # scene frames 80..89
    req = plan(v, sound(frame_start=7.0, final_start=7, final_end=90), 25.0)
    assert req.used_frames == 83 and len(req.source_times) == 83


def test_variable_rate_clip_is_mapped_by_time():
    # vretalk_face1: Blender counts 183 frames at 30 fps (the file has 135); in a 30 fps scene
    # scene frame k shows the frame on screen at k / 30 s.
    v = movie(frame_start=1.0, final_start=1, final_end=184, frame_duration=183, media_fps=30.0, media_frames=183)
    times = timing.source_times(v, 30.0)
    assert times == pytest.approx([k / 30 for k in range(183)])
    a = _args(plan(v, sound(frame_start=1.0, final_start=1, final_end=184), 30.0))
    assert "--frames" not in a and "--start-frame" not in a


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


def _real_parser():
    """The engine's own argument parser (wav2lip_core/jobs/request.py: torch-free), strict: as
    argparse reads a command line, without the CLI's joining of `--opt -1e-5` pairs."""
    from wav2lip_core.jobs import request

    return request.build_parser()


def _is_number(text):
    try:
        float(text)
    except ValueError:
        return False
    return True


@pytest.mark.parametrize("audio_start, duration, audible", [
    (-3.3e-05, 2.5, None),  # a sound that starts a hair after the video (the number)
    (-1e-07, 1 / 24000, (1e-05, 2 / 24000)),
    (-123456.75, 1e-4, (0.0, 5e-5)),
    (1e16, 2.0, None),
])
def test_the_engine_parses_every_number_the_addon_writes(audio_start, duration, audible):
    req = request.SyncRequest(
        source_name="Face", source_channel=2, face_path="/m/face.mp4", is_image=False, scene_fps=24000 / 1001,
        insert_frame=10, used_frames=3, start_frame=4, audio_path="/m/speech.wav", audio_start=audio_start,
        duration=duration, audible=audible)
    args = req.engine_args(checkpoint="c.pth", out="o.mp4", extra=("--sync-offset", "0.5"))
    parsed = _real_parser().parse_args(args)
    assert not [a for a in args if _is_number(a) and "e" in a.lower()]  # no exponent anywhere
    # Exact: the engine gets the very floats the add-on computed (frame/second timing).
    assert parsed.audio_start == audio_start and parsed.duration == duration
    assert parsed.fps == 24000 / 1001 and parsed.start_frame == 4 and parsed.frames == 3
    assert parsed.audible == (list(audible) if audible else None)


def test_a_tiny_negative_offset_from_a_plan_reaches_the_engine():
    # The sound starts 0.0008 frames after the video (a float scene position): -3.3e-05 s.
    req = plan(movie(), sound(frame_start=10.0 + 24 * 3.3e-05, final_start=10, final_end=130), 24.0)
    assert -4e-05 < req.audio_start < 0
    args = req.engine_args(checkpoint="c.pth", out="o.mp4", source_times_path="/t/times.json")
    assert _real_parser().parse_args(args).audio_start == req.audio_start
