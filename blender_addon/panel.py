"""Sequencer sidebar panel (tab "Lip Sync") and the Strip menu entry; what an Esc means."""

from __future__ import annotations

import time
from typing import Any, Dict

import bpy
from bpy.types import Context, Event

from . import capture, compat, operators, preferences, studio


class SEQUENCER_PT_wav2lip(bpy.types.Panel):
    bl_space_type = "SEQUENCE_EDITOR"
    bl_region_type = "UI"
    bl_category = "Lip Sync"
    bl_label = "Lip Sync"

    def draw(self, context: Context) -> None:
        region = getattr(context, "region", None)
        if region is not None:
            _drawn_in[region.as_pointer()] = time.monotonic()
        draw_panel(self.layout, context)


# Sidebar regions (by pointer) in which the panel's body was drawn, and when. While a job runs
# the operator redraws every Sequencer four times a second, so a region whose entry is older
# than DRAWN_RECENTLY no longer shows the panel (another tab, collapsed, or closed).
_drawn_in: Dict[int, float] = {}
DRAWN_RECENTLY = 1.5


def draw_panel(layout: Any, context: Context) -> None:
    scene = compat.sequencer_scene(context)
    batch = operators.active_batch()
    job = operators.active_job()
    if batch is not None and job is not None:
        _draw_running(layout, context, batch, job)
        return

    pairs = []
    if scene is not None and compat.editor(scene) is not None:
        pairs = capture.choose_pairs(context, scene)
    col = layout.column(align=True)
    if not pairs:
        col.label(text="No movie strip selected", icon="ERROR")
        col.label(text="No sound strip", icon="ERROR")
    elif len(pairs) == 1:
        video, sound = pairs[0]
        col.label(text=video.name, icon="FILE_MOVIE")
        col.label(text=sound.name if sound is not None else "No sound strip", icon="SOUND" if sound is not None else "ERROR")
    else:
        col.label(text=f"{len(pairs)} strips, one job each:", icon="FILE_MOVIE")
        for video, sound in pairs[:6]:
            col.label(text=f"{video.name} \u2190 {sound.name if sound is not None else 'no sound strip'}",
                      icon="SOUND" if sound is not None else "ERROR")
        if len(pairs) > 6:
            col.label(text=f"... and {len(pairs) - 6} more")

    prefs = preferences.addon_prefs(context)
    settings = getattr(scene, "wav2lip", None) if scene is not None else None
    if prefs is not None:
        box = layout.column()
        box.prop(prefs, "checkpoint", text="")
        row = box.row(align=True)
        row.prop(prefs, "detector", text="")
        row.prop(prefs, "device", text="")
        box.prop(prefs, "precision")
        if prefs.detector == "box":
            box.prop(prefs, "box", text="")
        hint = preferences.detector_hint(preferences.settings_from(context))
        if hint:
            box.label(text=hint, icon="INFO")
        row = box.row(align=True)
        row.prop(prefs, "silence", text="")
        row.prop(prefs, "blend", text="")
    if settings is not None:
        layout.prop(settings, "sync_offset")
        row = layout.row()
        row.prop(settings, "enhance")
        row.enabled = prefs is None or bool(prefs.enhance_weights) or settings.enhance
        if prefs is not None and not prefs.enhance_weights:
            layout.label(text="Enhance: set Restorer Weights in the preferences", icon="INFO")
        layout.prop(settings, "mute_source")

    last = operators.jobs.last_batch()
    if last is not None and len(last.jobs) > 1:
        layout.label(text=f"Last run: {last.summary()}", icon="INFO")
    ready = bool(pairs) and all(sound is not None for _, sound in pairs)
    row = layout.row(align=True)
    row.scale_y = 1.4
    row.enabled = ready
    label = "Sync Lips" if len(pairs) <= 1 else f"Sync {len(pairs)} Strips"
    op = row.operator(operators.SEQUENCER_OT_wav2lip_sync.bl_idname, text=label, icon="SPEAKER")
    if settings is not None:
        op.mute_source = settings.mute_source
    op = row.operator(operators.SEQUENCER_OT_wav2lip_sync.bl_idname, text="Preview", icon="PLAY")
    op.preview = True
    studio.draw_studio(layout, context)


def _draw_running(layout: Any, context: Context, batch: Any, job: Any) -> None:
    p = job.runner.poll()
    col = layout.column(align=True)
    n = len(batch.jobs)
    if n > 1:
        i = batch.jobs.index(job) + 1
        compat.progress_bar(col, batch.fraction(), f"Strip {i} of {n}", context)
    what = "preview" if job.preview else operators.SUFFIX.lstrip(".")
    col.label(text=f"{job.request.source_name} \u2192 {what}", icon="SEQUENCE")
    compat.progress_bar(col, p.fraction, p.text, context)
    for note in p.notes[-2:]:  # e.g. which face detector the engine picked; the full text is reported at the end
        col.label(text=note.split(";")[0], icon="INFO")
    col.operator(operators.SEQUENCER_OT_wav2lip_cancel.bl_idname,
                 text="Cancel" if n == 1 else "Cancel All", icon="CANCEL")


def esc_targets_job(context: Context, event: Event) -> bool:
    """Whether an Esc press is meant for the running job: the mouse is over a Sequencer sidebar
    that shows this panel and nothing is playing. Anywhere else Esc keeps its usual meaning
    (stop playback, leave a tool, ...) and the job goes on; the Cancel button always cancels."""
    if compat.animation_playing(context):
        return False
    window = getattr(context, "window", None)
    if window is None or window.screen is None:
        return False
    x, y = event.mouse_x, event.mouse_y
    now = time.monotonic()
    for area in window.screen.areas:
        if area.type != "SEQUENCE_EDITOR":
            continue
        for region in area.regions:
            if region.type != "UI" or region.width <= 1:
                continue
            if not (region.x <= x < region.x + region.width and region.y <= y < region.y + region.height):
                continue
            category = compat.sidebar_category(region)
            if category is not None and category != SEQUENCER_PT_wav2lip.bl_category:
                return False
            return now - _drawn_in.get(region.as_pointer(), -1e9) <= DRAWN_RECENTLY
    return False


def menu_func(self: Any, context: Context) -> None:
    self.layout.separator()
    self.layout.operator(operators.SEQUENCER_OT_wav2lip_sync.bl_idname, icon="SPEAKER")


classes = (SEQUENCER_PT_wav2lip,)


def register() -> None:
    compat.register()
    for cls in classes:
        bpy.utils.register_class(cls)
    menu = compat.strip_menu_class()
    if menu is not None:
        menu.append(menu_func)


def unregister() -> None:
    menu = compat.strip_menu_class()
    if menu is not None:
        menu.remove(menu_func)
    for cls in reversed(classes):
        bpy.utils.unregister_class(cls)
    compat.unregister()
    _drawn_in.clear()
