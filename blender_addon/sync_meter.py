"""The sync meter in the panel: the last reading ("Sync: +0.3 frames (good)", from a sync's done
event or from Measure) and the **Measure** operator, which runs `wav2lip meter` on the session's
warm engine (a serve job whose args start with "meter", jobs/serve.py) for the selected movie
strip, against its own sound or the selected sound strip, over the part of the clip the strip
shows. The Auto toggle for Sync Offset is a scene setting (preferences.py, job_settings.py)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, List, Optional, Set

import bpy
from bpy.types import Context

from . import capture, compat, engine, job_settings, sidebar
from .engine_jobs import EngineJob, JobQueue
from .engine_python import engine_env
from .job_state import CANCELLED, DONE, Progress
from .scene_time import plan
from .wire import protocol

P = protocol


@dataclass
class Reading:
    """One reading the panel shows: where it came from and what it said."""

    source: str  # the strip's name
    offset: Optional[float]  # frames the mouth comes later than its sound; None: no sync found
    confidence: Optional[float]
    verdict: str


_last: Optional[Reading] = None
_measuring: Optional[EngineJob] = None


def reading_of(p: Progress, source: str) -> Optional[Reading]:
    """The reading a finished job's progress carries (None when the engine measured nothing)."""
    if p.sync_verdict is None:
        return None
    return Reading(source, p.sync_offset_measured, p.sync_confidence, p.sync_verdict)


def text(r: Reading) -> str:
    """"Sync: +0.3 frames (good)", "Sync: +1.8 frames (mouth late)", "Sync: no sync found"."""
    if r.offset is None:
        return f"Sync: {r.verdict}"
    word = "good" if r.verdict == "in sync" else ("mouth late" if r.offset > 0 else "mouth early")
    return f"Sync: {r.offset:+.1f} frames ({word})"


def remember(p: Progress, source: str) -> None:
    """Keep a finished sync's reading for the panel (none: the last one stays)."""
    global _last
    r = reading_of(p, source)
    if r is not None:
        _last = r


def last() -> Optional[Reading]:
    return _last


def measuring() -> Optional[EngineJob]:
    return _measuring


def meter_args(face_path: str, audio_path: Optional[str], audio_start: float, start: Optional[float],
               end: Optional[float], s: job_settings.Settings) -> List[str]:
    """`wav2lip meter`'s arguments: the clip over [start, end) (clip seconds), against its own
    sound or `audio_path` with `audio_start` (the sound file's time heard at the clip's time 0)."""
    args = [face_path]
    if audio_path:
        args += ["--audio", audio_path, "--audio-start", P.plain_number(audio_start)]
    if start is not None and end is not None:
        args += ["--from", P.plain_number(start), "--to", P.plain_number(end)]
    if s.detector and s.detector not in (P.DETECTOR_BOX, "PREFS"):
        args += ["--detector", s.detector]
        if s.detector_weights:
            args += ["--detector-weights", s.detector_weights]
    return args


def _selected(context: Context) -> "tuple[Any, Any, Any]":
    scene = compat.sequencer_scene(context)
    ed = compat.editor(scene) if scene is not None else None
    if ed is None:
        return scene, None, None
    strips = compat.selected_strips(context, ed)
    movie = next((s for s in strips if s.type == compat.MOVIE), None)
    sound = next((s for s in strips if s.type == compat.SOUND), None)
    return scene, movie, sound


class SEQUENCER_OT_wav2lip_measure(bpy.types.Operator):
    """Measure how far the mouth of the selected movie strip lags its sound (its own, or the selected sound strip), on the lip-sync engine"""

    bl_idname = "sequencer.wav2lip_measure"
    bl_label = "Measure Sync"
    bl_options = {"REGISTER"}

    @classmethod
    def poll(cls, context: Context) -> bool:
        return _measuring is None and _selected(context)[1] is not None

    def execute(self, context: Context) -> Set[str]:
        global _measuring
        scene, movie, sound = _selected(context)
        if movie is None:
            self.report({"ERROR"}, "Select a movie strip to measure")
            return {"CANCELLED"}
        s = job_settings.settings_from(context, None, getattr(scene, "wav2lip", None))
        v = capture.strip_info(scene, movie)
        audio_path, audio_start, start, end = None, 0.0, None, None
        if sound is not None:
            req = plan(v, capture.strip_info(scene, sound), compat.scene_fps(scene), rounds=compat.frame_index_rounds())
            # req.audio_start is heard at the strip's first used frame; the meter wants clip time 0.
            first = req.source_times[0] if req.source_times else (req.start_frame or 0) / compat.media_fps(movie)
            audio_path, audio_start = req.audio_path, req.audio_start - first
            start, end = first, first + req.duration
        face_path = bpy.path.abspath(movie.filepath)
        if not os.path.isfile(face_path):
            self.report({"ERROR"}, f"The clip's file is missing: {face_path}")
            return {"CANCELLED"}
        job = EngineJob(label=movie.name, op=P.OP_METER)
        job.args = meter_args(face_path, audio_path, audio_start, start, end, s)
        name = movie.name

        def finished(j: EngineJob) -> None:
            global _measuring, _last
            p = j.poll()
            if p.status == DONE:
                _last = reading_of(p, name) or Reading(name, None, None, "not measured")
            elif p.status != CANCELLED:
                _last = Reading(name, None, None, f"measure failed: {p.message}")
            _measuring = None

        job.on_finish(finished)
        _measuring = job
        env = engine_env()
        JobQueue([job], lambda: engine.session_engine_for(s.engine_python, env)).start()
        if not bpy.app.timers.is_registered(_redraw_while_measuring):
            bpy.app.timers.register(_redraw_while_measuring, first_interval=_REDRAW_S)
        return {"FINISHED"}


_REDRAW_S = 0.25


def _redraw_while_measuring() -> Optional[float]:
    """A timer on Blender's main thread: the panel follows the measure's progress and shows its
    reading when it ends (the job finishes on another thread, which must not touch the UI)."""
    sidebar.redraw_sequencers(bpy.context.window_manager)
    return _REDRAW_S if _measuring is not None else None


def draw(layout: Any, context: Context) -> None:
    """The meter's line (the last reading, or Measuring...) and the Measure button."""
    row = layout.row(align=True)
    job = _measuring
    if job is not None:
        p = job.poll()
        row.label(text=f"Measuring {job.label}: {p.done}/{p.total}" if p.total else f"Measuring {job.label}...",
                  icon="TIME")
    elif _last is not None:
        row.label(text=text(_last), icon="CHECKMARK" if _last.verdict == "in sync" else "INFO")
    row.operator(SEQUENCER_OT_wav2lip_measure.bl_idname, text="Measure", icon="DRIVER_DISTANCE")


classes = (SEQUENCER_OT_wav2lip_measure,)


def register() -> None:
    for cls in classes:
        bpy.utils.register_class(cls)


def unregister() -> None:
    global _measuring
    if _measuring is not None:
        _measuring.cancel()
        _measuring = None
    if bpy.app.timers.is_registered(_redraw_while_measuring):
        bpy.app.timers.unregister(_redraw_while_measuring)
    for cls in reversed(classes):
        bpy.utils.unregister_class(cls)
