"""The scene-time arithmetic: from two strips (StripInfo) to the engine request (SyncRequest) that
reproduces what the viewer sees and hears, and the strips it refuses. No bpy here.


Everything is in *scene time*, because that is what the viewer sees.

Video: at scene frame f in the strip's used range [V0, V1) (its handles, after trims), Blender
shows (measured by rendering numbered clips, tests/addon/test_timing_blender.py):

    x = min(max(f - frame_start, 0) * rate, frames - 1)   rate: clip fps / scene fps when the
                                                          strip's "adjust playback rate" is on,
                                                          else 1; frames: the clip's frames
                                                          after hard trims
    i = R(x) + animation_offset_start
    the clip frame on screen at  i / clip_fps  seconds after the clip's first frame

where R rounds half up (Blender 5.0; 4.2's source does the same) or truncates (Blender 3.4:
compat.frame_index_rounds()), and clip_fps is the rate Blender reads from the file (a variable-
rate clip is counted at that rate: vretalk_face1 has 135 frames, Blender shows 183 frame slots
and picks, for each, the frame on screen at that time). Handles pulled past the content hold the
first/last frame (the clamp). The add-on hands the engine one clip time per output frame
(`--source-times`); the engine shows the frame on screen at each, and holds the last frame past
the clip's end, never playing backwards.

Sound: the strip plays, at scene frame f in its used range [S0, S1), the sound file at
t(f) = (f - frame_start + animation_offset_start) / scene_fps - sound_offset seconds, and nothing
outside [S0, S1) (5.0's sound_offset delays the sound: measured against Blender's own mixdown).

The engine is asked for an output whose frame k shows what Blender shows at scene frame V0 + k,
with the audio heard there:

    --fps           scene_fps (fps / fps_base)
    --source-times  [clip time at V0, V0 + 1, ..., V1 - 1]   (a movie; an image has none)
    --audio-start   t(V0)           (negative when the sound starts after the video)
    --duration      (V1 - V0) / scene_fps

When the sound file has content that the strip does not play inside the video's range (the
sound strip is trimmed there), the engine also gets

    --audible       (S0' - V0) / scene_fps, (S1' - V0) / scene_fps   with [S0', S1') = [S0, S1) within [V0, V1)

and hears silence outside it. The engine cuts, not Blender: Blender's audio module needs numpy,
which a distribution's Blender may lack (Debian's 3.4 does).
The result is inserted at frame V0 and lasts V1 - V0 frames.
"""

from __future__ import annotations

import math
from typing import List, Optional, Tuple

from .snapshot import IMAGE, MOVIE, SOUND, SnapshotError, StripInfo
from .sync_request import SyncRequest

_SPEED_MSG = ("'{name}' plays at a changed speed ({why}); lip sync needs the clip at its own speed: "
              "remove the speed change (or render the strip to a new movie first)")


def playback_rate(v: StripInfo, scene_fps: float) -> float:
    """Clip frames per scene frame: clip fps / scene fps when the strip's "adjust playback rate"
    is on, else 1. Blender has no property for that switch; it shows in the strip's length: on,
    the content lasts int((media_frames - hard trims) * scene_fps / clip_fps) scene frames; off,
    media_frames - hard trims. A length that fits neither is retiming (refused)."""
    if v.kind != MOVIE or not v.media_fps:
        return 1.0
    same_rate = abs(v.media_fps - scene_fps) < 1e-6
    if v.media_frames is None:
        if same_rate:
            return 1.0
        raise SnapshotError(
            f"cannot read the frame count of '{v.name}' ({v.filepath}) to tell how Blender plays it; "
            "check that the file opens in Blender")
    available = v.media_frames - v.animation_offset_start - v.animation_offset_end
    rate = 1.0 if same_rate else v.media_fps / scene_fps
    plain, adjusted = available, int(available / rate + 1e-6)
    if v.frame_duration == adjusted and v.frame_duration != plain:
        return rate
    if v.frame_duration == plain:
        return 1.0
    if abs(v.frame_duration - adjusted) <= 1 and abs(v.frame_duration - adjusted) < abs(v.frame_duration - plain):
        return rate
    if abs(v.frame_duration - plain) <= 1:
        return 1.0
    raise SnapshotError(_SPEED_MSG.format(name=v.name, why="retiming"))


def frame_index(v: StripInfo, scene_frame: int, rate: float, rounds: bool = True) -> int:
    """The clip frame slot (at the clip's own rate) Blender shows at `scene_frame`: see the module
    docstring. `rounds`: half-up rounding of the scaled index (Blender 5.0) or truncation (3.4)."""
    available = (v.media_frames - v.animation_offset_start - v.animation_offset_end
                 if v.media_frames is not None else v.frame_duration)
    # As Blender's give_frame_index: from the content start, scaled, then clamped to the clip's
    # frames (handles pulled past the content hold the first/last frame).
    x = min(max(scene_frame - v.frame_start, 0.0) * rate, max(available - 1, 0))
    i = math.floor(x + 0.5) if rounds else math.floor(x + 1e-9)
    return int(i) + v.animation_offset_start


def source_times(v: StripInfo, scene_fps: float, rounds: bool = True) -> Tuple[float, ...]:
    """Clip time on screen at each used scene frame [V0, V1): index / clip fps."""
    rate = playback_rate(v, scene_fps)
    return tuple(frame_index(v, f, rate, rounds) / v.media_fps for f in range(v.final_start, v.final_end))


def check_video(v: StripInfo, scene_fps: float) -> None:
    """Refuse what this mapping cannot reproduce."""
    if v.kind not in (MOVIE, IMAGE):
        raise SnapshotError(f"'{v.name}' is not a movie or image strip")
    if not v.filepath:
        raise SnapshotError(f"'{v.name}' has no file")
    if v.in_meta:
        raise SnapshotError(f"'{v.name}' is inside a meta strip; ungroup it (or sync before grouping)")
    if v.used_frames <= 0:
        raise SnapshotError(f"'{v.name}' has no frames in use")
    if v.kind == IMAGE and v.image_count != 1:
        raise SnapshotError(
            f"'{v.name}' is an image sequence; render it to a movie first (only single images and movies are supported)"
        )
    if v.speed_effects:
        raise SnapshotError(_SPEED_MSG.format(
            name=v.name, why="Speed Control strip " + ", ".join(repr(n) for n in v.speed_effects)))
    if abs(v.speed_factor - 1.0) > 1e-6:
        raise SnapshotError(_SPEED_MSG.format(name=v.name, why=f"speed factor {v.speed_factor:g}"))
    if v.kind == MOVIE:
        if v.reversed:
            raise SnapshotError(_SPEED_MSG.format(name=v.name, why="reversed frames"))
        if v.strobe > 1.0 + 1e-6:
            raise SnapshotError(_SPEED_MSG.format(name=v.name, why=f"strobe {v.strobe:g}"))
        if v.retiming_keys > 2:
            raise SnapshotError(_SPEED_MSG.format(name=v.name, why="retiming"))
        if v.media_fps:
            playback_rate(v, scene_fps)  # refuses retiming that shows only in the length
        else:
            # Without the clip's rate only the index mapping is left, which cannot hold frames.
            first = v.final_start - v.frame_start
            last = v.final_end - v.frame_start
            if first < -1e-6 or last > v.frame_duration + 1e-6:
                raise SnapshotError(
                    f"'{v.name}' is extended past its clip (held first/last frames); trim it to the clip's frames"
                )


def check_sound(s: StripInfo) -> None:
    if s.kind != SOUND:
        raise SnapshotError(f"'{s.name}' is not a sound strip")
    if not s.filepath:
        raise SnapshotError(f"sound strip '{s.name}' has no file")
    if abs(s.speed_factor - 1.0) > 1e-6:
        raise SnapshotError(f"sound strip '{s.name}' plays at a changed speed; remove the speed change")
    if s.retiming_keys and s.media_frames is not None and abs(s.frame_duration - s.media_frames) > 1:
        raise SnapshotError(f"sound strip '{s.name}' is retimed; remove the retiming")
    if s.retiming_keys > 2:
        raise SnapshotError(f"sound strip '{s.name}' is retimed; remove the retiming")


def sound_time(s: StripInfo, scene_frame: float, scene_fps: float) -> float:
    """Seconds into the sound file that play at `scene_frame` (when inside the strip)."""
    return (scene_frame - s.frame_start + s.animation_offset_start) / scene_fps - s.sound_offset


def heard_window(video: StripInfo, sound: StripInfo,
                 scene_fps: float) -> Tuple[int, int, Optional[Tuple[float, float]]]:
    """The scene frames [lo, hi) where `sound` plays under `video`, and the output seconds it is
    heard in when the strip's trims silence some of its file there (--audible, or a speaker's
    FROM TO), else None; SnapshotError when it does not play under the video at all."""
    v0, v1 = video.final_start, video.final_end
    s0, s1 = sound.final_start, sound.final_end
    lo, hi = max(v0, s0), min(v1, s1)
    if hi <= lo:
        raise SnapshotError(
            f"sound strip '{sound.name}' (frames {s0}-{s1 - 1}) does not play under '{video.name}' (frames {v0}-{v1 - 1})"
        )
    # Is anything of the file audible in the engine's window that the strip does not play?
    content_end = sound.frame_start + sound.frame_duration  # where the file (as loaded) runs out
    trimmed_front = s0 > v0 and sound_time(sound, s0, scene_fps) > 0.5 / 48000
    trimmed_back = s1 < v1 and s1 < content_end - 1e-6
    audible = ((lo - v0) / scene_fps, (hi - v0) / scene_fps) if (trimmed_front or trimmed_back) else None
    return lo, hi, audible


def plan(video: StripInfo, sound: StripInfo, scene_fps: float, *, rounds: bool = True) -> SyncRequest:
    """The engine request that reproduces, in scene time, what the viewer sees and hears.
    rounds: how this Blender turns a scaled frame index into a frame (compat.frame_index_rounds())."""
    if not (scene_fps > 0 and math.isfinite(scene_fps)):
        raise SnapshotError(f"the scene's frame rate is invalid ({scene_fps})")
    check_video(video, scene_fps)
    check_sound(sound)
    v0, v1 = video.final_start, video.final_end
    lo, hi, audible = heard_window(video, sound, scene_fps)
    n = v1 - v0
    duration = n / scene_fps
    audio_start = sound_time(sound, v0, scene_fps)
    notes: List[str] = []
    if lo > v0 or hi < v1:
        notes.append(f"sound covers frames {lo}-{hi - 1} of {v0}-{v1 - 1}; the rest stays silent")

    start_frame: Optional[int] = None
    times: Optional[Tuple[float, ...]] = None
    if video.kind == MOVIE:
        start_frame = int(round(v0 - video.frame_start + video.animation_offset_start))
        if video.media_fps:
            times = source_times(video, scene_fps, rounds)
    return SyncRequest(
        source_name=video.name,
        source_channel=video.channel,
        face_path=video.filepath,
        is_image=video.kind == IMAGE,
        scene_fps=scene_fps,
        insert_frame=v0,
        used_frames=n,
        start_frame=start_frame,
        audio_path=sound.filepath,
        audio_start=audio_start,
        duration=duration,
        sound_name=sound.name,
        audible=audible,
        notes=tuple(notes),
        source_times=times,
    )
