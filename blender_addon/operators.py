"""`bpy.ops.sequencer.wav2lip_sync` (Sync Lips, and Preview with preview=True) and its Cancel.

The jobs run on the session's warm engine (engine.py, queued by jobs.py). Interactive: the
operator returns to the user (modal, with a timer) and inserts each result as it finishes, one
undo step each. Background mode (`blender -b`, bpy as a module), where modal operators and
timers never run: the same operator waits. Either way: errors are reports, nothing is inserted
for a job that did not succeed.
"""

from __future__ import annotations

import sys
import time
from typing import Any, Set

import bpy
from bpy.app.handlers import persistent
from bpy.types import Context, Event

from . import compat, engine, jobs, preferences
from .insert import insert_result
from .jobs import SUFFIX, Job, active_batch, active_job, prepare  # noqa: F401 - the add-on's API
from .runner import CANCELLED, DONE, FAILED
from .snapshot import SnapshotError


def cancel_active_job() -> None:
    """Cancel: stop the current job, drop the queue, insert nothing more."""
    jobs.cancel_active()


def _redraw_sequencers(context: Context) -> None:
    wm = getattr(context, "window_manager", None)
    if wm is None:
        return
    for window in wm.windows:
        for area in window.screen.areas:
            if area.type == "SEQUENCE_EDITOR":
                area.tag_redraw()


def _undo_push(name: str) -> None:
    """One undo step per inserted result; the batch's last one is the operator's own step."""
    if bpy.app.background:
        return
    try:
        bpy.ops.ed.undo_push(message=f"Sync Lips: {name}")
    except RuntimeError:
        pass


def _prefs_enum(name: str, items: list) -> Any:
    """An operator option that defaults to the add-on preferences' choice (scripts may override)."""
    return bpy.props.EnumProperty(name=name, items=[("PREFS", "Preferences", "Use the add-on preferences")] + items,
                                  default="PREFS")


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
    detector: _prefs_enum("Face Detector", preferences.DETECTORS)  # type: ignore[valid-type]
    detector_weights: bpy.props.StringProperty(  # type: ignore[valid-type]
        name="Detector Weights", default="", subtype="FILE_PATH")
    box: bpy.props.IntVectorProperty(  # type: ignore[valid-type]
        name="Face Box", size=4, default=(0, 0, 0, 0), min=0)
    device: _prefs_enum("Device", preferences.DEVICES)  # type: ignore[valid-type]
    precision: _prefs_enum("Precision", preferences.PRECISIONS)  # type: ignore[valid-type]
    engine_python: bpy.props.StringProperty(  # type: ignore[valid-type]
        name="Engine Python", default="", subtype="FILE_PATH")
    output_dir: bpy.props.StringProperty(  # type: ignore[valid-type]
        name="Output Folder", default="", subtype="DIR_PATH")
    mute_source: bpy.props.BoolProperty(  # type: ignore[valid-type]
        name="Mute Source", default=False, description="Mute the source strip after inserting the result")
    blend: _prefs_enum("Blend", preferences.BLENDS)  # type: ignore[valid-type]
    silence: _prefs_enum("Silence", preferences.SILENCES)  # type: ignore[valid-type]
    align: _prefs_enum("Align Face", preferences.ALIGNS)  # type: ignore[valid-type]
    sync_offset: bpy.props.FloatProperty(  # type: ignore[valid-type]
        name="Sync Offset", default=0.0, description="Frames (set: overrides the scene's Sync Offset)")
    enhance_weights: bpy.props.StringProperty(  # type: ignore[valid-type]
        name="Restorer Weights", default="", subtype="FILE_PATH",
        description="Enhance face with this restorer (empty: the scene's Enhance setting)")
    enhance_fidelity: bpy.props.FloatProperty(  # type: ignore[valid-type]
        name="Fidelity", default=0.5, min=0.0, max=1.0, description="CodeFormer only (set: overrides the preferences)")
    preview: bpy.props.BoolProperty(  # type: ignore[valid-type]
        name="Preview", default=False,
        description="Sync only a short range (the scene's preview range, else 3 s around the playhead) as a "
                    "preview strip, replaced by the next preview or the full sync")

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
            batch = jobs.prepare_batch(context, self, self.preview)
        except SnapshotError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        for w in batch.jobs[0].warnings:
            self.report({"WARNING"}, w)
        last = ""
        result: Set[str] = {"CANCELLED"}
        try:
            while True:
                job = active_job()
                if job is None:
                    return result
                p = job.runner.wait(0.5)
                if bpy.app.background and p.text != last:
                    last = p.text
                    print(f"wav2lip: {job.request.source_name}: {last}", file=sys.stderr, flush=True)
                if job.runner.finished:
                    result = self._finish_in_batch(context, job)
        except KeyboardInterrupt:
            cancel_active_job()
            self.report({"WARNING"}, "Lip sync cancelled")
            return {"CANCELLED"}

    # -- interactive --------------------------------------------------------------------------------

    def invoke(self, context: Context, event: Event) -> Set[str]:
        if bpy.app.background or context.window is None:
            return self.execute(context)
        try:
            job = jobs.prepare_batch(context, self, self.preview).jobs[0]
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
        job = active_job()
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
            while job is not None and job.runner.finished:
                last = active_batch() is None or active_batch().jobs[-1] is job  # type: ignore[union-attr]
                result = self._finish_in_batch(context, job)
                if last:
                    self._remove_timer(context)
                    return result
                job = active_job()
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

    def _finish_in_batch(self, context: Context, job: Job) -> Set[str]:
        """Report (and insert) one finished job of the running batch; a result inserted while
        more jobs follow gets its own undo step here."""
        batch = active_batch()
        more = batch is not None and batch.jobs[-1] is not job
        result = self._finish(context, job)
        if result == {"FINISHED"} and more:
            _undo_push(job.request.source_name)
        return result

    def _finish(self, context: Context, job: Job) -> Set[str]:
        jobs.mark_handled(job)
        p = job.runner.poll()
        _redraw_sequencers(context)
        name = job.request.source_name
        if p.status == CANCELLED:
            self.report({"WARNING"}, "Lip sync cancelled; nothing was inserted")
            return {"CANCELLED"}
        if p.status == FAILED or p.status != DONE:
            self.report({"ERROR"}, (f"Lip sync of '{name}' failed: " if job.of_many else "Lip sync failed: ") + p.message)
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
        job.outcome = strip.name
        secs = time.monotonic() - job.started
        what = "preview" if job.preview else "synced clip"
        self.report({"INFO"}, f"Inserted '{strip.name}' on channel {strip.channel} at frame "
                              f"{job.request.insert_frame} ({what}, {secs:.0f} s)")
        return {"FINISHED"}


class SEQUENCER_OT_wav2lip_cancel(bpy.types.Operator):
    """Stop the running lip-sync job; nothing is inserted (Esc with the mouse over the Lip Sync panel does the same)"""

    bl_idname = "sequencer.wav2lip_cancel"
    bl_label = "Cancel Lip Sync"
    bl_options = {"INTERNAL"}

    @classmethod
    def poll(cls, context: Context) -> bool:
        return active_batch() is not None

    def execute(self, context: Context) -> Set[str]:
        cancel_active_job()
        _redraw_sequencers(context)
        return {"FINISHED"}


@persistent
def _on_load_pre(*_args: Any) -> None:
    # Another file: its jobs are gone, and so is the engine (a later sync starts one).
    cancel_active_job()
    engine.shutdown()


classes = (SEQUENCER_OT_wav2lip_sync, SEQUENCER_OT_wav2lip_cancel)


def register() -> None:
    for cls in classes:
        bpy.utils.register_class(cls)
    if _on_load_pre not in bpy.app.handlers.load_pre:
        bpy.app.handlers.load_pre.append(_on_load_pre)


def unregister() -> None:
    cancel_active_job()
    engine.shutdown()  # disabling the add-on (or Blender's own exit path) leaves no engine running
    if _on_load_pre in bpy.app.handlers.load_pre:
        bpy.app.handlers.load_pre.remove(_on_load_pre)
    for cls in reversed(classes):
        bpy.utils.unregister_class(cls)
