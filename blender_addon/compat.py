"""Every Blender version difference the add-on cares about, in one place (4.2 LTS .. 5.x).

- 4.x: `SequenceEditor.sequences` / `sequences_all`, types `Sequence`, `MovieSequence`, ...,
  `context.selected_sequences`; 5.0: `strips` / `strips_all`, `Strip`, `MovieStrip`, ...,
  `context.selected_strips`, and `context.sequencer_scene` (the scene the sequencer edits, which
  may differ from `context.scene`).
- 5.0 adds `SoundStrip.sound_offset` (seconds) and movie output needs
  `image_settings.media_type = 'VIDEO'` before `file_format = 'FFMPEG'`.

Everything else in the add-on goes through these helpers, and the type check runs against the
4.2 and 5.0 stubs, so a version-specific API used elsewhere is caught without Blender.
"""

from __future__ import annotations

from typing import Any, Iterable, List, Optional

import bpy

BLENDER_VERSION = tuple(bpy.app.version)
IS_5 = BLENDER_VERSION >= (5, 0, 0)

MOVIE = "MOVIE"
IMAGE = "IMAGE"
SOUND = "SOUND"
SPEED = "SPEED"


def sequencer_scene(context: Any) -> Any:
    """The scene whose sequencer the user edits (5.0: `context.sequencer_scene`, may be None)."""
    scene = getattr(context, "sequencer_scene", None)
    return scene if scene is not None else getattr(context, "scene", None)


def editor(scene: Any, create: bool = False) -> Any:
    if scene is None:
        return None
    ed = scene.sequence_editor
    if ed is None and create:
        ed = scene.sequence_editor_create()
    return ed


def top_strips(ed: Any) -> Any:
    """The editable top-level collection (has new_movie/new_sound/remove)."""
    return ed.strips if hasattr(ed, "strips") else ed.sequences


def all_strips(ed: Any) -> List[Any]:
    """Every strip, inside metas too."""
    if ed is None:
        return []
    coll = ed.strips_all if hasattr(ed, "strips_all") else ed.sequences_all
    return list(coll)


def current_strips(ed: Any) -> List[Any]:
    """The strips of the level being edited (the open meta strip, else the top level)."""
    if ed is None:
        return []
    stack = list(ed.meta_stack) if hasattr(ed, "meta_stack") else []
    if stack:
        meta = stack[-1]
        return list(meta.strips if hasattr(meta, "strips") else meta.sequences)
    return list(top_strips(ed))


def selected_strips(context: Any, ed: Any) -> List[Any]:
    """Selected strips at the current level (context member when the sequencer provides it)."""
    for name in ("selected_strips", "selected_sequences"):
        sel = getattr(context, name, None)
        if sel is not None:
            return list(sel)
    return [s for s in current_strips(ed) if s.select]


def active_strip(ed: Any) -> Any:
    return None if ed is None else ed.active_strip


def set_active_strip(ed: Any, strip: Any) -> None:
    ed.active_strip = strip


def new_movie(ed: Any, name: str, filepath: str, channel: int, frame_start: int) -> Any:
    return top_strips(ed).new_movie(name=name, filepath=filepath, channel=channel,
                                    frame_start=frame_start, fit_method="ORIGINAL")


def new_sound(ed: Any, name: str, filepath: str, channel: int, frame_start: int) -> Any:
    return top_strips(ed).new_sound(name=name, filepath=filepath, channel=channel, frame_start=frame_start)


def new_image(ed: Any, name: str, filepath: str, channel: int, frame_start: int) -> Any:
    return top_strips(ed).new_image(name=name, filepath=filepath, channel=channel,
                                    frame_start=frame_start, fit_method="ORIGINAL")


def remove_strip(ed: Any, strip: Any) -> None:
    top_strips(ed).remove(strip)


def sound_offset(strip: Any) -> float:
    """Seconds of the sound file skipped at the strip's content start (5.0+; 0 before)."""
    return float(getattr(strip, "sound_offset", 0.0) or 0.0)


def speed_factor(strip: Any) -> float:
    """The legacy per-strip speed factor (absent in current versions: retiming replaced it)."""
    return float(getattr(strip, "speed_factor", 1.0) or 1.0)


def retiming_key_count(strip: Any) -> int:
    keys = getattr(strip, "retiming_keys", None)
    return 0 if keys is None else len(keys)


def strip_input(strip: Any) -> Any:
    return getattr(strip, "input_1", None)


def scene_fps(scene: Any) -> float:
    return float(scene.render.fps) / float(scene.render.fps_base or 1.0)


def media_fps(strip: Any) -> float:
    try:
        return float(getattr(strip, "fps", 0.0) or 0.0)
    except (TypeError, ValueError):
        return 0.0


def set_ffmpeg_output(scene: Any, filepath: str, audio: bool = True) -> None:
    """Render the scene to an H.264 MP4 (AAC audio when `audio`)."""
    r = scene.render
    settings = r.image_settings
    if hasattr(settings, "media_type"):  # 5.0: pick the media type before the format
        settings.media_type = "VIDEO"
    settings.file_format = "FFMPEG"
    r.ffmpeg.format = "MPEG4"
    r.ffmpeg.codec = "H264"
    if audio:
        r.ffmpeg.audio_codec = "AAC"
        r.ffmpeg.audio_channels = "STEREO"
        r.ffmpeg.audio_mixrate = 48000
    r.filepath = filepath
    r.use_file_extension = False


def progress_bar(layout: Any, factor: float, text: str) -> bool:
    """`layout.progress` (4.0+); False when missing so the caller can draw a label instead."""
    fn = getattr(layout, "progress", None)
    if fn is None:
        return False
    fn(factor=max(0.0, min(1.0, factor)), type="BAR", text=text)
    return True


def strip_menu_class() -> Any:
    return getattr(bpy.types, "SEQUENCER_MT_strip", None)


def iter_channel_strips(ed: Any, channel: int) -> Iterable[Any]:
    return (s for s in current_strips(ed) if s.channel == channel)


def find_strip(ed: Any, name: str) -> Optional[Any]:
    for s in all_strips(ed):
        if s.name == name:
            return s
    return None
