"""Sequencer sidebar panel (tab "Lip Sync") and the Strip menu entry. It draws; the operators
(operators.py) act, and sidebar.py says what an Esc over it means."""

from __future__ import annotations

import textwrap
from typing import Any, List

import bpy
from bpy.types import Context

from . import (capture, compat, engine_draw, job_settings, operators, pick_face, picks, sidebar, studio, sync_batch,
               sync_meter, url_fetch, url_operators)
from .snapshot import overlap


class SEQUENCER_PT_wav2lip(bpy.types.Panel):
    bl_space_type = "SEQUENCE_EDITOR"
    bl_region_type = "UI"
    bl_category = sidebar.CATEGORY
    bl_label = "Lip Sync"

    def draw(self, context: Context) -> None:
        sidebar.note_drawn(getattr(context, "region", None))  # (an Esc over it cancels the job)
        draw_panel(self.layout, context)


def draw_panel(layout: Any, context: Context) -> None:
    scene = compat.sequencer_scene(context)
    settings = getattr(scene, "wav2lip", None) if scene is not None else None
    batch = sync_batch.active_batch()
    job = sync_batch.active_job()
    if batch is not None and job is not None:
        _draw_running(layout, context, batch, job)
        draw_movie_from_url(layout, context, settings)
        return

    ed = compat.editor(scene) if scene is not None else None
    pairs = capture.choose_pairs(context, scene) if ed is not None and scene is not None else []
    sounds = [s for s in compat.selected_strips(context, ed) if s.type == compat.SOUND] if ed is not None else []
    problems = [pair_problem(scene, video, sound, bool(sounds)) for video, sound in pairs]
    col = layout.column(align=True)
    if not pairs:
        if sounds:  # the sound alone is selected: it needs its movie
            wrapped_label(col, context, "Select the movie strip too", "ERROR")
            col.label(text=sounds[0].name, icon="SOUND")
        else:
            col.label(text="No movie strip selected", icon="ERROR")
            col.label(text="No sound strip", icon="ERROR")
    elif len(pairs) == 1:
        (video, sound), problem = pairs[0], problems[0]
        col.label(text=video.name, icon="FILE_MOVIE")
        if sound is not None:
            col.label(text=sound.name, icon="SOUND")
        if problem:
            wrapped_label(col, context, problem, "ERROR")
        picks.draw(layout, context, video, pick_face.SEQUENCER_OT_wav2lip_pick_face.bl_idname)
    else:
        col.label(text=f"{len(pairs)} strips, one job each:", icon="FILE_MOVIE")
        for (video, sound), problem in list(zip(pairs, problems))[:6]:
            what = sound.name if sound is not None and not problem else problem[:1].lower() + problem[1:]
            col.label(text=f"{video.name} \u2190 {what}", icon="ERROR" if problem else "SOUND")
        if len(pairs) > 6:
            col.label(text=f"... and {len(pairs) - 6} more")

    prefs = job_settings.addon_prefs(context)
    text, icon = engine_draw.status_line()
    wrapped_label(layout.column(align=True), context, text, icon)
    if prefs is not None:
        box = layout.column()
        box.use_property_split = True  # every setting with its name beside it
        box.use_property_decorate = False
        box.prop(prefs, "checkpoint", text="Checkpoint")
        box.prop(prefs, "detector", text="Face Detector")
        box.prop(prefs, "device", text="Device")
        box.prop(prefs, "precision", text="Precision")
        if prefs.detector == "box":
            box.prop(prefs, "box", text="Face Box")
        box.prop(prefs, "silence", text="Silence")
        box.prop(prefs, "blend", text="Blend")
        # What a job will use and where it came from: an empty field may still have a value
        # that install.py recorded.
        used = layout.column(align=True)
        weights = ""
        for c in job_settings.configured_now(prefs):
            wrapped_label(used, context, c.text(short=True), "INFO" if c.value else "ERROR")
            weights = c.value if c.label == "Detector Weights" else weights
        hint = job_settings.detector_hint(job_settings.settings_from(context))
        if hint and weights:  # (without weights the line above says Auto uses Haar)
            wrapped_label(used, context, hint, "INFO")
    if settings is not None:
        col = layout.column()
        col.use_property_split = True
        col.use_property_decorate = False
        row = col.row(align=True)  # the number, or Auto: measured on a probe (sync_meter.py)
        row.prop(settings, "sync_offset", text="Sync Offset")
        row.prop(settings, "sync_offset_auto", text="Auto", toggle=True)
        row = col.row()
        row.prop(settings, "enhance", text="Enhance face (HD)")
        row.enabled = prefs is None or bool(prefs.enhance_weights) or settings.enhance
        if prefs is not None and not prefs.enhance_weights:
            wrapped_label(layout.column(align=True), context, "Enhance: set Restorer Weights in the preferences", "INFO")
        col.prop(settings, "mute_source", text="Mute Source")

    sync_meter.draw(layout, context)  # the last sync's (or Measure's) reading, and Measure
    last = sync_batch.last_batch()
    if last is not None and len(last.jobs) > 1:
        layout.label(text=f"Last run: {last.summary()}", icon="INFO")
    ready = bool(pairs) and not any(problems)
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
    draw_movie_from_url(layout, context, settings)


def draw_movie_from_url(layout: Any, context: Context, settings: Any) -> None:
    """The download's progress and Cancel while one runs; else the URL field and its button."""
    fetch = url_fetch.active_fetch()
    if fetch is not None:
        col = layout.column(align=True)
        col.label(text=fetch.url[:60], icon="URL")
        fraction, text = url_fetch.progress_text(fetch)
        compat.progress_bar(col, fraction, text, context, bar="fetch")
        col.operator(url_operators.SEQUENCER_OT_wav2lip_url_cancel.bl_idname, text="Cancel Download", icon="CANCEL")
        return
    if settings is None:
        return
    col = layout.column(align=True)
    col.label(text="Movie from URL", icon="URL")
    col.prop(settings, "fetch_url", text="URL")
    row = col.row(align=True)
    row.prop(settings, "fetch_from")
    row.prop(settings, "fetch_to")
    row = col.row(align=True)
    row.prop(settings, "fetch_channel")
    sub = row.row(align=True)
    sub.enabled = bool(settings.fetch_url.strip())
    sub.operator_context = "EXEC_DEFAULT"  # the panel's fields, no dialog
    op = sub.operator(url_operators.SEQUENCER_OT_wav2lip_movie_from_url.bl_idname, text="Add", icon="IMPORT")
    op.url, op.start, op.end, op.channel = settings.fetch_url, settings.fetch_from, settings.fetch_to, settings.fetch_channel
    refusal = url_fetch.online_refusal()
    if refusal:
        wrapped_label(col, context, refusal, "ERROR")


NO_SOUND = "No sound strip"
NO_OVERLAP = "Sound strip does not overlap the movie"


def pair_problem(scene: Any, video: Any, sound: Any, sound_selected: bool) -> str:
    """Why a (movie, sound) pair cannot be synced, shown before Sync is pressed; '' when it can.
    sound_selected: a sound strip is selected (so no sound means none of them plays under it)."""
    if sound is None:
        return "" if picks.picks_of(video) else (NO_OVERLAP if sound_selected else NO_SOUND)
    v = capture.strip_info(scene, video, probe_media=False)
    a = capture.strip_info(scene, sound, probe_media=False)
    if overlap(v.final_start, v.final_end, a.final_start, a.final_end) <= 0:
        return NO_OVERLAP
    return ""


# Blender's interface font is about this wide per character (at interface scale 1), a little
# more than the average so that a wrapped line fits; and a label's icon and margins take this.
CHAR_WIDTH_PX = 7.0
LABEL_MARGIN_PX = 50.0
DEFAULT_WIDTH_PX = 300  # (no region: background mode)


def wrap_to_width(text: str, width_px: float, ui_scale: float = 1.0) -> List[str]:
    """`text` in lines that fit a label `width_px` wide, broken between words only."""
    chars = max(12, int((width_px - LABEL_MARGIN_PX * ui_scale) / (CHAR_WIDTH_PX * ui_scale)))
    return textwrap.wrap(text, width=chars, break_long_words=False, break_on_hyphens=False) or [""]


def wrapped_label(layout: Any, context: Context, text: str, icon: str) -> None:
    """`text` as labels wrapped between words to the sidebar's width (Blender cuts a long label
    in the middle); the lines after the first are indented like the first one's text."""
    region = getattr(context, "region", None)
    width = float(getattr(region, "width", 0) or DEFAULT_WIDTH_PX)
    for k, line in enumerate(wrap_to_width(text, width, compat.ui_scale(context))):
        layout.label(text=line, icon=icon if k == 0 else "BLANK1")


def _draw_running(layout: Any, context: Context, batch: Any, job: Any) -> None:
    p = job.engine_job.poll()
    col = layout.column(align=True)
    n = len(batch.jobs)
    if n > 1:
        i = batch.jobs.index(job) + 1
        compat.progress_bar(col, batch.fraction(), f"Strip {i} of {n}", context, bar="batch")
    what = "preview" if job.preview else sync_batch.SUFFIX.lstrip(".")
    col.label(text=f"{job.request.source_name} \u2192 {what}", icon="SEQUENCE")
    compat.progress_bar(col, p.fraction, p.text, context, bar="job")
    for note in p.notes[-2:]:  # e.g. which face detector the engine picked; the full text is reported at the end
        wrapped_label(col, context, note.split(";")[0], "INFO")
    col.operator(operators.SEQUENCER_OT_wav2lip_cancel.bl_idname,
                 text="Cancel" if n == 1 else "Cancel All", icon="CANCEL")


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
    sidebar.forget_drawn()
