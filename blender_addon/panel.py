"""Sequencer sidebar panel (tab "Lip Sync") and the Strip menu entry."""

from __future__ import annotations

from typing import Any

import bpy
from bpy.types import Context

from . import capture, compat, operators, preferences


class SEQUENCER_PT_wav2lip(bpy.types.Panel):
    bl_space_type = "SEQUENCE_EDITOR"
    bl_region_type = "UI"
    bl_category = "Lip Sync"
    bl_label = "Lip Sync"

    def draw(self, context: Context) -> None:
        draw_panel(self.layout, context)


def draw_panel(layout: Any, context: Context) -> None:
    scene = compat.sequencer_scene(context)
    job = operators.active_job()
    if job is not None:
        p = job.runner.poll()
        col = layout.column(align=True)
        col.label(text=f"{job.request.source_name} \u2192 {job.request.source_name}{operators.SUFFIX}", icon="SEQUENCE")
        if not compat.progress_bar(col, p.fraction, p.text):
            col.label(text=f"{p.text} ({p.fraction * 100:.0f}%)")
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
        if prefs.detector == "box":
            box.prop(prefs, "box", text="")
    settings = getattr(scene, "wav2lip", None) if scene is not None else None
    if settings is not None:
        layout.prop(settings, "mute_source")

    row = layout.row()
    row.scale_y = 1.4
    row.enabled = video is not None and sound is not None
    op = row.operator(operators.SEQUENCER_OT_wav2lip_sync.bl_idname, icon="SPEAKER")
    if settings is not None:
        op.mute_source = settings.mute_source


def menu_func(self: Any, context: Context) -> None:
    self.layout.separator()
    self.layout.operator(operators.SEQUENCER_OT_wav2lip_sync.bl_idname, icon="SPEAKER")


classes = (SEQUENCER_PT_wav2lip,)


def register() -> None:
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
