"""Sequencer sidebar panel (tab "Lip Sync") and the Strip menu entry; what an Esc means."""

from __future__ import annotations

import time
from typing import Any, Dict

import bpy
from bpy.types import Context, Event

from . import capture, compat, operators, preferences


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
    job = operators.active_job()
    if job is not None:
        p = job.runner.poll()
        col = layout.column(align=True)
        col.label(text=f"{job.request.source_name} \u2192 {job.request.source_name}{operators.SUFFIX}", icon="SEQUENCE")
        compat.progress_bar(col, p.fraction, p.text, context)
        for note in p.notes[-2:]:  # e.g. which face detector the engine picked; the full text is reported at the end
            col.label(text=note.split(";")[0], icon="INFO")
        col.operator(operators.SEQUENCER_OT_wav2lip_cancel.bl_idname, text="Cancel", icon="CANCEL")
        return

    video = sound = None
    if scene is not None and compat.editor(scene) is not None:
        video, sound = capture.choose_strips(context, scene)
    col = layout.column(align=True)
    col.label(text=video.name if video is not None else "No movie strip selected",
              icon="FILE_MOVIE" if video is not None else "ERROR")
    col.label(text=sound.name if sound is not None else "No sound strip",
              icon="SOUND" if sound is not None else "ERROR")

    prefs = preferences.addon_prefs(context)
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
    settings = getattr(scene, "wav2lip", None) if scene is not None else None
    if settings is not None:
        layout.prop(settings, "mute_source")

    row = layout.row()
    row.scale_y = 1.4
    row.enabled = video is not None and sound is not None
    op = row.operator(operators.SEQUENCER_OT_wav2lip_sync.bl_idname, icon="SPEAKER")
    if settings is not None:
        op.mute_source = settings.mute_source


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
