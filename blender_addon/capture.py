"""Read strips into plain data (snapshot.StripInfo) and choose the strips to sync from the
selection: which movie strips, each with the sound strip that plays under it. The add-on's own
results and previews are never sources: each stands for the strip it was synced from."""

from __future__ import annotations

import os
from typing import Any, Dict, List, Optional, Tuple

import bpy
from bpy.types import Context, Scene

from . import compat
from .compat import StripLike
from .snapshot import IMAGE, MOVIE, SOUND, SnapshotError, StripInfo, overlap

PREVIEW_TAG = "wav2lip_preview_of"  # custom property on a preview strip: the source strip's name
RESULT_TAG = "wav2lip_result_of"  # the same on a synced result strip

VIDEO_TYPES = (compat.MOVIE, compat.IMAGE)


def abspath(path: str, library: Any = None) -> str:
    if not path:
        return ""
    return os.path.normpath(bpy.path.abspath(path, library=library))


def strip_filepath(strip: StripLike) -> str:
    if strip.type == compat.MOVIE:
        return abspath(strip.filepath)
    if strip.type == compat.IMAGE:
        elems = list(strip.elements)
        if not elems:
            return ""
        return abspath(os.path.join(strip.directory, elems[0].filename))
    if strip.type == compat.SOUND:
        snd = strip.sound
        return abspath(snd.filepath, snd.library) if snd is not None else ""
    return ""


def _speed_effects(ed: Any, strip: StripLike) -> Tuple[str, ...]:
    return tuple(
        s.name for s in compat.all_strips(ed)
        if s.type == compat.SPEED and compat.strip_input(s) == strip
    )


_media_frames_cache: Dict[Tuple[str, float], Optional[int]] = {}


def movie_frame_count(path: str) -> Optional[int]:
    """The clip's frame count as Blender reads it (for detecting playback-rate changes)."""
    try:
        key = (path, os.path.getmtime(path))
    except OSError:
        return None
    if key in _media_frames_cache:
        return _media_frames_cache[key]
    count: Optional[int] = None
    try:
        clip = bpy.data.movieclips.load(path, check_existing=False)
    except (RuntimeError, TypeError):
        clip = None
    if clip is not None:
        try:
            count = int(clip.frame_duration) or None
        finally:
            bpy.data.movieclips.remove(clip)
    _media_frames_cache[key] = count
    return count


def sound_frames(path: str, fps: float) -> Optional[int]:
    try:
        import aud  # Blender's audio library
        snd = aud.Sound.file(path)
        rate = float(snd.specs[0])
        seconds = float(snd.length) / rate if rate > 0 else 0.0
    except Exception:  # noqa: BLE001 - any decoder failure just means "unknown"
        return None
    return int(round(seconds * fps)) if seconds > 0 else None


def content_frames(strip: StripLike) -> int:
    """The strip's content length in scene frames, from its handles and trims: equal to
    `frame_duration` in 4.x/5.x, while 3.4's `frame_duration` stays the clip's own frame count
    when "adjust playback rate" stretches the content."""
    return int(round(strip.frame_final_end + strip.frame_offset_end - strip.frame_start))


def strip_info(scene: Scene, strip: StripLike, *, probe_media: bool = True) -> StripInfo:
    """Plain data from a strip. probe_media: open the clip to learn its frame count (slow-ish;
    skipped when drawing the panel)."""
    ed = compat.editor(scene)
    kind = str({compat.MOVIE: MOVIE, compat.IMAGE: IMAGE, compat.SOUND: SOUND}.get(strip.type, strip.type))
    path = strip_filepath(strip)
    fps = compat.scene_fps(scene)
    retiming = compat.retiming_key_count(strip)
    media_frames: Optional[int] = None
    if probe_media and path:
        if kind == MOVIE:
            media_fps = compat.media_fps(strip)
            if retiming or (media_fps and abs(media_fps - fps) > 1e-3):
                media_frames = movie_frame_count(path)
        elif kind == SOUND and retiming:
            media_frames = sound_frames(path, fps)
    parent = getattr(strip, "parent_meta", None)
    in_meta = callable(parent) and parent() is not None
    return StripInfo(
        name=strip.name,
        kind=kind,
        filepath=path,
        channel=int(strip.channel),
        frame_start=float(strip.frame_start),
        final_start=int(strip.frame_final_start),
        final_end=int(strip.frame_final_end),
        frame_duration=content_frames(strip),
        animation_offset_start=int(getattr(strip, "animation_offset_start", 0) or 0),
        animation_offset_end=int(getattr(strip, "animation_offset_end", 0) or 0),
        sound_offset=compat.sound_offset(strip) if kind == SOUND else 0.0,
        media_fps=compat.media_fps(strip) if kind == MOVIE else 0.0,
        media_frames=media_frames,
        image_count=len(strip.elements) if kind == IMAGE else 1,
        retiming_keys=retiming,
        speed_factor=compat.speed_factor(strip),
        reversed=bool(getattr(strip, "use_reverse_frames", False)),
        strobe=float(getattr(strip, "strobe", 1.0) or 1.0),
        speed_effects=_speed_effects(ed, strip) if ed is not None else (),
        in_meta=in_meta,
    )


def _span(strip: StripLike) -> Tuple[int, int]:
    return int(strip.frame_final_start), int(strip.frame_final_end)


def synced_from(strip: StripLike) -> Optional[str]:
    """The source strip's name when `strip` is one of the add-on's results or previews."""
    for tag in (RESULT_TAG, PREVIEW_TAG):
        name = compat.strip_tag(strip, tag)
        if name:
            return str(name)
    return None


def as_source(ed: Any, strip: Optional[StripLike]) -> Optional[StripLike]:
    """The strip to sync for `strip`: itself, or for a result or preview the strip it was synced
    from (None when that is gone)."""
    if strip is None:
        return None
    name = synced_from(strip)
    if name is None:
        return strip
    source = compat.find_strip(ed, name)
    return source if source is not None and synced_from(source) is None else None


def _sound_under(video: StripLike, selected_sounds: List[StripLike], all_sounds: List[StripLike]
                 ) -> Optional[StripLike]:
    """The selected sound strip playing under `video` most, else any sound strip playing under it
    most (unmuted first); None when none plays under it (a strip beside it is no pair)."""
    v0, v1 = _span(video)
    under = [s for s in selected_sounds if overlap(v0, v1, *_span(s)) > 0]
    if under:
        return max(under, key=lambda s: overlap(v0, v1, *_span(s)))
    cands = [s for s in all_sounds if overlap(v0, v1, *_span(s)) > 0]
    return max(cands, key=lambda s: (not s.mute, overlap(v0, v1, *_span(s)))) if cands else None


def _selected_videos(ed: Any, selected: List[StripLike]) -> List[StripLike]:
    """The selected movie/image strips as sources (results and previews mapped back), once each."""
    videos: List[StripLike] = []
    for s in selected:
        if s.type in VIDEO_TYPES:
            source = as_source(ed, s)
            if source is not None and source.type in VIDEO_TYPES and source not in videos:
                videos.append(source)
    return videos


def choose_strips(context: Context, scene: Scene, video_name: str = "", sound_name: str = ""
                  ) -> Tuple[Optional[StripLike], Optional[StripLike]]:
    """(video strip or None, sound strip or None) from explicit names, else the selection:
    the active movie/image strip if selected (or the first selected one), and the sound strip
    playing under it (_sound_under; None when sound strips are selected and none plays under it:
    another one is never swapped in). A result or preview strip stands for its source. With no
    movie strip, the selected sound strip (so the panel can name it)."""
    ed = compat.editor(scene)
    if ed is None:
        return None, None
    video = sound = None
    if video_name:
        video = as_source(ed, compat.find_strip(ed, video_name))
    if sound_name:
        sound = compat.find_strip(ed, sound_name)
    selected = compat.selected_strips(context, ed)
    if video is None and not video_name:
        active = compat.active_strip(ed)
        if active is not None and active.type in VIDEO_TYPES and active.select:
            video = as_source(ed, active)
        if video is None:
            vids = _selected_videos(ed, selected)
            vids.sort(key=lambda s: (-int(s.channel), int(s.frame_final_start)))
            video = vids[0] if vids else None
    if sound is None and not sound_name:
        sel_sounds = [s for s in selected if s.type == compat.SOUND]
        if video is not None and sel_sounds and not any(overlap(*_span(video), *_span(s)) > 0 for s in sel_sounds):
            sound = None  # the user picked this sound: never swap in another one (the panel says why)
        elif video is not None:
            sound = _sound_under(video, sel_sounds, [s for s in compat.current_strips(ed) if s.type == compat.SOUND])
        elif sel_sounds:
            sound = sel_sounds[0]
    return video, sound


def choose_pairs(context: Context, scene: Scene) -> List[Tuple[StripLike, Optional[StripLike]]]:
    """Every selected movie/image strip (a result or preview: its source) with its own sound
    strip, in timeline order (_sound_under; None when none plays under it). One such strip: as
    choose_strips."""
    ed = compat.editor(scene)
    if ed is None:
        return []
    selected = compat.selected_strips(context, ed)
    videos = _selected_videos(ed, selected)
    if len(videos) <= 1:
        video, sound = choose_strips(context, scene)
        return [(video, sound)] if video is not None else []
    videos.sort(key=lambda s: (int(s.frame_final_start), int(s.channel)))
    sel_sounds = [s for s in selected if s.type == compat.SOUND]
    all_sounds = [s for s in compat.current_strips(ed) if s.type == compat.SOUND]
    return [(video, _sound_under(video, sel_sounds, all_sounds)) for video in videos]


def lone_sound(context: Context, scene: Scene) -> Optional[StripLike]:
    """The selected sound strip when no movie/image strip is selected (the panel names it, and
    asks for the movie strip, instead of saying there is no sound)."""
    ed = compat.editor(scene)
    if ed is None or choose_pairs(context, scene):
        return None
    return choose_strips(context, scene)[1]


def occupied(scene: Scene) -> List[Tuple[int, int, int]]:
    ed = compat.editor(scene)
    return [(int(s.channel), *_span(s)) for s in compat.current_strips(ed)]


def scene_editor(scene_name: str, what: str) -> Tuple[Scene, Any]:
    """The scene a finished job puts `what` into (a clip's path, for the message) and its
    sequencer, made if it has none; SnapshotError when the scene was deleted meanwhile."""
    scene = bpy.data.scenes.get(scene_name)
    if scene is None:
        raise SnapshotError(f"the scene '{scene_name}' is gone; {what}")
    ed = compat.editor(scene, create=True)
    if ed is None:
        raise SnapshotError(f"the scene '{scene_name}' has no sequencer")
    return scene, ed
