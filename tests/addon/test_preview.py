"""What a preview syncs (preview.py), without Blender: the range, and the same timing as the full
sync for those frames."""

from __future__ import annotations

import pytest

from ._load import load

snap = load("snapshot")
timing = load("scene_time")
preview = load("preview")

FPS = 24.0


def _video(start=10, end=250, **kw):
    """A 25 fps movie whose content starts at frame 1, used from `start` to `end` (exclusive)."""
    base = dict(name="Face", kind=snap.MOVIE, filepath="/m/face.mp4", channel=2, frame_start=1.0,
                final_start=start, final_end=end, frame_duration=300, media_fps=25.0, media_frames=300)
    base.update(kw)
    return snap.StripInfo(**base)


def _sound(start=1, end=400):
    return snap.StripInfo(name="Speech", kind=snap.SOUND, filepath="/m/speech.wav", channel=1, frame_start=1.0,
                          final_start=start, final_end=end, frame_duration=399)


@pytest.mark.parametrize("playhead, expected", [
    (100, (64, 136)),  # 3 s = 72 frames centred on the playhead
    (20, (10, 82)),  # near the strip's start: moved inside it
    (5, (10, 82)),  # before the strip
    (245, (178, 250)),  # near its end
    (900, (178, 250)),  # past it
])
def test_three_seconds_around_the_playhead_inside_the_strip(playhead, expected):
    assert preview.preview_range(_video(), FPS, playhead) == expected


def test_a_short_strip_is_previewed_whole():
    assert preview.preview_range(_video(10, 40), FPS, 25) == (10, 40)


def test_the_scenes_preview_range_wins_clipped_to_the_strip():
    assert preview.preview_range(_video(), FPS, 100, (50, 59)) == (50, 60)  # its last frame included
    assert preview.preview_range(_video(), FPS, 100, (1, 20)) == (10, 21)
    with pytest.raises(snap.SnapshotError, match=r"preview range \(frames 300-310\) does not cover 'Face'"):
        preview.preview_range(_video(), FPS, 100, (300, 310))


def test_a_preview_is_the_full_syncs_frames_for_its_range():
    video, sound = _video(), _sound(start=30, end=400)
    full = timing.plan(video, sound, FPS)
    part = preview.plan_preview(video, sound, FPS, 100)
    f0, f1 = 64, 136
    assert (part.insert_frame, part.used_frames) == (f0, f1 - f0)
    assert part.duration == pytest.approx((f1 - f0) / FPS)
    assert part.source_times == full.source_times[f0 - full.insert_frame:f1 - full.insert_frame]
    # The sound heard at the preview's first frame is what the full sync hears there.
    assert part.audio_start == pytest.approx(full.audio_start + (f0 - full.insert_frame) / FPS)
    assert part.start_frame == full.start_frame + (f0 - full.insert_frame)
    assert part.audible is None  # the sound plays all through the preview


def test_a_preview_stays_where_the_sound_plays():
    """Issue 17: with the playhead past the dialogue the preview moved to frames with no sound
    and failed, naming frames the user never chose. It stays inside the frames where the strip
    and its sound both play."""
    video = _video()  # frames 10..249
    part = preview.plan_preview(video, _sound(start=1, end=100), FPS, 200)  # dialogue ends at 99
    assert (part.insert_frame, part.used_frames) == (100 - 72, 72)
    part = preview.plan_preview(video, _sound(start=200, end=400), FPS, 50)  # starts at 200
    assert (part.insert_frame, part.used_frames) == (200, 50)  # all 50 frames of it
    assert part.audible is None
    with pytest.raises(snap.SnapshotError, match=r"^sound strip 'Speech' \(frames 300-399\) does not play under "
                                                 r"'Face' \(frames 10-249\)$"):
        preview.plan_preview(video, _sound(start=300, end=400), FPS, 50)


def test_a_preview_range_without_sound_says_where_the_sound_plays():
    with pytest.raises(snap.SnapshotError, match=r"no sound plays in the scene's preview range \(frames 150-159\): "
                                                 r"'Speech' plays under 'Face' at frames 10-99; move the preview"):
        preview.plan_preview(_video(), _sound(start=1, end=100), FPS, 50, (150, 159))
