"""The studio round trip: export the selected strips as a JOBS file for `wav2lip batch` (run on
a farm or a Ray cluster), then import the batch's report back as strips.

Export builds each job exactly as Sync Lips builds its engine request (the same strip pairs,
checks, scene timing and settings), so a batch run gives the same clip; only the output path
(a new file in the add-on's output folder, named like its own results) and the inline source
times differ from what the warm engine would get. Import puts each finished clip where Sync Lips
would have put it (insert.insert_result) and skips clips already on the timeline, so importing
twice adds nothing. The file formats are jobs_export.py's.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, List, Set, Tuple, cast

import bpy
from bpy.types import Context
from bpy_extras.io_utils import ExportHelper, ImportHelper

from . import capture, compat, job_settings, picks, sync_batch
from .insert import insert_result
from .jobs_export import ReportError, StripRef, job_line, problem, read_report, write_jobs
from .scene_time import plan
from .snapshot import SnapshotError
from .sync_request import SyncRequest
from .wire import protocol

NOTHING_SELECTED = ("nothing to export: select the movie or image strips to sync, each over its sound strip "
                    "(or select the sound strips too)")
_TIMES_PLACEHOLDER = "source-times.json"  # replaced by the inline list (jobs_export.job_line)


@dataclass
class Exported:
    jobs: int
    folder: str  # where the batch will write the clips
    warnings: List[str] = field(default_factory=list)


def export_jobs(context: Context, path: str) -> Exported:
    """Write the JOBS file for the selected strips; SnapshotError with a user message when a
    strip cannot be synced (then nothing is written)."""
    scene = compat.sequencer_scene(context)
    if scene is None or compat.editor(scene) is None:
        raise SnapshotError("this scene has no sequencer strips")
    if not capture.choose_pairs(context, scene):
        raise SnapshotError(NOTHING_SELECTED)
    pairs = sync_batch.pairs_to_sync(context, scene, SimpleNamespace(video_strip="", audio_strip=""), False)
    s = job_settings.settings_from(context, None, getattr(scene, "wav2lip", None))
    sync_batch.check_settings(s, s.enhance)

    fps, rounds = compat.scene_fps(scene), compat.frame_index_rounds()
    requests: List[SyncRequest] = []
    for video, sound in pairs:
        sound = picks.sound_for(scene, video, sound)
        req = plan(capture.strip_info(scene, video), capture.strip_info(scene, sound), fps, rounds=rounds)
        req = picks.with_speakers(scene, video, req)
        for what, file in (("clip", req.face_path), ("sound", req.audio_path)):
            if not os.path.isfile(file):
                raise SnapshotError(f"the {what}'s file of '{req.source_name}' is missing: {file}")
        requests.append(req)

    folder, warning = job_settings.output_folder(s)
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as exc:
        raise SnapshotError(f"cannot create the output folder {folder}: {exc}") from exc
    path = os.path.abspath(bpy.path.abspath(path))
    claimed: List[str] = []
    lines = []
    try:
        for req in requests:
            out = sync_batch.unique_output(folder, req.source_name)
            open(out, "ab").close()  # claimed, so the next job gets another name; released below
            claimed.append(out)
            ref = StripRef(scene.name, req.source_name, req.insert_frame, req.used_frames)
            lines.append(job_line(ref, sync_batch.engine_args(req, s, out, _TIMES_PLACEHOLDER if req.source_times is not None else None), req.source_times))
        write_jobs(path, lines)
    except OSError as exc:
        raise SnapshotError(f"cannot write {exc.filename or path}: {exc.strerror or exc}") from exc
    finally:
        for out in claimed:  # the batch creates the clips: an existing file would look like a result
            try:
                os.remove(out)
            except OSError:
                pass
    return Exported(jobs=len(lines), folder=folder, warnings=[warning] if warning else [])


@dataclass
class Imported:
    inserted: List[str] = field(default_factory=list)  # names of the new strips
    present: int = 0  # clips already on the timeline (an earlier import)
    problems: List[str] = field(default_factory=list)  # one line per job not inserted
    warnings: List[str] = field(default_factory=list)  # inserted, but see this


def _same_file(a: str, b: str) -> bool:
    return os.path.normcase(os.path.realpath(a)) == os.path.normcase(os.path.realpath(b))


def _on_timeline(ed: Any, out: str) -> bool:
    return any(s.type == compat.MOVIE and _same_file(capture.strip_filepath(s), out) for s in compat.all_strips(ed))


def _job_for(ref: StripRef, source: Any, scene: Any, out: str, mute: bool) -> sync_batch.Job:
    """The Sync Lips job the clip would have come from, as insert.insert_result reads it."""
    fps = compat.scene_fps(scene)
    req = SyncRequest(
        source_name=ref.strip, source_channel=int(source.channel), face_path=capture.strip_filepath(source),
        is_image=source.type == compat.IMAGE, scene_fps=fps, insert_frame=ref.frame, used_frames=ref.frames,
        start_frame=None, audio_path="", audio_start=0.0, duration=ref.frames / fps)
    # The strip as exported, as far as the id tells: its range then, the content moving with it.
    # insert_result follows a strip moved as a whole and warns about one trimmed since; a slip
    # (content moved inside unchanged handles) does not show here.
    first = int(source.frame_final_start)
    state = (capture.strip_filepath(source), float(source.frame_start) - (first - ref.frame), ref.frame,
             ref.frame + ref.frames, int(getattr(source, "animation_offset_start", 0) or 0))
    return sync_batch.Job(engine_job=cast(Any, None), request=req, scene_name=scene.name, dest=out, mute_source=mute,
                    source_state=state)


def import_report(context: Context, path: str) -> Imported:
    """Insert the clips of a batch report's ok and skipped jobs; ReportError when it cannot be read."""
    result = Imported()
    for entry in read_report(os.path.abspath(bpy.path.abspath(path))):
        why = problem(entry)
        if why:
            result.problems.append(why)
            continue
        ref = entry.ref
        if ref is None:
            result.problems.append(f"{entry.label}: not exported by this add-on (its id names no strip); "
                                   f"the clip is at {entry.out}")
            continue
        if not (entry.out and os.path.isfile(entry.out)):
            result.problems.append(f"{entry.label}: the batch's clip is missing ({entry.out or 'no path in the report'})")
            continue
        scene = bpy.data.scenes.get(ref.scene)
        ed = compat.editor(scene, create=True)
        if scene is None or ed is None:
            result.problems.append(f"{entry.label}: no scene named '{ref.scene}' in this file; the clip is at {entry.out}")
            continue
        if _on_timeline(ed, entry.out):
            result.present += 1
            continue
        source = compat.find_strip(ed, ref.strip)
        if source is None:
            result.problems.append(f"{entry.label}: no strip of that name in scene '{ref.scene}' (renamed or "
                                   f"deleted); the clip is at {entry.out}")
            continue
        settings = getattr(scene, "wav2lip", None)
        job = _job_for(ref, source, scene, entry.out, bool(getattr(settings, "mute_source", False)))
        try:
            strip = insert_result(job)
        except (SnapshotError, RuntimeError) as exc:
            result.problems.append(f"{entry.label}: the clip could not be inserted: {exc}; it is at {entry.out}")
            continue
        result.inserted.append(strip.name)
        result.warnings += job.finish_warnings
    return result


class SEQUENCER_OT_wav2lip_export_jobs(bpy.types.Operator, ExportHelper):
    """Write the selected strips as lip-sync jobs for wav2lip batch (a JSON-lines file), to run on another machine or a cluster"""

    bl_idname = "sequencer.wav2lip_export_jobs"
    bl_label = "Export Lip-Sync Jobs"
    bl_options = {"REGISTER"}

    filename_ext = ".jsonl"
    # SKIP_SAVE: Blender would offer the last export's path again, that of another file.
    filepath: bpy.props.StringProperty(  # type: ignore[valid-type]
        name="File Path", description="Filepath used for exporting the file", subtype="FILE_PATH", maxlen=1024,
        options={"SKIP_SAVE"})
    filter_glob: bpy.props.StringProperty(default="*.jsonl", options={"HIDDEN", "SKIP_SAVE"})  # type: ignore[valid-type]
    check_existing: bpy.props.BoolProperty(  # type: ignore[valid-type]
        name="Check Existing", description="Check and warn on overwriting existing files", default=True,
        options={"HIDDEN", "SKIP_SAVE"})

    @classmethod
    def poll(cls, context: Context) -> bool:
        return compat.sequencer_scene(context) is not None

    def invoke(self, context: Context, event: Any) -> Set[str]:
        if not self.filepath:
            stem = os.path.splitext(bpy.data.filepath)[0] if bpy.data.filepath else "lipsync"
            self.filepath = stem + "_jobs" + self.filename_ext
        wm: Any = context.window_manager
        wm.fileselect_add(self)
        return {"RUNNING_MODAL"}

    def execute(self, context: Context) -> Set[str]:
        try:
            done = export_jobs(context, self.filepath)
        except SnapshotError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        for w in done.warnings:
            self.report({"WARNING"}, w)
        self.report({"INFO"}, f"Wrote {done.jobs} job{'s' if done.jobs != 1 else ''} to {self.filepath}; "
                              f"the clips will go to {done.folder}. Run: wav2lip batch {self.filepath} --report "
                              f"REPORT.jsonl, then Import Lip-Sync Report")
        return {"FINISHED"}


class SEQUENCER_OT_wav2lip_import_report(bpy.types.Operator, ImportHelper):
    """Put the clips of a wav2lip batch report on the timeline above their source strips (clips already there are skipped)"""

    bl_idname = "sequencer.wav2lip_import_report"
    bl_label = "Import Lip-Sync Report"
    bl_options = {"REGISTER", "UNDO"}

    # ImportHelper has it in every version; declared here too, for the 4.2 and 5.0 stubs that lack it
    filepath: bpy.props.StringProperty(  # type: ignore[valid-type]
        name="File Path", subtype="FILE_PATH", maxlen=1024, options={"SKIP_SAVE"})
    filter_glob: bpy.props.StringProperty(default="*.jsonl", options={"HIDDEN", "SKIP_SAVE"})  # type: ignore[valid-type]

    def execute(self, context: Context) -> Set[str]:
        try:
            done = import_report(context, self.filepath)
        except ReportError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        for line in done.problems:  # warnings, not errors: the other clips are in (bpy.ops raises on errors)
            self.report({"WARNING"}, line)
        for w in done.warnings:
            self.report({"WARNING"}, w)
        summary = f"Inserted {len(done.inserted)} clip{'s' if len(done.inserted) != 1 else ''}"
        if done.present:
            summary += f", {done.present} already on the timeline"
        if done.problems:
            summary += f", {len(done.problems)} not inserted (see above)"
        self.report({"INFO"}, summary)
        return {"FINISHED"}


def draw_studio(layout: Any, context: Context) -> None:
    """The panel's batch row: export the selection, import a report."""
    col = layout.column(align=True)
    col.label(text="Batch (wav2lip batch):")
    row = col.row(align=True)
    row.operator(SEQUENCER_OT_wav2lip_export_jobs.bl_idname, text="Export Jobs", icon="EXPORT")
    row.operator(SEQUENCER_OT_wav2lip_import_report.bl_idname, text="Import Report", icon="IMPORT")


classes: Tuple[type, ...] = (SEQUENCER_OT_wav2lip_export_jobs, SEQUENCER_OT_wav2lip_import_report)


def register() -> None:
    for cls in classes:
        bpy.utils.register_class(cls)


def unregister() -> None:
    for cls in reversed(classes):
        bpy.utils.unregister_class(cls)
