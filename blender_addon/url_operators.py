"""Sequencer **Add > Movie from URL…** (`bpy.ops.sequencer.wav2lip_movie_from_url`), the
follower that adds the strips when the download is done (`sequencer.wav2lip_url_watch`) and its
Cancel (`sequencer.wav2lip_url_cancel`). url_fetch.py holds the download and the strips.

Interactive: the menu entry shows a dialog (URL, From, To, Channel; the panel's button runs with
the panel's fields), the download starts on the warm engine and the operator returns at once; the
follower, a modal operator on a timer, keeps Blender responsive, redraws the panel's progress and
adds the movie and its sound at the playhead as one undo step when the download is done. Esc
over the Lip Sync panel, or its Cancel button, stops it. Background mode (`blender -b`, bpy as a
module), where timers never run: the same operator waits and adds the strips itself.
"""

from __future__ import annotations

import sys
from typing import Any, Set

import bpy
from bpy.app.handlers import persistent
from bpy.types import Context, Event

from . import compat, sidebar, url_fetch
from .job_state import CANCELLED, DONE
from .url_fetch import Fetch, FetchRefused

SKIP: Any = {"SKIP_SAVE"}  # (as operators.py: a button sets only what it names)
UNDO_NAME = "Movie from URL"


def _redraw_sequencers(context: Context) -> None:
    sidebar.redraw_sequencers(getattr(context, "window_manager", None))


def report_finished(op: Any, fetch: Fetch) -> Set[str]:
    """Add the finished download's strips (url_fetch.finish) and say what happened."""
    status, message, strips = url_fetch.finish(fetch)
    if status == DONE:
        for w in fetch.warnings:
            op.report({"WARNING"}, w)
        op.report({"INFO"}, message)
        if not bpy.app.background:
            try:
                bpy.ops.ed.undo_push(message=f"{UNDO_NAME}: {strips[0].name}")
            except RuntimeError:
                pass
        return {"FINISHED"}
    if status == CANCELLED:
        op.report({"WARNING"}, "Download cancelled; nothing was added")
    else:
        op.report({"ERROR"}, f"Movie from URL failed: {message}")
    return {"CANCELLED"}


class SEQUENCER_OT_wav2lip_movie_from_url(bpy.types.Operator):
    """Download a video (or a part of it) from a web address in the background, then add its movie and sound strips at the playhead"""

    bl_idname = "sequencer.wav2lip_movie_from_url"
    bl_label = "Movie from URL"

    url: bpy.props.StringProperty(  # type: ignore[valid-type]
        name="URL", default="", description="An http:// or https:// address: a page playing one video, or the video file",
        options=SKIP)
    start: bpy.props.FloatProperty(  # type: ignore[valid-type]
        name="From", default=0.0, min=0.0, precision=2, description="Start of the part to download, seconds (0: the start)",
        options=SKIP)
    end: bpy.props.FloatProperty(  # type: ignore[valid-type]
        name="To", default=0.0, min=0.0, precision=2, description="End of the part to download, seconds (0: the end)",
        options=SKIP)
    channel: bpy.props.IntProperty(  # type: ignore[valid-type]
        name="Channel", default=1, min=1, max=128,
        description="The movie goes on this channel (or the first free one above), its sound above it", options=SKIP)
    engine_python: bpy.props.StringProperty(  # type: ignore[valid-type]
        name="Engine Python", default="", subtype="FILE_PATH", options=SKIP)

    @classmethod
    def poll(cls, context: Context) -> bool:
        return compat.sequencer_scene(context) is not None

    def invoke(self, context: Context, event: Event) -> Set[str]:
        if bpy.app.background or context.window is None:
            return self.execute(context)
        wm: Any = context.window_manager
        return wm.invoke_props_dialog(self, width=480)

    def draw(self, context: Context) -> None:
        layout: Any = self.layout  # (the stubs allow None: never in draw)
        col = layout.column()
        col.prop(self, "url")
        row = col.row(align=True)
        row.prop(self, "start")
        row.prop(self, "end")
        col.prop(self, "channel")
        col.label(text="From/To 0: the whole video", icon="INFO")

    def execute(self, context: Context) -> Set[str]:
        try:
            fetch = url_fetch.start_fetch(context, self.url, self.start, self.end, self.channel, self)
        except FetchRefused as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        except Exception as exc:  # noqa: BLE001 - a report, never a traceback
            self.report({"ERROR"}, f"Movie from URL failed: {exc}")
            return {"CANCELLED"}
        if bpy.app.background or context.window is None:
            return self._wait(fetch)
        # The follower is its own modal operator: this one may have been run from a dialog.
        ops: Any = bpy.ops.sequencer  # (our own operator: not in the stubs)
        ops.wav2lip_url_watch("INVOKE_DEFAULT")
        _redraw_sequencers(context)
        return {"FINISHED"}

    def _wait(self, fetch: Fetch) -> Set[str]:
        last = ""
        try:
            while not fetch.job.finished:
                p = fetch.job.wait(0.5)
                if bpy.app.background and p.text != last:
                    last = p.text
                    print(f"wav2lip: {fetch.url}: {last}", file=sys.stderr, flush=True)
        except KeyboardInterrupt:
            url_fetch.cancel_active()
            fetch.job.wait(15.0)
        return report_finished(self, fetch)


class SEQUENCER_OT_wav2lip_url_watch(bpy.types.Operator):
    """Follow the running download and add its strips when it is done"""

    bl_idname = "sequencer.wav2lip_url_watch"
    bl_label = "Follow Download"
    bl_options = {"INTERNAL"}

    _timer: Any = None
    _fetch: Any = None

    def invoke(self, context: Context, event: Event) -> Set[str]:
        self._fetch = url_fetch.active_fetch()
        if self._fetch is None or context.window is None:
            return {"CANCELLED"}
        wm: Any = context.window_manager
        self._timer = wm.event_timer_add(0.25, window=context.window)
        wm.modal_handler_add(self)
        return {"RUNNING_MODAL"}

    def modal(self, context: Context, event: Event) -> Set[str]:
        fetch = self._fetch
        if fetch.handled:  # dropped (another file was opened)
            self._remove_timer(context)
            return {"CANCELLED"}
        if event.type == "ESC" and event.value == "PRESS" and sidebar.esc_targets_job(context, event):
            url_fetch.cancel_active()
        if event.type == "TIMER" or fetch.job.finished:
            _redraw_sequencers(context)
            if fetch.job.finished:
                self._remove_timer(context)
                return report_finished(self, fetch)
        return {"PASS_THROUGH"}

    def cancel(self, context: Context) -> None:  # Blender aborts the modal (the window closes)
        url_fetch.cancel_active()
        self._remove_timer(context)

    def _remove_timer(self, context: Context) -> None:
        if self._timer is not None:
            wm: Any = context.window_manager
            wm.event_timer_remove(self._timer)
            self._timer = None


class SEQUENCER_OT_wav2lip_url_cancel(bpy.types.Operator):
    """Stop the download; nothing of it is kept (Esc over the Lip Sync panel does the same)"""

    bl_idname = "sequencer.wav2lip_url_cancel"
    bl_label = "Cancel Download"
    bl_options = {"INTERNAL"}

    @classmethod
    def poll(cls, context: Context) -> bool:
        return url_fetch.active_fetch() is not None

    def execute(self, context: Context) -> Set[str]:
        url_fetch.cancel_active()
        _redraw_sequencers(context)
        return {"FINISHED"}


def menu_func(self: Any, context: Context) -> None:
    layout = self.layout
    layout.operator_context = "INVOKE_DEFAULT"  # the dialog
    layout.operator(SEQUENCER_OT_wav2lip_movie_from_url.bl_idname, text="Movie from URL\u2026", icon="URL")


@persistent
def _on_load_pre(*_args: Any) -> None:
    # Another file: the download is for the closing one's timeline; nothing of it is kept.
    url_fetch.drop_active()


classes = (SEQUENCER_OT_wav2lip_movie_from_url, SEQUENCER_OT_wav2lip_url_watch, SEQUENCER_OT_wav2lip_url_cancel)


def register() -> None:
    for cls in classes:
        bpy.utils.register_class(cls)
    menu = compat.add_menu_class()
    if menu is not None:
        menu.append(menu_func)
    if _on_load_pre not in bpy.app.handlers.load_pre:
        bpy.app.handlers.load_pre.append(_on_load_pre)


def unregister() -> None:
    url_fetch.drop_active()
    if _on_load_pre in bpy.app.handlers.load_pre:
        bpy.app.handlers.load_pre.remove(_on_load_pre)
    menu = compat.add_menu_class()
    if menu is not None:
        menu.remove(menu_func)
    for cls in reversed(classes):
        bpy.utils.unregister_class(cls)
