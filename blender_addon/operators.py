"""`bpy.ops.sequencer.wav2lip_sync` and its Cancel.

Interactive: starts the engine process and returns to the user (modal, with a timer); the result
is inserted when the process finishes. Background mode (`blender -b`, bpy as a module), where
modal operators and timers never run: the same operator waits for the process. Either way:
errors are reports, nothing is inserted unless the run succeeded, one undo step.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any, List, Optional, Set

import bpy
from bpy.app.handlers import persistent
from bpy.types import Context, Event

from .compat import StripLike

from . import capture, compat, preferences
from .engine_python import EngineNotFound, engine_env, find_engine_python
from .runner import CANCELLED, DONE, FAILED, JobRunner
from .snapshot import SnapshotError, SyncRequest, first_free_channel, plan

SUFFIX = ".lipsync"


@dataclass
class Job:
    runner: JobRunner
    request: SyncRequest
    scene_name: str
    dest: str
    mute_source: bool
    warnings: List[str] = field(default_factory=list)
    cancel_requested: bool = False
    started: float = field(default_factory=time.monotonic)
    source_state: tuple = ()  # the source strip as it was synced (see _strip_state)
    finish_warnings: List[str] = field(default_factory=list)  # found while inserting the result


_job: Optional[Job] = None
_unsaved_warned = False  # the unsaved-file warning is given once per session


def active_job() -> Optional[Job]:
    return _job


def _set_job(job: Optional[Job]) -> None:
    global _job
    _job = job


def cancel_active_job() -> None:
    job = _job
    if job is not None:
        job.cancel_requested = True
        job.runner.cancel()
        _set_job(None)


def _redraw_sequencers(context: Context) -> None:
    wm = getattr(context, "window_manager", None)
    if wm is None:
        return
    for window in wm.windows:
        for area in window.screen.areas:
            if area.type == "SEQUENCE_EDITOR":
                area.tag_redraw()


def unique_output(folder: str, stem: str, ext: str = ".mp4") -> str:
    name = bpy.path.clean_name(stem, replace="_") or "clip"
    path = os.path.join(folder, name + SUFFIX + ext)
    i = 1
    while os.path.exists(path):
        path = os.path.join(folder, f"{name}{SUFFIX}_{i:03d}{ext}")
        i += 1
    return path


def prepare(context: Context, op: Any) -> Job:
    """Everything up to a started engine process; raises SnapshotError with a user message."""
    if _job is not None:
        raise SnapshotError("a lip-sync job is already running; wait for it or cancel it")
    scene = compat.sequencer_scene(context)
    if scene is None or compat.editor(scene) is None:
        raise SnapshotError("this scene has no sequencer strips")
    video, sound = capture.choose_strips(context, scene, op.video_strip, op.audio_strip)
    if op.video_strip and video is None:
        raise SnapshotError(f"no strip named '{op.video_strip}'")
    if op.audio_strip and sound is None:
        raise SnapshotError(f"no strip named '{op.audio_strip}'")
    if video is None:
        raise SnapshotError("nothing to sync: select the movie or image strip with the face")
    if video.type not in capture.VIDEO_TYPES:
        raise SnapshotError(f"'{video.name}' is not a movie or image strip")
    if sound is None:
        raise SnapshotError(
            f"no sound strip for '{video.name}': select the dialogue's sound strip or place one under the clip"
        )
    if sound.type != compat.SOUND:
        raise SnapshotError(f"'{sound.name}' is not a sound strip")

    s = preferences.settings_from(context, op)
    if not s.checkpoint:
        raise SnapshotError("no Wav2Lip checkpoint: set it in the add-on preferences (Lip Sync)")
    if not os.path.isfile(s.checkpoint):
        raise SnapshotError(f"checkpoint not found: {s.checkpoint} (set the right file in the add-on preferences)")
    if s.detector == "box" and s.box is None:
        raise SnapshotError("the Fixed box detector needs a face box (top, bottom, left, right)")
    if s.detector != "box" and s.detector_weights and not os.path.isfile(s.detector_weights):
        raise SnapshotError(f"face detector weights not found: {s.detector_weights}")

    request = plan(capture.strip_info(scene, video), capture.strip_info(scene, sound), compat.scene_fps(scene),
                   rounds=compat.frame_index_rounds())
    if not os.path.isfile(request.face_path):
        raise SnapshotError(f"the clip's file is missing: {request.face_path}")
    if not os.path.isfile(request.audio_path):
        raise SnapshotError(f"the sound's file is missing: {request.audio_path}")

    try:
        python = find_engine_python(s.engine_python)
    except EngineNotFound as exc:
        raise SnapshotError(str(exc)) from exc
    if not python:
        raise SnapshotError(
            "no Python with wav2lip_core found: run install.py, or set 'Engine Python' in the add-on preferences"
        )
    folder, warning = preferences.output_folder(s)
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as exc:
        raise SnapshotError(f"cannot create the output folder {folder}: {exc}") from exc
    dest = unique_output(folder, request.source_name)

    try:  # the work folder is a hidden folder inside the output folder (see JobRunner)
        runner = JobRunner(dest=dest, env=engine_env())
    except OSError as exc:
        raise SnapshotError(f"cannot write into the output folder {folder}: {exc.strerror or exc}") from exc
    try:
        times_path = None
        if request.source_times is not None:
            times_path = str(runner.workdir / "source_times.json")
            with open(times_path, "w", encoding="utf-8") as f:
                f.write(request.source_times_json())
        runner.argv = [python, "-m", "wav2lip_core"] + request.engine_args(
            checkpoint=s.checkpoint,
            out=str(runner.work_out),
            source_times_path=times_path,
            detector="" if s.detector == "box" else s.detector,
            detector_weights=s.detector_weights,
            box=s.box if s.detector == "box" else None,
            device=s.device,
            precision=s.precision,
        )
    except BaseException:
        runner.cleanup()
        raise
    mute = op.mute_source
    if not op.properties.is_property_set("mute_source"):
        settings = getattr(scene, "wav2lip", None)
        mute = bool(settings.mute_source) if settings is not None else False
    global _unsaved_warned
    warnings = []
    if warning and not _unsaved_warned:
        warnings.append(warning)
        _unsaved_warned = True
    job = Job(runner=runner, request=request, scene_name=scene.name, dest=dest, mute_source=mute,
              warnings=warnings, source_state=_strip_state(video))
    runner.start()
    _set_job(job)
    return job


def _strip_state(strip: Optional[StripLike]) -> tuple:
    """What of the source strip the synced clip depends on: its file, content start and trims."""
    if strip is None:
        return ()
    return (capture.strip_filepath(strip), float(strip.frame_start), int(strip.frame_final_start),
            int(strip.frame_final_end), int(getattr(strip, "animation_offset_start", 0) or 0))


def _placement(job: Job, source: Optional[StripLike]) -> "tuple[int, int, str]":
    """(first frame, channel below, warning) for the result. The source strip may have been moved,
    changed or deleted while the engine ran: moved as a whole, the result follows it; otherwise it
    goes where the source was, and the warning says the clip matches the strip as it was."""
    req = job.request
    if source is None:
        return req.insert_frame, req.source_channel, (
            f"the source strip '{req.source_name}' was deleted while syncing; the synced clip was placed "
            f"where it was (frame {req.insert_frame}, channel {req.source_channel + 1} or above)")
    now = _strip_state(source)
    if not job.source_state or now == job.source_state:
        return req.insert_frame, int(source.channel), ""
    path0, start0, first0, end0, anim0 = job.source_state
    path1, start1, first1, end1, anim1 = now
    shift = first1 - first0
    if path1 == path0 and anim1 == anim0 and end1 - first1 == end0 - first0 and abs((start1 - start0) - shift) < 1e-6:
        return req.insert_frame + shift, int(source.channel), ""
    return req.insert_frame, int(source.channel), (
        f"'{req.source_name}' was changed while syncing; the synced clip matches it as it was "
        f"(frames {req.insert_frame}-{req.insert_frame + req.used_frames - 1}): sync again for the new version")


def insert_result(job: Job) -> StripLike:
    """Put the finished clip on the timeline; returns the new strip."""
    req = job.request
    scene = bpy.data.scenes.get(job.scene_name)
    if scene is None:
        raise SnapshotError(f"the scene '{job.scene_name}' is gone; the synced clip is at {job.dest}")
    ed = compat.editor(scene, create=True)
    if ed is None:
        raise SnapshotError(f"the scene '{job.scene_name}' has no sequencer")
    source = compat.find_strip(ed, req.source_name)
    start, above, changed = _placement(job, source)
    if changed:
        job.finish_warnings.append(changed)
    n = req.used_frames
    channel = first_free_channel(above, start, start + n, capture.occupied(scene))
    strip = compat.new_movie(ed, req.source_name + SUFFIX, job.dest, channel, start)
    strip.name = _unique_strip_name(ed, req.source_name + SUFFIX, strip)
    if bpy.data.filepath:
        try:
            strip.filepath = bpy.path.relpath(job.dest)
        except ValueError:  # another drive (Windows): keep it absolute
            pass
    if strip.frame_final_duration > n:
        strip.frame_final_duration = n
    elif strip.frame_final_duration < n:
        job.finish_warnings.append(
            f"the synced clip has {strip.frame_final_duration} frames, {n} were expected"
        )
    if source is not None:
        _copy_look(source, strip)
    for s in compat.current_strips(ed):
        s.select = False
    strip.select = True
    compat.set_active_strip(ed, strip)
    if job.mute_source and source is not None:
        source.mute = True
    return strip


def _unique_strip_name(ed: Any, wanted: str, own: StripLike) -> str:
    """`Face.lipsync`, else `Face.lipsync.001`, ... (Blender's own renaming drops the suffix)."""
    taken = {s.name for s in compat.all_strips(ed) if s != own}
    name, i = wanted, 1
    while name in taken:
        name = f"{wanted}.{i:03d}"
        i += 1
    return name


def _copy_look(src: StripLike, dst: StripLike) -> None:
    """Same placement as the source, so the synced clip covers it exactly."""
    try:
        for attr in ("offset_x", "offset_y", "scale_x", "scale_y", "rotation"):
            setattr(dst.transform, attr, getattr(src.transform, attr))
        dst.transform.origin = tuple(src.transform.origin)
        for attr in ("min_x", "max_x", "min_y", "max_y"):
            setattr(dst.crop, attr, getattr(src.crop, attr))
        dst.use_flip_x = src.use_flip_x
        dst.use_flip_y = src.use_flip_y
    except (AttributeError, TypeError):
        pass


class SEQUENCER_OT_wav2lip_sync(bpy.types.Operator):
    """Lip-sync the selected movie strip to the sound strip, in the background, and put the result above it"""

    bl_idname = "sequencer.wav2lip_sync"
    bl_label = "Sync Lips"
    bl_options = {"UNDO"}

    video_strip: bpy.props.StringProperty(  # type: ignore[valid-type]
        name="Video Strip", default="", description="Movie or image strip (empty: from the selection)")
    audio_strip: bpy.props.StringProperty(  # type: ignore[valid-type]
        name="Sound Strip", default="", description="Sound strip (empty: from the selection)")
    checkpoint: bpy.props.StringProperty(  # type: ignore[valid-type]
        name="Checkpoint", default="", subtype="FILE_PATH", description="Override the preferences' checkpoint")
    detector: bpy.props.EnumProperty(  # type: ignore[valid-type]
        name="Face Detector", items=[("PREFS", "Preferences", "Use the add-on preferences")] + preferences.DETECTORS,
        default="PREFS")
    detector_weights: bpy.props.StringProperty(  # type: ignore[valid-type]
        name="Detector Weights", default="", subtype="FILE_PATH")
    box: bpy.props.IntVectorProperty(  # type: ignore[valid-type]
        name="Face Box", size=4, default=(0, 0, 0, 0), min=0)
    device: bpy.props.EnumProperty(  # type: ignore[valid-type]
        name="Device", items=[("PREFS", "Preferences", "Use the add-on preferences")] + preferences.DEVICES,
        default="PREFS")
    precision: bpy.props.EnumProperty(  # type: ignore[valid-type]
        name="Precision", items=[("PREFS", "Preferences", "Use the add-on preferences")] + preferences.PRECISIONS,
        default="PREFS")
    engine_python: bpy.props.StringProperty(  # type: ignore[valid-type]
        name="Engine Python", default="", subtype="FILE_PATH")
    output_dir: bpy.props.StringProperty(  # type: ignore[valid-type]
        name="Output Folder", default="", subtype="DIR_PATH")
    mute_source: bpy.props.BoolProperty(  # type: ignore[valid-type]
        name="Mute Source", default=False, description="Mute the source strip after inserting the result")

    _timer: Any = None

    @classmethod
    def poll(cls, context: Context) -> bool:
        return compat.sequencer_scene(context) is not None

    # -- synchronous (background mode, scripts) ---------------------------------------------------

    def execute(self, context: Context) -> Set[str]:
        try:
            return self._execute(context)
        except Exception as exc:  # noqa: BLE001 - a report, never a traceback
            cancel_active_job()
            self.report({"ERROR"}, f"Lip sync failed: {exc}")
            return {"CANCELLED"}

    def _execute(self, context: Context) -> Set[str]:
        try:
            job = prepare(context, self)
        except SnapshotError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        for w in job.warnings:
            self.report({"WARNING"}, w)
        last = ""
        try:
            while not job.runner.finished:
                p = job.runner.wait(0.5)
                if bpy.app.background and p.text != last:
                    last = p.text
                    print(f"wav2lip: {last}", file=sys.stderr, flush=True)
        except KeyboardInterrupt:
            cancel_active_job()
            self.report({"WARNING"}, "Lip sync cancelled")
            return {"CANCELLED"}
        return self._finish(context, job)

    # -- interactive --------------------------------------------------------------------------------

    def invoke(self, context: Context, event: Event) -> Set[str]:
        if bpy.app.background or context.window is None:
            return self.execute(context)
        try:
            job = prepare(context, self)
        except SnapshotError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        except Exception as exc:  # noqa: BLE001 - a report, never a traceback
            cancel_active_job()
            self.report({"ERROR"}, f"Lip sync failed: {exc}")
            return {"CANCELLED"}
        for w in job.warnings:
            self.report({"WARNING"}, w)
        wm: Any = context.window_manager  # (Any: the stubs type Context's properties oddly)
        self._timer = wm.event_timer_add(0.25, window=context.window)
        wm.modal_handler_add(self)
        _redraw_sequencers(context)
        return {"RUNNING_MODAL"}

    def modal(self, context: Context, event: Event) -> Set[str]:
        job = _job
        if job is None or job.cancel_requested:
            return self._stop(context, cancelled=True)
        if event.type == "ESC" and event.value == "PRESS":
            # This handler sees every Esc in the window before the keymap does: cancel only an
            # Esc aimed at the job, so stopping playback or a tool never throws the work away.
            from . import panel  # (imported here: panel imports this module)

            if panel.esc_targets_job(context, event):
                cancel_active_job()
                return self._stop(context, cancelled=True)
            return {"PASS_THROUGH"}
        if event.type == "TIMER":
            _redraw_sequencers(context)
            if job.runner.finished:
                self._remove_timer(context)
                return self._finish(context, job)
        return {"PASS_THROUGH"}

    def cancel(self, context: Context) -> None:  # Blender calls this when the modal is aborted
        cancel_active_job()
        self._remove_timer(context)

    # -- shared -------------------------------------------------------------------------------------

    def _remove_timer(self, context: Context) -> None:
        if self._timer is not None:
            wm: Any = context.window_manager
            wm.event_timer_remove(self._timer)
            self._timer = None

    def _stop(self, context: Context, cancelled: bool) -> Set[str]:
        self._remove_timer(context)
        _redraw_sequencers(context)
        if cancelled:
            self.report({"WARNING"}, "Lip sync cancelled; nothing was inserted")
        return {"CANCELLED"}

    def _finish(self, context: Context, job: Job) -> Set[str]:
        _set_job(None)
        p = job.runner.poll()
        _redraw_sequencers(context)
        if p.status == CANCELLED:
            self.report({"WARNING"}, "Lip sync cancelled; nothing was inserted")
            return {"CANCELLED"}
        if p.status == FAILED or p.status != DONE:
            self.report({"ERROR"}, f"Lip sync failed: {p.message}")
            return {"CANCELLED"}
        for note in p.notes:  # the engine's own (e.g. which face detector it used, and the better one)
            self.report({"INFO"}, note)
        try:
            strip = insert_result(job)
        except Exception as exc:  # noqa: BLE001 - a report, never a traceback
            self.report({"ERROR"}, f"Lip sync finished but the clip could not be inserted: {exc}; "
                                   f"the synced clip is at {job.dest}")
            return {"CANCELLED"}
        for w in job.finish_warnings:
            self.report({"WARNING"}, w)
        for note in job.request.notes:
            self.report({"INFO"}, note)
        secs = time.monotonic() - job.started
        self.report({"INFO"}, f"Inserted '{strip.name}' on channel {strip.channel} at frame {job.request.insert_frame} ({secs:.0f} s)")
        return {"FINISHED"}


class SEQUENCER_OT_wav2lip_cancel(bpy.types.Operator):
    """Stop the running lip-sync job; nothing is inserted (Esc with the mouse over the Lip Sync panel does the same)"""

    bl_idname = "sequencer.wav2lip_cancel"
    bl_label = "Cancel Lip Sync"
    bl_options = {"INTERNAL"}

    @classmethod
    def poll(cls, context: Context) -> bool:
        return _job is not None

    def execute(self, context: Context) -> Set[str]:
        cancel_active_job()
        _redraw_sequencers(context)
        return {"FINISHED"}


@persistent
def _on_load_pre(*_args: Any) -> None:
    cancel_active_job()


classes = (SEQUENCER_OT_wav2lip_sync, SEQUENCER_OT_wav2lip_cancel)


def register() -> None:
    for cls in classes:
        bpy.utils.register_class(cls)
    if _on_load_pre not in bpy.app.handlers.load_pre:
        bpy.app.handlers.load_pre.append(_on_load_pre)


def unregister() -> None:
    cancel_active_job()
    if _on_load_pre in bpy.app.handlers.load_pre:
        bpy.app.handlers.load_pre.remove(_on_load_pre)
    for cls in reversed(classes):
        bpy.utils.unregister_class(cls)
