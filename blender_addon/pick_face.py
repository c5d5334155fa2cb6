"""Pick Face: a modal operator that lets the user click a face in the Sequencer's preview at the
current frame. The warm engine's faces request (protocol.FacesRequest, `wav2lip faces`) finds the
faces on that frame; while picking they are outlined in the preview (a draw handler; the one
under the mouse highlighted). A click inside a box picks the box's centre, a click elsewhere on
the clip the clicked pixel (pick_map does the preview-to-clip arithmetic); the pick goes into the
strip's list (picks.py) bound to the sound strip the panel shows. Esc or right-click cancels.
The user's settings are never changed."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, List, Optional, Set, Tuple

import bpy
from bpy.types import Context

from . import capture, compat, engine, job_settings, pick_map, picks, sidebar
from .engine_jobs import EngineJob, JobQueue
from .engine_python import engine_env
from .job_state import DONE
from .scene_time import frame_index, playback_rate
from .wire import protocol

P = protocol
HINT = "Pick Face: click a face in the preview (outside a box: that pixel); Esc or right-click cancels"


class FacesJob(EngineJob):
    """A faces request on the warm engine; keeps its answer (the done event's faces and size)."""

    def __init__(self, label: str) -> None:
        super().__init__(label=label, op=P.OP_FACES)
        self.faces: Optional[List[List[int]]] = None
        self.size: Tuple[int, int] = (0, 0)

    def engine_event(self, event: Any) -> None:
        if isinstance(event, P.Done) and event.faces is not None:
            self.faces = [[int(v) for v in box] for box in event.faces]
            self.size = (int(event.width or 0), int(event.height or 0))
        super().engine_event(event)


@dataclass
class Session:
    """What the draw handler and the modal operator share while a pick runs."""

    strip_name: str
    sound_name: str
    frame: int
    face_time: float
    placement: Optional[pick_map.Placement]
    job: FacesJob
    frame_size: Tuple[int, int]
    boxes: List[List[int]] = field(default_factory=list)
    hover: Optional[int] = None
    message: str = "finding faces..."


_session: Optional[Session] = None


def session() -> Optional[Session]:
    return _session


def faces_args(path: str, face_time: float, s: job_settings.Settings) -> List[str]:
    """`wav2lip faces`'s arguments: the clip, the frame's time and the face detector in use."""
    args = [path, "--time", P.plain_number(face_time)]
    if s.detector and s.detector not in (P.DETECTOR_BOX, "PREFS"):
        args += [P.OPT_DETECTOR, s.detector]
        if s.detector_weights:
            args += [P.OPT_DETECTOR_WEIGHTS, s.detector_weights]
    return args


def clip_time_at(scene: Any, strip: Any, frame: int) -> float:
    """The clip time (seconds from its first frame) the strip shows at scene `frame` (scene_time)."""
    v = capture.strip_info(scene, strip)
    if not v.media_fps:
        return 0.0
    rate = playback_rate(v, compat.scene_fps(scene))
    return frame_index(v, frame, rate, compat.frame_index_rounds()) / v.media_fps


def _placement(strip: Any, size: Tuple[int, int], frame_size: Tuple[int, int]) -> Optional[pick_map.Placement]:
    w, h = compat.clip_size(strip)
    w, h = (w, h) if w and h else size
    if not (w and h):
        return None
    return pick_map.Placement(clip_w=w, clip_h=h, frame_w=frame_size[0], frame_h=frame_size[1],
                              **compat.placement_values(strip))


def _draw() -> None:
    """The faces' outlines in the preview (view coordinates: POST_VIEW)."""
    s = _session
    if s is None or s.placement is None or not s.boxes:
        return
    import gpu
    from gpu_extras.batch import batch_for_shader

    shader = compat.uniform_color_shader()
    for i, box in enumerate(s.boxes):
        quad = pick_map.box_outline(s.placement, box)
        lines = [pt for k in range(4) for pt in (quad[k], quad[(k + 1) % 4])]
        hot = i == s.hover
        gpu.state.line_width_set(3.0 if hot else 1.5)
        batch = batch_for_shader(shader, "LINES", {"pos": lines})
        shader.bind()
        shader.uniform_float("color", (1.0, 0.85, 0.1, 1.0) if hot else (0.2, 0.8, 1.0, 0.9))
        batch.draw(shader)
    gpu.state.line_width_set(1.0)


class SEQUENCER_OT_wav2lip_pick_face(bpy.types.Operator):
    """Click the face that speaks in the preview (at the current frame); the panel's sound strip drives it"""

    bl_idname = "sequencer.wav2lip_pick_face"
    bl_label = "Pick Face"
    bl_options = {"REGISTER", "UNDO"}

    _handler: Any = None
    _timer: Any = None
    _area: Any = None

    @classmethod
    def poll(cls, context: Context) -> bool:
        scene = compat.sequencer_scene(context)
        video = capture.choose_strips(context, scene)[0] if scene is not None else None
        return _session is None and video is not None and video.type == compat.MOVIE

    def invoke(self, context: Context, event: Any) -> Set[str]:
        global _session
        scene = compat.sequencer_scene(context)
        video, sound = capture.choose_strips(context, scene) if scene is not None else (None, None)
        if scene is None or video is None or video.type != compat.MOVIE:
            self.report({"ERROR"}, "Select the movie strip with the faces")
            return {"CANCELLED"}
        area = _preview_area(context)
        if area is None:
            self.report({"ERROR"}, "Show the Sequencer's preview (View > Preview, or a Preview area) to pick a face")
            return {"CANCELLED"}
        frame = int(scene.frame_current)
        if not (video.frame_final_start <= frame < video.frame_final_end):
            self.report({"ERROR"}, f"Move the playhead over '{video.name}' to the frame with the face")
            return {"CANCELLED"}
        path = capture.strip_filepath(video)
        face_time = clip_time_at(scene, video, frame)
        s = job_settings.settings_from(context, None, getattr(scene, "wav2lip", None))
        job = FacesJob(video.name)
        job.args = faces_args(path, face_time, s)
        frame_size = (int(scene.render.resolution_x), int(scene.render.resolution_y))
        _session = Session(strip_name=video.name, sound_name=sound.name if sound is not None else "", frame=frame,
                           face_time=face_time, placement=_placement(video, (0, 0), frame_size), job=job,
                           frame_size=frame_size)
        env = engine_env()
        JobQueue([job], lambda: engine.session_engine_for(s.engine_python, env)).start()
        self._area = area
        self._handler = bpy.types.SpaceSequenceEditor.draw_handler_add(_draw, (), "PREVIEW", "POST_VIEW")
        wm: Any = context.window_manager
        self._timer = wm.event_timer_add(0.1, window=context.window)
        wm.modal_handler_add(self)
        area.header_text_set(HINT)
        area.tag_redraw()
        return {"RUNNING_MODAL"}

    def modal(self, context: Context, event: Any) -> Set[str]:
        s = _session
        if s is None:
            return self._end(context, {"CANCELLED"})
        if event.type == "TIMER":
            self._take_answer(s)
            return {"PASS_THROUGH"}
        if event.type in {"ESC", "RIGHTMOUSE"} and event.value == "PRESS":
            return self._end(context, {"CANCELLED"})
        region = compat.preview_region(self._area)
        where = _in_region(region, event)
        if event.type == "MOUSEMOVE":
            point = self._clip_point(region, where)
            hover = pick_map.box_at(s.boxes, *point) if point is not None else None
            if hover != s.hover:
                s.hover = hover
                self._area.tag_redraw()
            return {"PASS_THROUGH"}
        if event.type == "LEFTMOUSE" and event.value == "PRESS":
            if where is None:
                return {"RUNNING_MODAL"}  # (a click elsewhere must not act while picking)
            point = self._clip_point(region, where)
            if point is None or s.placement is None:
                self.report({"WARNING"}, "That is not on the clip: click the face in the preview")
                return {"RUNNING_MODAL"}
            return self._pick(context, s, point)
        return {"PASS_THROUGH"}  # zoom and pan the preview

    def _take_answer(self, s: Session) -> None:
        if s.job.finished and s.job.faces is not None and not s.boxes:
            s.boxes = s.job.faces
            if s.placement is None:
                video = compat.find_strip(compat.editor(compat.sequencer_scene(bpy.context)), s.strip_name)
                s.placement = _placement(video, s.job.size, s.frame_size) if video is not None else None
            s.message = f"{len(s.boxes)} face(s) found" if s.boxes else "no face found: click the face"
            self._area.header_text_set(f"{HINT} ({s.message})")
            self._area.tag_redraw()
        elif s.job.finished and s.job.poll().status != DONE and s.message.endswith("..."):
            s.message = f"finding faces failed: {s.job.poll().message}"
            self._area.header_text_set(f"{HINT} ({s.message})")
            self._area.tag_redraw()

    def _clip_point(self, region: Any, where: Optional[Tuple[int, int]]) -> Optional[pick_map.Point]:
        s = _session
        if s is None or s.placement is None or region is None or where is None:
            return None
        vx, vy = region.view2d.region_to_view(*where)
        return pick_map.view_to_clip(s.placement, vx, vy)

    def _pick(self, context: Context, s: Session, point: pick_map.Point) -> Set[str]:
        video = compat.find_strip(compat.editor(compat.sequencer_scene(context)), s.strip_name)
        placement = s.placement
        if video is None or placement is None:
            self.report({"ERROR"}, f"The strip '{s.strip_name}' is gone")
            return self._end(context, {"CANCELLED"})
        hit = pick_map.box_at(s.boxes, *point)
        x, y = pick_map.box_centre(s.boxes[hit]) if hit is not None else pick_map.pixel(point, placement)
        pick = picks.add_pick(video, x, y, s.face_time, s.frame, placement.clip_w, placement.clip_h, s.sound_name)
        self.report({"INFO"}, f"{picks.label(len(picks.picks_of(video)) - 1, pick)} at {x}, {y}")
        return self._end(context, {"FINISHED"})

    def _end(self, context: Context, result: Set[str]) -> Set[str]:
        global _session
        if _session is not None and not _session.job.finished:
            _session.job.cancel()
        _session = None
        if self._handler is not None:
            bpy.types.SpaceSequenceEditor.draw_handler_remove(self._handler, "PREVIEW")
            self._handler = None
        if self._timer is not None:
            wm: Any = context.window_manager
            wm.event_timer_remove(self._timer)
            self._timer = None
        if self._area is not None:
            self._area.header_text_set(None)
            self._area.tag_redraw()
        sidebar.redraw_sequencers(context.window_manager)
        return result


def _preview_area(context: Context) -> Any:
    """The Sequencer area whose preview the user clicks: this one, else the first showing one."""
    here = getattr(context, "area", None)
    if compat.preview_region(here) is not None:
        return here
    screen = getattr(context, "screen", None)
    return next((a for a in (screen.areas if screen is not None else []) if compat.preview_region(a) is not None), None)


def _in_region(region: Any, event: Any) -> Optional[Tuple[int, int]]:
    if region is None:
        return None
    x, y = event.mouse_x - region.x, event.mouse_y - region.y
    return (x, y) if 0 <= x < region.width and 0 <= y < region.height else None


classes = (SEQUENCER_OT_wav2lip_pick_face,)


def register() -> None:
    picks.register()
    for cls in classes:
        bpy.utils.register_class(cls)


def unregister() -> None:
    global _session
    if _session is not None:
        _session.job.cancel()
        _session = None
    for cls in reversed(classes):
        bpy.utils.unregister_class(cls)
    picks.unregister()
