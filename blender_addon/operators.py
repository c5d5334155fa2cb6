"""`bpy.ops.sequencer.wav2lip_sync` (Sync Lips, and Preview with preview=True) and its Cancel.

The jobs run on the session's warm engine (engine.py, queued by sync_batch.py). Interactive: the
operator returns to the user (modal, with a timer) and inserts each result as it finishes, one
undo step each ("Sync Lips: Face", "Preview Lips: Face"). Background mode (`blender -b`, bpy as
a module), where modal operators and timers never run: the same operator waits. Either way:
errors are reports, nothing is inserted for a job that did not succeed, and a clip that was
complete when Cancel came is inserted (it is the work the user waited for).
"""

from __future__ import annotations

import sys
import time
from typing import Any, Set

import bpy
from bpy.app.handlers import persistent
from bpy.types import Context, Event

from . import compat, engine, job_settings, sidebar, sync_batch, sync_meter
from .insert import insert_result
from .sync_batch import SUFFIX, Job, active_batch, active_job, prepare  # noqa: F401 - the add-on's API
from .job_state import CANCELLED, DONE, FAILED
from .snapshot import SnapshotError


def cancel_active_job() -> None:
    """Cancel: stop the current job and drop the queue; a clip already complete stays for the
    operator to insert."""
    sync_batch.cancel_active()


def _redraw_sequencers(context: Context) -> None:
    wm = getattr(context, "window_manager", None)
    if wm is None:
        return
    for window in wm.windows:
        for area in window.screen.areas:
            if area.type == "SEQUENCE_EDITOR":
                area.tag_redraw()


def undo_step_name(job: Job) -> str:
    return f"{'Preview Lips' if job.preview else 'Sync Lips'}: {job.request.source_name}"


def _undo_push(job: Job) -> None:
    """One undo step per inserted result, named for what it did (the operator has no step of its
    own: Blender would name it after the operator, a preview as "Sync Lips")."""
    if bpy.app.background:
        return
    try:
        bpy.ops.ed.undo_push(message=undo_step_name(job))
    except RuntimeError:
        pass


def cancelled_message(batch: Any) -> str:
    """What Cancel did, counting the results that are on the timeline."""
    inserted = sum(1 for j in batch.jobs if j.outcome) if batch is not None else 0
    if batch is None or not inserted:
        return "Lip sync cancelled; nothing was inserted"
    return f"Lip sync cancelled; {inserted} of {len(batch.jobs)} inserted"


# Every operator property skips Blender's "last used" memory: a button or menu entry sets only what
# it names, so one Preview press must not turn the next Sync into a preview.
SKIP: Any = {"SKIP_SAVE"}  # (Any: the stubs want their own literal type, which a module-level set loses)


def _prefs_enum(name: str, items: list) -> Any:
    """An operator option that defaults to the add-on preferences' choice (scripts may override)."""
    return bpy.props.EnumProperty(name=name, items=[("PREFS", "Preferences", "Use the add-on preferences")] + items,
                                  default="PREFS", options=SKIP)


PREVIEW_DESCRIPTION = ("Lip-sync a few seconds of the selected movie strip (the scene's preview range, else 3 s "
                       "around the playhead) as a preview strip, replaced by the next preview or the full sync")


class SEQUENCER_OT_wav2lip_sync(bpy.types.Operator):
    """Lip-sync the selected movie strip to the sound strip, in the background, and put the result above it"""

    bl_idname = "sequencer.wav2lip_sync"
    bl_label = "Sync Lips"
    # No "UNDO": each result is its own undo step, pushed when it is inserted (_undo_push).

    video_strip: bpy.props.StringProperty(  # type: ignore[valid-type]
        name="Video Strip", default="", description="Movie or image strip (empty: from the selection)", options=SKIP)
    audio_strip: bpy.props.StringProperty(  # type: ignore[valid-type]
        name="Sound Strip", default="", description="Sound strip (empty: from the selection)", options=SKIP)
    checkpoint: bpy.props.StringProperty(  # type: ignore[valid-type]
        name="Checkpoint", default="", subtype="FILE_PATH", description="Override the preferences' checkpoint",
        options=SKIP)
    detector: _prefs_enum("Face Detector", job_settings.DETECTORS)  # type: ignore[valid-type]
    detector_weights: bpy.props.StringProperty(  # type: ignore[valid-type]
        name="Detector Weights", default="", subtype="FILE_PATH", options=SKIP)
    box: bpy.props.IntVectorProperty(  # type: ignore[valid-type]
        name="Face Box", size=4, default=(0, 0, 0, 0), min=0, options=SKIP)
    device: _prefs_enum("Device", job_settings.DEVICES)  # type: ignore[valid-type]
    precision: _prefs_enum("Precision", job_settings.PRECISIONS)  # type: ignore[valid-type]
    engine_python: bpy.props.StringProperty(  # type: ignore[valid-type]
        name="Engine Python", default="", subtype="FILE_PATH", options=SKIP)
    output_dir: bpy.props.StringProperty(  # type: ignore[valid-type]
        name="Output Folder", default="", subtype="DIR_PATH", options=SKIP)
    mute_source: bpy.props.BoolProperty(  # type: ignore[valid-type]
        name="Mute Source", default=False, description="Mute the source strip after inserting the result", options=SKIP)
    blend: _prefs_enum("Blend", job_settings.BLENDS)  # type: ignore[valid-type]
    silence: _prefs_enum("Silence", job_settings.SILENCES)  # type: ignore[valid-type]
    align: _prefs_enum("Align Face", job_settings.ALIGNS)  # type: ignore[valid-type]
    sync_offset: bpy.props.FloatProperty(  # type: ignore[valid-type]
        name="Sync Offset", default=0.0, description="Frames (set: overrides the scene's Sync Offset)", options=SKIP)
    enhance_weights: bpy.props.StringProperty(  # type: ignore[valid-type]
        name="Restorer Weights", default="", subtype="FILE_PATH",
        description="Enhance face with this restorer (empty: the scene's Enhance setting)", options=SKIP)
    enhance_fidelity: bpy.props.FloatProperty(  # type: ignore[valid-type]
        name="Fidelity", default=0.5, min=0.0, max=1.0, description="CodeFormer only (set: overrides the preferences)",
        options=SKIP)
    preview: bpy.props.BoolProperty(  # type: ignore[valid-type]
        name="Preview", default=False,
        description="Sync only a short range (the scene's preview range, else 3 s around the playhead) as a "
                    "preview strip, replaced by the next preview or the full sync", options=SKIP)

    _timer: Any = None
    _batch: Any = None  # the batch this (modal) call follows

    @classmethod
    def poll(cls, context: Context) -> bool:
        return compat.sequencer_scene(context) is not None

    @classmethod
    def description(cls, context: Context, properties: Any) -> str:
        """The tooltip: Preview's own (a button with preview=True is the same operator)."""
        if getattr(properties, "preview", False):
            return PREVIEW_DESCRIPTION
        return cls.__doc__ or ""

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
            batch = sync_batch.prepare_batch(context, self, self.preview)
        except SnapshotError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        for w in batch.jobs[0].warnings:
            self.report({"WARNING"}, w)
        self._batch = batch
        last = ""
        result: Set[str] = {"CANCELLED"}
        try:
            while True:
                job = active_job()
                if job is None:
                    if sync_batch.last_batch() is batch and any(j.cancel_requested for j in batch.jobs):
                        return self._stop(context, cancelled=True)
                    return result
                p = job.engine_job.wait(0.5)
                if bpy.app.background and p.text != last:
                    last = p.text
                    print(f"wav2lip: {job.request.source_name}: {last}", file=sys.stderr, flush=True)
                if job.engine_job.finished:
                    result = self._finish_in_batch(context, job)
        except KeyboardInterrupt:
            cancel_active_job()
            return self._stop(context, cancelled=True)

    # -- interactive --------------------------------------------------------------------------------

    def invoke(self, context: Context, event: Event) -> Set[str]:
        if bpy.app.background or context.window is None:
            return self.execute(context)
        try:
            self._batch = sync_batch.prepare_batch(context, self, self.preview)
            job = self._batch.jobs[0]
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
        if active_batch() is not self._batch:  # cancelled (a new batch may have started since)
            return self._stop(context, cancelled=True)
        job = active_job()
        if job is None or job.cancel_requested:
            return self._stop(context, cancelled=True)
        if event.type == "ESC" and event.value == "PRESS":
            # This handler sees every Esc in the window before the keymap does: cancel only an
            # Esc aimed at the job, so stopping playback or a tool never throws the work away.
            if sidebar.esc_targets_job(context, event):
                cancel_active_job()
                return self._stop(context, cancelled=True)
            return {"PASS_THROUGH"}
        if event.type == "TIMER":
            _redraw_sequencers(context)
            while job is not None and job.engine_job.finished:
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
        batch = self._batch
        if cancelled and batch is not None:
            # A job that completed just before the Cancel: its clip is whole, so it goes in.
            for job in sync_batch.done_but_not_handled(batch):
                self._finish_in_batch(context, job)
        _redraw_sequencers(context)
        if cancelled:
            self.report({"WARNING"}, cancelled_message(batch))
        return {"CANCELLED"}

    def _finish_in_batch(self, context: Context, job: Job) -> Set[str]:
        """Report (and insert) one finished job of the batch, each inserted result its own undo step."""
        result = self._finish(context, job)
        if result == {"FINISHED"}:
            _undo_push(job)
        return result

    def _finish(self, context: Context, job: Job) -> Set[str]:
        sync_batch.mark_handled(job)
        p = job.engine_job.poll()
        _redraw_sequencers(context)
        name = job.request.source_name
        if p.status == CANCELLED:
            self.report({"WARNING"}, cancelled_message(self._batch))
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
        sync_meter.remember(p, name)  # the panel's "Sync: +0.3 frames (good)"
        r = job.engine_job
        began = r.submitted_at if r.submitted_at is not None else job.started
        secs = (r.ended_at if r.ended_at is not None else time.monotonic()) - began
        what = "preview synced" if job.preview else "synced"
        self.report({"INFO"}, f"Inserted '{strip.name}' on channel {strip.channel} at frame "
                              f"{job.request.insert_frame} ({what} in {secs:.0f} s)")
        return {"FINISHED"}


class SEQUENCER_OT_wav2lip_cancel(bpy.types.Operator):
    """Stop the running lip-sync jobs; results on the timeline stay (Esc over the Lip Sync panel does the same)"""

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
    # Another file: its jobs are gone (a complete clip too: its scene is closing), and so is the
    # engine (a later sync starts one).
    sync_batch.cancel_active(drop_done=True)
    engine.shutdown()


classes = (SEQUENCER_OT_wav2lip_sync, SEQUENCER_OT_wav2lip_cancel)


def register() -> None:
    for cls in classes:
        bpy.utils.register_class(cls)
    if _on_load_pre not in bpy.app.handlers.load_pre:
        bpy.app.handlers.load_pre.append(_on_load_pre)


def unregister() -> None:
    sync_batch.cancel_active(drop_done=True)
    engine.shutdown()  # disabling the add-on (or Blender's own exit path) leaves no engine running
    if _on_load_pre in bpy.app.handlers.load_pre:
        bpy.app.handlers.load_pre.remove(_on_load_pre)
    for cls in reversed(classes):
        bpy.utils.unregister_class(cls)
