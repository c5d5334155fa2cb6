"""Every Blender version difference the add-on cares about, in one place (3.4 .. 5.x).

- 3.4 (Debian 12's `blender`, checked in the real program): a legacy add-on only (bl_info; no
  extensions before 4.2). `SequenceEditor.sequences`, `Sequence` types and
  `context.selected_sequences` as in 4.2. No `UILayout.progress` (4.0+): `progress_bar` draws a
  slider instead. A movie strip's scaled frame index is truncated, not rounded
  (`frame_index_rounds`). No `Region.active_panel_category` (present in 4.2): which sidebar tab
  is shown cannot be read. No retiming (`retiming_keys`), no `SoundStrip.sound_offset`; movie
  strips still have the legacy `speed_factor` (1.0). `context.temp_override` and
  `Window.event_simulate` exist. A Blender without numpy (Debian's, unless python3-numpy is
  installed) cannot `import aud` (its Python module is built against numpy).
- 4.2 adds `bpy.app.online_access` (Preferences > System > Network > Allow Online Access);
  3.4 .. 4.1 have no such setting (`online_access`).
- 4.2/4.3: `SequenceEditor.sequences` / `sequences_all`, types `Sequence`, `MovieSequence`, ...,
  `context.selected_sequences`. 4.4 renamed them to `strips` / `strips_all`, `Strip`,
  `MovieStrip`, ..., `context.selected_strips`, keeping the old collection and context names as
  deprecated aliases (4.5 has both, checked); 5.0 dropped the old names.
- `SoundStrip.sound_offset` (seconds): absent in 3.4 and 4.2, present in 4.5 and 5.0.
- 5.0 adds `context.sequencer_scene` (the scene the sequencer edits, which may differ from
  `context.scene`), and movie output needs `image_settings.media_type = 'VIDEO'` before
  `file_format = 'FFMPEG'`.

The helpers detect features rather than compare version numbers; the add-on's Blender tests run
under bpy 5.0.1 and 4.5.15 (tools/test.sh), and in the real Blender 3.4.1 program
(tests/blender_window/, a window under Xvfb).

Everything else in the add-on goes through these helpers, and the type check runs against the
4.2 and 5.0 stubs, so a version-specific API used elsewhere is caught without Blender.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Protocol, cast

import bpy
from bpy.types import Context, Scene, SequenceEditor, UILayout

BLENDER_VERSION = tuple(bpy.app.version)


class StripLike(Protocol):
    """A strip as the add-on uses it, in every supported version (4.x `Sequence` subclasses,
    5.x `Strip` subclasses). Code outside this module sees strips only through this, so an
    attribute that exists in one version only must go through a helper here."""

    name: str
    type: str
    channel: int
    frame_start: float
    frame_final_start: int
    frame_final_end: int
    frame_final_duration: int
    frame_duration: int
    frame_offset_start: float
    frame_offset_end: float
    select: bool
    mute: bool
    filepath: str  # movie strips
    directory: str  # image strips
    elements: Any  # image/movie strips
    sound: Any  # sound strips
    transform: Any
    crop: Any
    use_flip_x: bool
    use_flip_y: bool


MOVIE = "MOVIE"
IMAGE = "IMAGE"
SOUND = "SOUND"
SPEED = "SPEED"


def sequencer_scene(context: Context) -> Optional[Scene]:
    """The scene whose sequencer the user edits (5.0: `context.sequencer_scene`, may be None)."""
    scene = getattr(context, "sequencer_scene", None)
    return scene if scene is not None else getattr(context, "scene", None)


def editor(scene: Optional[Scene], create: bool = False) -> Optional[SequenceEditor]:
    if scene is None:
        return None
    ed = scene.sequence_editor
    if ed is None and create:
        ed = scene.sequence_editor_create()
    return ed


def top_strips(ed: SequenceEditor) -> Any:
    """The editable top-level collection (has new_movie/new_sound/remove)."""
    e: Any = ed
    return e.strips if hasattr(e, "strips") else e.sequences


def all_strips(ed: Optional[SequenceEditor]) -> List[StripLike]:
    """Every strip, inside metas too."""
    if ed is None:
        return []
    e: Any = ed
    coll = e.strips_all if hasattr(e, "strips_all") else e.sequences_all
    return list(coll)


def current_strips(ed: Optional[SequenceEditor]) -> List[StripLike]:
    """The strips of the level being edited (the open meta strip, else the top level)."""
    if ed is None:
        return []
    stack: List[Any] = list(ed.meta_stack)
    if stack:
        meta = stack[-1]
        return list(meta.strips if hasattr(meta, "strips") else meta.sequences)
    return list(top_strips(ed))


def selected_strips(context: Context, ed: Optional[SequenceEditor]) -> List[StripLike]:
    """Selected strips at the current level (context member when the sequencer provides it)."""
    for name in ("selected_strips", "selected_sequences"):
        sel: Any = getattr(context, name, None)
        if sel is not None:
            return list(sel)
    return [s for s in current_strips(ed) if s.select]


def active_strip(ed: Optional[SequenceEditor]) -> Optional[StripLike]:
    return None if ed is None else cast(Any, ed).active_strip


def set_active_strip(ed: SequenceEditor, strip: StripLike) -> None:
    cast(Any, ed).active_strip = strip


def new_movie(ed: SequenceEditor, name: str, filepath: str, channel: int, frame_start: int,
              fit_method: str = "ORIGINAL") -> StripLike:
    # The collection's new_movie, in every version: 5.0's `sequencer.movie_strip_add` crashes
    # when run outside a Sequencer area (bpy as a module), and it needs one in the others.
    return top_strips(ed).new_movie(name=name, filepath=filepath, channel=channel,
                                    frame_start=frame_start, fit_method=fit_method)


def new_sound(ed: SequenceEditor, name: str, filepath: str, channel: int, frame_start: int) -> StripLike:
    return top_strips(ed).new_sound(name=name, filepath=filepath, channel=channel, frame_start=frame_start)


def new_image(ed: SequenceEditor, name: str, filepath: str, channel: int, frame_start: int) -> StripLike:
    return top_strips(ed).new_image(name=name, filepath=filepath, channel=channel,
                                    frame_start=frame_start, fit_method="ORIGINAL")


def remove_strip(ed: SequenceEditor, strip: StripLike) -> None:
    top_strips(ed).remove(strip)


def strip_tag(strip: StripLike, key: str) -> Any:
    """A custom property of the strip (None when unset); the stubs do not type ID properties."""
    return cast(Any, strip).get(key)


def set_strip_tag(strip: StripLike, key: str, value: str) -> None:
    cast(Any, strip)[key] = value


def sound_offset(strip: StripLike) -> float:
    """Seconds the sound is delayed within its strip (4.5 and 5.0; 0 where absent, e.g. 4.2)."""
    return float(getattr(strip, "sound_offset", 0.0) or 0.0)


def speed_factor(strip: StripLike) -> float:
    """The legacy per-strip speed factor (absent in current versions: retiming replaced it)."""
    return float(getattr(strip, "speed_factor", 1.0) or 1.0)


def retiming_key_count(strip: StripLike) -> int:
    keys = getattr(strip, "retiming_keys", None)
    return 0 if keys is None else len(keys)


def strip_input(strip: StripLike) -> Optional[StripLike]:
    return getattr(strip, "input_1", None)


def scene_fps(scene: Scene) -> float:
    return float(scene.render.fps) / float(scene.render.fps_base or 1.0)


def media_fps(strip: StripLike) -> float:
    try:
        return float(getattr(strip, "fps", 0.0) or 0.0)
    except (TypeError, ValueError):
        return 0.0


def set_ffmpeg_output(scene: Scene, filepath: str, audio: bool = True) -> None:
    """Render the scene to an H.264 MP4 (AAC audio when `audio`)."""
    r: Any = scene.render
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


HAS_PROGRESS_WIDGET = "progress" in cast(Any, bpy.types.UILayout).bl_rna.functions  # 4.0+

# Below 4.0 each bar is a slider over a window-manager property of its own that stores nothing:
# its getter returns the factor last given to `progress_bar` for that bar (set during the same
# draw, so it is always current) and its setter ignores input (a read-only one would be drawn
# greyed out). One property per bar: Blender reads a button's value after the whole panel is
# laid out, so bars sharing one property would all show the last bar's value.
PROGRESS_BARS = ("batch", "job", "setup", "fetch")
_fallback_factors: Dict[str, float] = {}


def fallback_prop(bar: str) -> str:
    """The window-manager property behind bar `bar`'s slider (below 4.0)."""
    return f"wav2lip_progress_{bar}"


def _fallback_getter(bar: str) -> Callable[[Any], float]:
    return lambda _owner: _fallback_factors.get(bar, 0.0) * 100.0


def register() -> None:
    if not HAS_PROGRESS_WIDGET:
        for bar in PROGRESS_BARS:
            setattr(bpy.types.WindowManager, fallback_prop(bar), bpy.props.FloatProperty(
                name="Progress", subtype="PERCENTAGE", min=0.0, max=100.0, precision=0,
                get=_fallback_getter(bar), set=lambda _owner, _value: None,
                description="Progress of the lip-sync job"))


def unregister() -> None:
    for bar in PROGRESS_BARS:
        if hasattr(bpy.types.WindowManager, fallback_prop(bar)):
            delattr(bpy.types.WindowManager, fallback_prop(bar))
    _fallback_factors.clear()


def progress_bar(layout: UILayout, factor: float, text: str, context: Optional[Context] = None,
                 bar: str = "job") -> None:
    """A progress bar with `text` on it: `layout.progress` (4.0+); before that a slider showing
    the percentage (a text line when the slider's property is not registered). `bar` (one of
    PROGRESS_BARS) names the bar, so that bars drawn together each keep their own value."""
    factor = max(0.0, min(1.0, factor))
    if HAS_PROGRESS_WIDGET:
        layout.progress(factor=factor, type="BAR", text=text)
        return
    wm = getattr(context, "window_manager", None) if context is not None else None
    prop = fallback_prop(bar)
    if wm is not None and hasattr(wm, prop):
        _fallback_factors[bar] = factor
        layout.prop(wm, prop, text=text, slider=True)
    else:
        layout.label(text=f"{text} ({factor * 100:.0f}%)")


ONLINE_ACCESS_HOW = ("allow it in Preferences > System > Network > Allow Online Access "
                     "(and start Blender without --offline-mode)")


def online_access() -> Optional[bool]:
    """Blender's "Allow Online Access" (4.2+: `bpy.app.online_access`, False also under
    --offline-mode); None where Blender has no such setting (3.4 .. 4.1): the network is the
    user's own business there."""
    value = getattr(bpy.app, "online_access", None)
    return None if value is None else bool(value)


def ui_scale(context: Optional[Context]) -> float:
    """The interface scale (the preference times the display's DPI factor)."""
    prefs: Any = getattr(context, "preferences", None)
    return float(getattr(getattr(prefs, "system", None), "ui_scale", 1.0) or 1.0)


def sidebar_category(region: Any) -> Optional[str]:
    """The sidebar tab a region shows (4.2+), or None where Blender cannot tell (3.4)."""
    value = getattr(region, "active_panel_category", None)
    return value if isinstance(value, str) and value != "UNSUPPORTED" else None


def animation_playing(context: Context) -> bool:
    """Whether any window plays the timeline (the screen flag is set in the playing one)."""
    wm: Any = getattr(context, "window_manager", None)
    windows = list(wm.windows) if wm is not None else []
    return any(w.screen is not None and w.screen.is_animation_playing for w in windows)


def strip_menu_class() -> Any:
    return getattr(bpy.types, "SEQUENCER_MT_strip", None)


def add_menu_class() -> Any:
    """The Sequencer's Add menu (SEQUENCER_MT_add in 3.4 .. 5.x)."""
    return getattr(bpy.types, "SEQUENCER_MT_add", None)


def find_strip(ed: Optional[SequenceEditor], name: str) -> Optional[StripLike]:
    for s in all_strips(ed):
        if s.name == name:
            return s
    return None


def frame_index_rounds() -> bool:
    """How the sequencer turns a movie strip's scaled frame index ("adjust playback rate" on, a
    clip rate other than the scene's) into a frame: rounds half up (True) or truncates (False).
    Measured by rendering numbered clips: 3.4.1 truncates, 5.0.1 rounds (4.2's source rounds too:
    `round_fl_to_int(give_frame_index(...))`); the change is taken at 4.0, not measured between."""
    return BLENDER_VERSION >= (4, 0, 0)


# --- Pick Face (pick_face.py, picks.py) ---------------------------------------------------------

def strip_class() -> Any:
    """The strips' base type, where add-on properties are registered (5.x `Strip`, else `Sequence`)."""
    return getattr(bpy.types, "Strip", None) or getattr(bpy.types, "Sequence")


def clip_size(strip: StripLike) -> "tuple[int, int]":
    """The movie's size as Blender read it (the strip element's original size); (0, 0) unknown."""
    elems = getattr(strip, "elements", None)
    elem = elems[0] if elems is not None and len(elems) else getattr(strip, "strip_elem_from_frame", None)
    return (int(getattr(elem, "orig_width", 0) or 0), int(getattr(elem, "orig_height", 0) or 0))


def flip_in_image() -> bool:
    """Whether a strip's flip mirrors its image before the transform (True) or the whole frame
    after it (False). Measured by rendering (tests/addon/test_pick_blender.py): bpy 4.5 and 5.0
    mirror the frame, as 3.4's render code does."""
    return False


def placement_values(strip: StripLike) -> Dict[str, Any]:
    """The strip's transform, crop and flip as pick_map.Placement's fields (origin: 3.x has one
    too; 0.5, 0.5 where absent)."""
    t: Any = strip.transform
    c: Any = strip.crop
    origin = tuple(getattr(t, "origin", (0.5, 0.5)))
    return dict(offset_x=float(t.offset_x), offset_y=float(t.offset_y), scale_x=float(t.scale_x),
                scale_y=float(t.scale_y), rotation=float(getattr(t, "rotation", 0.0)),
                origin=(float(origin[0]), float(origin[1])), flip_x=bool(strip.use_flip_x),
                flip_y=bool(strip.use_flip_y), flip_in_image=flip_in_image(),
                crop=(int(c.min_x), int(c.max_x), int(c.max_y), int(c.min_y)))


def uniform_color_shader() -> Any:
    """The built-in flat colour shader (4.0 dropped the `2D_` names; 3.4 may lack the plain one)."""
    import gpu
    try:
        return gpu.shader.from_builtin("UNIFORM_COLOR")
    except (ValueError, TypeError):
        return gpu.shader.from_builtin("2D_UNIFORM_COLOR")


def preview_region(area: Any) -> Any:
    """The region of a Sequencer area that shows the preview (None when it shows none)."""
    if area is None or area.type != "SEQUENCE_EDITOR":
        return None
    view = getattr(area.spaces.active, "view_type", "")
    for region in area.regions:
        if region.type == "PREVIEW" and region.width > 1 and view in ("PREVIEW", "SEQUENCER_PREVIEW"):
            return region
    if view == "PREVIEW":
        return next((r for r in area.regions if r.type == "WINDOW"), None)
    return None
