"""From the selection to jobs queued on the session's warm engine (engine.py): one job per
selected movie/image strip with its own sound strip, or one short preview job. Holds the running
batch; the operator (operators.py) inserts its results as they finish."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any, Collection, List, Optional, Set, Tuple

import bpy
from bpy.types import Context

from . import capture, compat, engine, job_settings, picks
from .compat import StripLike
from .engine_jobs import EngineJob, JobQueue
from .engine_python import engine_env
from .preview import plan_preview
from .job_state import DONE
from .scene_time import plan
from .snapshot import SnapshotError
from .sync_request import SyncRequest
from .wire import protocol

SUFFIX = ".lipsync"
PREVIEW_SUFFIX = ".preview"
PREVIEW_TAG = capture.PREVIEW_TAG
RESULT_TAG = capture.RESULT_TAG


@dataclass
class Job:
    engine_job: EngineJob  # the job on the engine (its progress, its files)
    request: SyncRequest
    scene_name: str
    dest: str
    mute_source: bool
    preview: bool = False
    of_many: bool = False  # one of several strips: reports name it
    outcome: str = ""  # once reported: the inserted strip's name, or "" (failed or cancelled)
    warnings: List[str] = field(default_factory=list)
    cancel_requested: bool = False
    started: float = field(default_factory=time.monotonic)
    source_state: tuple = ()  # the source strip as it was synced (see strip_state)
    finish_warnings: List[str] = field(default_factory=list)  # found while inserting the result


@dataclass
class Batch:
    jobs: List[Job]
    queue: JobQueue
    preview: bool = False
    handled: Set[int] = field(default_factory=set)  # indexes of jobs whose end was reported

    def next_unhandled(self) -> Optional[Job]:
        return next((j for i, j in enumerate(self.jobs) if i not in self.handled), None)

    def fraction(self) -> float:
        return self.queue.fraction()

    def summary(self) -> str:
        inserted = sum(1 for j in self.jobs if j.outcome)
        return f"{inserted} of {len(self.jobs)} inserted"


_batch: Optional[Batch] = None
_last: Optional[Batch] = None  # the batch that ended last (the panel's summary)
_unsaved_warned = False  # the unsaved-file warning is given once per session


def active_batch() -> Optional[Batch]:
    return _batch


def last_batch() -> Optional[Batch]:
    """The batch that ended last (finished or cancelled), None before the first."""
    return _last


def active_job() -> Optional[Job]:
    """The job the panel follows: the first of the running batch whose end is not reported yet."""
    return _batch.next_unhandled() if _batch is not None else None


def mark_handled(job: Job) -> bool:
    """Note that `job`'s end was reported; True when it was the batch's last (the batch ends)."""
    global _batch, _last
    for batch in (_batch, _last):
        if batch is not None and job in batch.jobs:
            break
    else:
        return True
    batch.handled.add(batch.jobs.index(job))
    if batch is not _batch:
        return True
    if len(batch.handled) == len(batch.jobs):
        _batch, _last = None, batch
        return True
    return False


def done_but_not_handled(batch: Batch) -> List[Job]:
    """The batch's jobs whose clip is complete but not reported (inserted) yet."""
    for j in batch.jobs:
        if j.engine_job.delivering:  # a Cancel that raced the engine's done: let the rename finish
            j.engine_job.wait(2.0)
    return [j for i, j in enumerate(batch.jobs) if i not in batch.handled and j.engine_job.poll().status == DONE]


def cancel_active(drop_done: bool = False) -> None:
    """Stop the current job and drop the queue. A job whose clip was already complete stays done:
    the operator inserts it (done_but_not_handled); drop_done removes such clips instead (the
    file is closing, or the add-on going away: nothing is left to insert them)."""
    global _batch, _last
    batch, _batch = _batch, None
    if batch is None:
        return
    _last = batch
    for job in batch.jobs:
        job.cancel_requested = True
    batch.queue.cancel()
    if drop_done:
        for job in done_but_not_handled(batch):
            batch.handled.add(batch.jobs.index(job))
            try:
                os.remove(job.dest)
            except OSError:
                pass


def unique_output(folder: str, stem: str, ext: str = ".mp4", suffix: str = SUFFIX,
                  taken: Collection[str] = ()) -> str:
    """A new file: `Face.lipsync.mp4`, else `Face.lipsync_001.mp4`, ...; never an existing file,
    nor a name in `taken` (strip names: the result strip is named after its file)."""
    name = bpy.path.clean_name(stem, replace="_") or "clip"
    path = os.path.join(folder, name + suffix + ext)
    i = 1
    while os.path.exists(path) or os.path.splitext(os.path.basename(path))[0] in taken:
        path = os.path.join(folder, f"{name}{suffix}_{i:03d}{ext}")
        i += 1
    return path


def strip_state(strip: Optional[StripLike]) -> tuple:
    """What of the source strip the synced clip depends on: its file, content start and trims."""
    if strip is None:
        return ()
    return (capture.strip_filepath(strip), float(strip.frame_start), int(strip.frame_final_start),
            int(strip.frame_final_end), int(getattr(strip, "animation_offset_start", 0) or 0))


def pairs_to_sync(context: Context, scene: Any, op: Any, preview: bool) -> List[Tuple[StripLike, StripLike]]:
    """The (video, sound) strips to sync, checked; explicit names (scripts) give one pair."""
    if op.video_strip or op.audio_strip:
        video, sound = capture.choose_strips(context, scene, op.video_strip, op.audio_strip)
        if op.video_strip and video is None:
            raise SnapshotError(f"no strip named '{op.video_strip}'")
        if op.audio_strip and sound is None:
            raise SnapshotError(f"no strip named '{op.audio_strip}'")
        pairs = [(video, sound)] if video is not None else []
    else:
        pairs = capture.choose_pairs(context, scene)
        if preview and len(pairs) > 1:  # a preview is of one strip: the active one, else the first
            active = compat.active_strip(compat.editor(scene))
            pairs = [next((p for p in pairs if p[0] == active), pairs[0])]
    if not pairs:
        raise SnapshotError("nothing to sync: select the movie or image strip with the face")
    for video, sound in pairs:
        if video.type not in capture.VIDEO_TYPES:
            raise SnapshotError(f"'{video.name}' is not a movie or image strip")
        if sound is None and not picks.picks_of(video):  # (picks bring their own sounds)
            raise SnapshotError(
                f"no sound strip for '{video.name}': select the dialogue's sound strip or place one under the clip")
        if sound is not None and sound.type != compat.SOUND:
            raise SnapshotError(f"'{sound.name}' is not a sound strip")
    return pairs  # type: ignore[return-value]


def check_settings(s: job_settings.Settings, enhance: bool) -> None:
    if not s.checkpoint:
        raise SnapshotError("no Wav2Lip checkpoint: set it in the add-on preferences (Lip Sync)")
    if not os.path.isfile(s.checkpoint):
        raise SnapshotError(f"checkpoint not found: {s.checkpoint} (set the right file in the add-on preferences)")
    if s.detector == "box" and s.box is None:
        raise SnapshotError("the Fixed box detector needs a face box (top, bottom, left, right)")
    if s.detector != "box" and s.detector_weights and not os.path.isfile(s.detector_weights):
        raise SnapshotError(f"face detector weights not found: {s.detector_weights}")
    if enhance and not s.enhance_weights:
        raise SnapshotError("Enhance face needs a restorer weights file: set 'Restorer Weights' in the add-on "
                            "preferences (GFPGAN, RestoreFormer or CodeFormer), or turn Enhance off")
    if enhance and not os.path.isfile(s.enhance_weights):
        raise SnapshotError(f"restorer weights not found: {s.enhance_weights}")


def engine_args(req: SyncRequest, s: job_settings.Settings, out: str, source_times_path: Optional[str]) -> List[str]:
    """The engine's arguments for one Sync Lips job (a JOBS file export uses the same)."""
    box = s.detector == protocol.DETECTOR_BOX
    return req.engine_args(
        checkpoint=s.checkpoint, out=out, source_times_path=source_times_path,
        detector="" if box else s.detector, detector_weights=s.detector_weights,
        box=s.box if box else None, device=s.device, precision=s.precision,
        extra=tuple(job_settings.quality_args(s)))


def prepare_batch(context: Context, op: Any, preview: bool = False) -> Batch:
    """Everything up to jobs queued on the warm engine; raises SnapshotError with a user message."""
    global _batch, _unsaved_warned
    if _batch is not None:
        raise SnapshotError("a lip-sync job is already running; wait for it or cancel it")
    scene = compat.sequencer_scene(context)
    if scene is None or compat.editor(scene) is None:
        raise SnapshotError("this scene has no sequencer strips")
    pairs = pairs_to_sync(context, scene, op, preview)
    settings = getattr(scene, "wav2lip", None)
    s = job_settings.settings_from(context, op, settings)
    check_settings(s, s.enhance)

    fps, rounds = compat.scene_fps(scene), compat.frame_index_rounds()
    requests: List[Tuple[StripLike, SyncRequest]] = []
    for video, sound in pairs:
        sound = picks.sound_for(scene, video, sound)
        v, a = capture.strip_info(scene, video), capture.strip_info(scene, sound)
        if preview:
            use = (scene.frame_preview_start, scene.frame_preview_end) if scene.use_preview_range else None
            req = plan_preview(v, a, fps, int(scene.frame_current), use, rounds=rounds)
        else:
            req = plan(v, a, fps, rounds=rounds)
        req = picks.with_speakers(scene, video, req)
        if not os.path.isfile(req.face_path):
            raise SnapshotError(f"the clip's file is missing: {req.face_path}")
        if not os.path.isfile(req.audio_path):
            raise SnapshotError(f"the sound's file is missing: {req.audio_path}")
        requests.append((video, req))

    folder, warning = job_settings.output_folder(s)
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as exc:
        raise SnapshotError(f"cannot create the output folder {folder}: {exc}") from exc

    mute = op.mute_source
    if not op.properties.is_property_set("mute_source"):
        mute = bool(settings.mute_source) if settings is not None else False
    warnings = []
    if warning and not _unsaved_warned:
        warnings.append(warning)
        _unsaved_warned = True
    jobs: List[Job] = []
    taken = {s.name for s in compat.all_strips(compat.editor(scene))}
    try:
        for video, req in requests:
            dest = unique_output(folder, req.source_name, suffix=PREVIEW_SUFFIX if preview else SUFFIX, taken=taken)
            try:  # the work folder is a hidden folder inside the output folder (job_state.make_workdir)
                engine_job = EngineJob(dest=dest, label=req.source_name)
            except OSError as exc:
                raise SnapshotError(f"cannot write into the output folder {folder}: {exc.strerror or exc}") from exc
            open(dest, "ab").close()  # claim the name, so the next job of this batch gets another
            job = Job(engine_job=engine_job, request=req, scene_name=scene.name, dest=dest, mute_source=mute and not preview,
                      preview=preview, of_many=len(requests) > 1, warnings=warnings if not jobs else [], source_state=strip_state(video))
            jobs.append(job)
            times_path = None
            if req.source_times is not None:
                times_path = str(engine_job.workdir / "source_times.json")
                with open(times_path, "w", encoding="utf-8") as f:
                    f.write(req.source_times_json())
            engine_job.args = engine_args(req, s, str(engine_job.work_out), times_path)
    except BaseException:
        for job in jobs:
            job.engine_job.cleanup()
        raise
    finally:
        for job in jobs:  # the placeholders go: the result is moved in only when it exists
            try:
                os.remove(job.dest)
            except OSError:
                pass

    env = engine_env()
    queue = JobQueue([j.engine_job for j in jobs], lambda: engine.session_engine_for(s.engine_python, env))
    batch = Batch(jobs=jobs, queue=queue, preview=preview)
    _batch = batch
    queue.start()
    return batch


def prepare(context: Context, op: Any) -> Job:
    """prepare_batch for the operator's own preview switch; the first job (the one the panel follows)."""
    return prepare_batch(context, op, bool(getattr(op, "preview", False))).jobs[0]
