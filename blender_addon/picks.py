"""The faces picked on a movie strip (Pick Face, pick_face.py), each bound to a sound strip:
stored on the strip itself (a PropertyGroup collection registered on the strips' type, so it is
saved in the .blend and follows undo), listed in the panel (label, sound, remove), and turned
into the engine's request at Sync (`sound_for` + `with_speakers`: one pick `--face-at`, more
`--speaker` each, sync_request.py)."""

from __future__ import annotations

import dataclasses
import os
from typing import Any, List, Optional, Set

import bpy
from bpy.props import CollectionProperty, IntProperty, StringProperty
from bpy.types import Context

from . import capture, compat, pick_map
from .compat import StripLike
from .scene_time import check_sound, heard_window, sound_time
from .snapshot import SnapshotError
from .sync_request import Speaker, SyncRequest

PROP = "wav2lip_picks"  # the collection's name on every strip


class Wav2LipPick(bpy.types.PropertyGroup):
    """One picked face: a clip pixel at a clip time, and the sound strip that speaks for it."""

    x: IntProperty(name="X", description="Clip pixel (from the left)", min=0)  # type: ignore[valid-type]
    y: IntProperty(name="Y", description="Clip pixel (from the top)", min=0)  # type: ignore[valid-type]
    # The clip time as text: a FloatProperty is single precision, and the engine must find the
    # very frame (1/3 s rounded down is the frame before).
    face_time_text: StringProperty(name="Clip Time", description="Seconds from the clip's first frame",  # type: ignore[valid-type]
                                   options={"HIDDEN"})
    frame: IntProperty(name="Frame", description="The scene frame it was picked at")  # type: ignore[valid-type]
    clip_w: IntProperty(name="Clip Width", min=0)  # type: ignore[valid-type]
    clip_h: IntProperty(name="Clip Height", min=0)  # type: ignore[valid-type]
    sound: StringProperty(name="Sound", description="The sound strip this face speaks")  # type: ignore[valid-type]


def picks_of(strip: Optional[StripLike]) -> List[Any]:
    coll = getattr(strip, PROP, None) if strip is not None else None
    return list(coll) if coll is not None else []


def add_pick(strip: StripLike, x: int, y: int, face_time: float, frame: int, clip_w: int, clip_h: int,
             sound: str) -> Any:
    pick = getattr(strip, PROP).add()
    pick.x, pick.y, pick.face_time_text, pick.frame = int(x), int(y), repr(float(face_time)), int(frame)
    pick.clip_w, pick.clip_h, pick.sound = int(clip_w), int(clip_h), sound
    return pick


def face_time(pick: Any) -> float:
    """The clip time (seconds) of the frame the face was picked on."""
    try:
        return float(pick.face_time_text or 0.0)
    except ValueError:
        return 0.0


def label(index: int, pick: Any) -> str:
    """'Face 1 (left) <- Dialogue_A' (the panel's line for a pick)."""
    where = pick_map.side(pick.x, pick.clip_w) if pick.clip_w else f"{pick.x}, {pick.y}"
    return f"Face {index + 1} ({where}) \u2190 {pick.sound or '(no sound)'}"


def sound_for(scene: Any, video: StripLike, sound: Optional[StripLike]) -> StripLike:
    """The sound strip whose --audio the job uses: the first pick's when the strip has picks,
    else the pair's own (`sound`)."""
    picks = picks_of(video)
    if picks:
        return _pick_sound(scene, video, 0, picks[0])
    if sound is None:
        raise SnapshotError(f"no sound strip for '{video.name}': select the dialogue's sound strip")
    return sound


def _pick_sound(scene: Any, video: StripLike, index: int, pick: Any) -> StripLike:
    what = f"Face {index + 1} of '{video.name}'"
    if not pick.sound:
        raise SnapshotError(f"{what} has no sound strip: choose one in the Lip Sync panel's list")
    strip = compat.find_strip(compat.editor(scene), pick.sound)
    if strip is None or strip.type != compat.SOUND:
        raise SnapshotError(f"{what}: no sound strip named '{pick.sound}'; choose another in the Lip Sync panel")
    return strip


def with_speakers(scene: Any, video: StripLike, req: SyncRequest) -> SyncRequest:
    """`req` (planned with sound_for's sound) with the strip's picks: each pick's sound file and
    where its time 0 is heard in the output (the output starts at req.insert_frame)."""
    picks = picks_of(video)
    if not picks:
        return req
    fps = compat.scene_fps(scene)
    v = capture.strip_info(scene, video, probe_media=False)
    speakers = []
    for i, pick in enumerate(picks):
        a = capture.strip_info(scene, _pick_sound(scene, video, i, pick))
        check_sound(a)
        if not os.path.isfile(a.filepath):
            raise SnapshotError(f"the sound's file is missing: {a.filepath}")
        _, _, heard = heard_window(v, a, fps)  # a trimmed strip: heard only where it plays
        speakers.append(Speaker(x=pick.x, y=pick.y, face_time=face_time(pick), audio_path=a.filepath,
                                audio_at=-sound_time(a, req.insert_frame, fps), heard=heard))
    return dataclasses.replace(req, speakers=tuple(speakers))


class SEQUENCER_OT_wav2lip_pick_remove(bpy.types.Operator):
    """Forget this picked face"""

    bl_idname = "sequencer.wav2lip_pick_remove"
    bl_label = "Remove Picked Face"
    bl_options = {"REGISTER", "UNDO", "INTERNAL"}

    strip: StringProperty(name="Strip")  # type: ignore[valid-type]
    index: IntProperty(name="Index", min=0)  # type: ignore[valid-type]

    def execute(self, context: Context) -> Set[str]:
        strip = compat.find_strip(compat.editor(compat.sequencer_scene(context)), self.strip)
        coll = getattr(strip, PROP, None) if strip is not None else None
        if coll is None or self.index >= len(coll):
            return {"CANCELLED"}
        coll.remove(self.index)
        return {"FINISHED"}


def draw(layout: Any, context: Context, video: Optional[StripLike], pick_op: str) -> None:
    """The strip's picks (label, its sound strip, remove) and the Pick Face button."""
    if video is None or video.type != compat.MOVIE:
        return
    ed: Any = compat.editor(compat.sequencer_scene(context))
    coll_name = "strips_all" if hasattr(ed, "strips_all") else "sequences_all"
    col = layout.column(align=True)
    for i, pick in enumerate(picks_of(video)):
        row = col.row(align=True)
        row.label(text=label(i, pick), icon="USER")
        row.prop_search(pick, "sound", ed, coll_name, text="", icon="SOUND")
        op = row.operator(SEQUENCER_OT_wav2lip_pick_remove.bl_idname, text="", icon="X")
        op.strip, op.index = video.name, i
    col.operator(pick_op, text="Pick Face", icon="RESTRICT_SELECT_OFF")


classes = (Wav2LipPick, SEQUENCER_OT_wav2lip_pick_remove)


def register() -> None:
    for cls in classes:
        bpy.utils.register_class(cls)
    setattr(compat.strip_class(), PROP, CollectionProperty(type=Wav2LipPick))


def unregister() -> None:
    if hasattr(compat.strip_class(), PROP):
        delattr(compat.strip_class(), PROP)
    for cls in reversed(classes):
        bpy.utils.unregister_class(cls)
