"""The core's one entry point: `run(request, progress, cancel, note, executor=, executors=,
restorers=) -> LipSyncResult` (the request and result types: request.py).

`run` is a list of named steps, in order:
  1. check_request (request.py): the inputs exist, the options are in range;
  2. plan_output: probe the clip and decide every output frame; only the window of the sound
     file the output hears is decoded (a seek, not the whole file) (plan.py);
  3. load: device, precision, encoder, the model (OpenVINO on a CPU, converted once per
     checkpoint in a child process and cached; torch on a GPU; or taken from a long-lived
     engine's `executors`), the face restorer and the landmarks predictor;
  4. detect_faces: decode the used frames once and find one face box per frame for each person
     the job syncs (who.py; --face-at auto: autoface.py), or take the boxes from the detection
     cache; a fixed --box decodes nothing here (with --speaker the output's sound is first
     mixed from the speakers' audios: speakers.py);
  5. calibrate_int8: for an int8 model not yet quantized, on this clip's own faces;
  6. choose_offset, only with --sync-offset auto: sync a probe stretch without encoding it,
     measure it and re-plan with the correction (autooffset.py);
  7. sync_into_file (stages.py): decode again in output order (ping-pong when the audio
     outlasts the video), crop, run the model in batches, blend, and encode straight into the
     output file (encode.py, which reads the same sound window again, by seeking); the sync
     meter (quality/meter_live.py) records each finished frame's mouth in the blend stage and
     measures the lag at the end, unless request.meter is off.
Two streaming passes over the source, so memory grows with neither the clip's nor the sound
file's length: only per-frame boxes (a few bytes each), the window's 16 kHz samples and its mel
spectrogram are held whole.

Decode+crop, the model and blend run as overlapping stages in threads of their own; encoding
and the callbacks (progress, note, cancel) run only in the caller's thread.
"""

from __future__ import annotations

import dataclasses
import queue
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .. import protocol
from ..errors import Cancelled
from ..faces.detectors import DetectorSettings
from ..faces.tracking import FaceTrack
from ..media.encode import VideoWriter
from ..media.encoders import EncoderChoice, choose_encoder
from ..media.probe import probe_video
from ..quality.meter import SyncMeasure, reading_text
from ..quality.meter_live import MouthRecorder, measure_recorded
from . import blend as blend_mod
from .plan import Plan, make_plan
from .request import LipSyncRequest, LipSyncResult, check_request
from .speakers import mixed_sound, speaker_plan
from .stages import BatchLimit, Stopwatch, Voice, calibration_batches, cancel_check, sync_stages
from .who import detect_people, detection_settings, find_faces

__all__ = ["LipSyncRequest", "LipSyncResult", "run", "find_faces", "detection_settings", "detect_people"]

ProgressFn = Callable[[str, int, int], None]
CancelFn = Callable[[], bool]
NoteFn = Callable[[str], None]

# Chosen by measurement on a 2-core CPU (bench/bench_pipeline.py): per-frame forward cost is
# flat from batch 8 to 32 and rises at the original's 128 (cache pressure); 16 keeps latency
# to cancel low. On CUDA the model is never what limits (bench/bench_gpu.py, H200, 1080p, 500
# frames: fp16 forward 8200 frames/s bare, x264 ~130): batch 16 keeps 5 batches in flight under
# the sync pass's memory budget, 133 frames/s against 130 at 32 and 110 at 64 (2 in flight).
# Out-of-memory halves it.
DEFAULT_BATCH_CPU = 16
DEFAULT_BATCH_CUDA = 16


class Notes:
    """Lines worth telling the user (which detector ran, a smaller batch, ...): kept for the
    result and handed to the caller's `note` as they come."""

    def __init__(self, note: NoteFn | None):
        self.lines: list[str] = []
        self._note = note

    def tell(self, line: str) -> None:
        self.lines.append(line)
        if self._note is not None:
            self._note(line)


@dataclass
class Loaded:
    """What the load step made ready before any frame is decoded."""

    device: object  # torch.device (model.device.pick_device)
    precision: str  # what the executor runs
    executor: object  # model.runtime.Executor
    warm: bool  # the executor was already loaded (given, or kept by `executors`)
    encoder: EncoderChoice
    restorer: object | None  # quality.enhance.Restorer for --enhance
    predictor: object | None  # faces.landmarks.Predictor for --blend mouth / --align
    limit: BatchLimit
    # The model's thread halves the batch on a GPU out-of-memory; its note is told from the
    # caller's thread through this queue.
    limit_notes: queue.SimpleQueue


def _never() -> bool:
    return False


def _no_progress(stage: str, done: int, total: int) -> None:
    pass


def run(request: LipSyncRequest, progress: ProgressFn | None = None, cancel: CancelFn | None = None,
        note: NoteFn | None = None, executor=None, executors=None, restorers=None) -> LipSyncResult:
    """Lip-sync `request.face` to `request.audio` into `request.out`. Raises Wav2LipError
    subclasses (Cancelled when `cancel()` returned True); on any failure no output is left.
    `note` receives lines worth telling the user (which detector ran, a smaller batch, ...).
    `executor`: a model already loaded with runtime.load_executor for this request's checkpoint,
    device, precision and runtime; or `executors`: a runtime.Executors that a process serving
    several jobs keeps, asked for the model once the device, precision and runtime are resolved;
    and `restorers`: an enhance.Restorers such a process keeps for --enhance."""
    t0 = time.perf_counter()
    progress = progress or _no_progress
    cancel = cancel or _never
    notes = Notes(note)
    watch = Stopwatch()
    check_request(request)
    with mixed_sound(request, notes.tell) as request:  # --speaker: the output's sound, first
        t = time.perf_counter()
        plan = plan_output(request, progress, notes)
        t = watch.add("audio", t)
        loaded = load(request, plan, progress, cancel, notes, executor=executor, executors=executors,
                      restorers=restorers)
        t = watch.add("load", t)
        if cancel():
            raise Cancelled("cancelled")
        settings, tracks = detect_faces(request, plan, loaded.device, progress, cancel, notes)
        track = tracks[0]
        voices = [(tr, speaker_plan(request, plan.info, plan, s)) for tr, s in zip(tracks, request.speakers)] or None
        t = watch.add("detect", t)
        if calibrate_int8(loaded.executor, plan, track, loaded.limit.size, cancel, notes):
            t = watch.add("load", t)
        offset = request.sync_offset
        if request.sync_offset_auto:
            t = time.perf_counter()
            plan, offset = choose_offset(request, plan, track, loaded, cancel, notes)
            watch.add("probe", t)
        measured = sync_into_file(request, plan, track, loaded, watch, progress, cancel, notes, voices)
        result = summary(request, plan, tracks, loaded, settings, watch, notes, t0)
    return dataclasses.replace(result, sync_offset=offset, **measure_fields(measured))


def plan_output(request: LipSyncRequest, progress: ProgressFn, notes: Notes) -> Plan:
    """The clip probed and every output frame decided (the "audio" stage: it decodes only the
    window of the sound file the job hears)."""
    progress(protocol.STAGE_AUDIO, 0, 1)
    info = probe_video(request.face, image_fps=request.fps or 25.0)
    plan = make_plan(request, info, sound=request.meter or request.sync_offset_auto or request.face_auto)
    for line in plan.notes:
        notes.tell(line)
    progress(protocol.STAGE_AUDIO, 1, 1)
    return plan


def load(request: LipSyncRequest, plan: Plan, progress: ProgressFn, cancel: CancelFn, notes: Notes, *,
         executor=None, executors=None, restorers=None) -> Loaded:
    """The "load" stage: device and precision, the encoder, the model, the face restorer and the
    landmarks predictor, all before detection, so a wrong file fails in seconds, not minutes."""
    from ..model import runtime as runtime_mod
    from ..model.device import pick_device, resolve_precision

    progress(protocol.STAGE_LOAD, 0, 1)
    device = pick_device(request.device)
    precision = resolve_precision(request.precision, device)
    runtime = runtime_mod.resolve_runtime(request.runtime, device.type, precision)
    encoder = choose_encoder(request.encoder, preset=request.preset, crf=request.crf,
                             cuda=device.type == "cuda", size=(plan.info.width, plan.info.height))
    if encoder.note:
        notes.tell(encoder.note)
    executor, warm = load_model(request.checkpoint, runtime, device, precision, cancel, executor=executor,
                                executors=executors)
    restorer = load_restorer(request, device, restorers, notes)
    predictor = blend_mod.predictor_for(request.blend, request.align)  # ~1.5 s once per process
    limit_notes: queue.SimpleQueue[str] = queue.SimpleQueue()
    limit = BatchLimit(request.batch_size or (DEFAULT_BATCH_CUDA if device.type == "cuda" else DEFAULT_BATCH_CPU),
                       limit_notes.put)
    progress(protocol.STAGE_LOAD, 1, 1)
    return Loaded(device=device, precision=executor.precision, executor=executor, warm=warm, encoder=encoder,
                  restorer=restorer, predictor=predictor, limit=limit, limit_notes=limit_notes)


def load_model(checkpoint: str, runtime: str, device, precision: str, cancel: CancelFn, *,
               executor=None, executors=None) -> tuple[object, bool]:
    """(executor, warm): the one given; else the one `executors` keeps (warm when it was loaded
    already); else one loaded now (a conversion under way is killed when `cancel()` turns true)."""
    from ..model import runtime as runtime_mod

    if executor is not None:
        return executor, True
    if executors is not None:
        warm = executors.has(checkpoint, runtime=runtime, device=device, precision=precision)
        return executors.get(checkpoint, runtime=runtime, device=device, precision=precision, stop=cancel), warm
    return runtime_mod.load_executor(checkpoint, runtime=runtime, device=device, precision=precision,
                                     stop=cancel), False


def load_restorer(request: LipSyncRequest, device, restorers, notes: Notes):
    """The --enhance restorer on the job's device (from `restorers` when a process keeps them),
    or None without --enhance."""
    if not request.enhance:
        return None
    from ..quality import enhance

    where = device.type if device.type in ("cuda", "mps") else "cpu"
    restorer = (restorers or enhance.Restorers()).get(request.enhance, where, request.enhance_fidelity)
    if where == "cpu":
        notes.tell(f"face restoration ({restorer.arch}) runs on the CPU: expect seconds per frame")
    return restorer


def detect_faces(request: LipSyncRequest, plan: Plan, device, progress: ProgressFn, cancel: CancelFn,
                 notes: Notes) -> tuple[DetectorSettings, list[FaceTrack]]:
    """The detector that runs and one box track per person the request syncs (who.py; with
    --face-at auto, per shot the face that follows the audio: autoface.py)."""
    if request.face_auto:
        from .autoface import auto_face

        return auto_face(request, plan, device, progress, cancel, notes.tell)
    return detect_people(request, plan, device, progress, cancel, notes.tell)


def calibrate_int8(executor, plan: Plan, track: FaceTrack, batch: int, cancel: CancelFn, notes: Notes) -> bool:
    """Quantize an int8 model that is not in the cache yet on this clip's own faces; whether it
    had to (its time counts as loading)."""
    if not getattr(executor, "needs_calibration", False):
        return False
    from ..model.runtime import CALIBRATION_BATCHES

    notes.tell("calibrating int8 on this clip's faces (once per checkpoint)")
    executor.calibrate(calibration_batches(plan, track, batch, cancel, CALIBRATION_BATCHES), cancel)
    return True


def sync_into_file(request: LipSyncRequest, plan: Plan, track: FaceTrack, loaded: Loaded, watch: Stopwatch,
                   progress: ProgressFn, cancel: CancelFn, notes: Notes,
                   voices: list[Voice] | None = None) -> SyncMeasure | None:
    """The "sync" stage: the overlapped decode+crop, model, (enhance) and blend stages, their
    frames encoded into request.out in this thread, as they come, with progress per batch; and
    with request.meter the sync meter's reading of those frames (None without). `voices`: one
    (track, plan) per --speaker, all synced in the same pass; the meter reads each against its own
    audio (a note per speaker) and the first gives the result's reading."""
    info = plan.info
    sounds = [plan.sound] if voices is None else [p.sound for _, p in voices]
    recorders = ([MouthRecorder(plan.times, plan.fps) for _ in sounds]
                 if request.meter and all(s is not None for s in sounds) else None)
    n_out = len(plan.sources)
    batch = loaded.limit.size  # progress steps at the size the pass starts with
    check_cancel = cancel_check(cancel)

    def poll() -> None:
        while not loaded.limit_notes.empty():
            notes.tell(loaded.limit_notes.get())
        check_cancel()

    t_sync = time.perf_counter()
    with VideoWriter(request.out, width=info.width, height=info.height, fps=plan.fps, audio_path=request.audio,
                     audio_start=request.audio_start, duration=plan.duration, encoder=loaded.encoder,
                     source_paths=(request.face, request.audio), colour=info.colour,
                     audible=request.audible) as writer, \
            sync_stages(plan, track, loaded.executor, loaded.limit, watch, poll, predictor=loaded.predictor,
                        blend=request.blend, align=request.align, restorer=loaded.restorer,
                        recorders=recorders, voices=voices) as stages:
        progress(protocol.STAGE_SYNC, 0, n_out)
        for group, _ in stages:
            for item in [g for g in group if g.voice == 0]:  # each frame once
                te = time.perf_counter()
                writer.write(item.frame, plan.times[item.k])
                watch.add("encode", te)
                check_cancel()
                if (item.k + 1) % batch == 0 or item.k + 1 == n_out:
                    progress(protocol.STAGE_SYNC, item.k + 1, n_out)
        poll()
        te = time.perf_counter()
    watch.add("encode", te)  # closing the writer flushes the encoder and finishes the sound
    watch.add("sync", t_sync)
    if recorders is None:
        return None
    t = time.perf_counter()
    readings = []
    for k, (recorder, sound) in enumerate(zip(recorders, sounds)):
        try:
            readings.append(measure_recorded(recorder, sound))
        except (ValueError, ArithmeticError) as exc:
            # The clip is written and whole: a reading that cannot be made must not cost it.
            notes.tell(f"sync meter: no reading ({type(exc).__name__}: {exc})")
            readings.append(None)
        if request.speakers and readings[-1] is not None:
            m = readings[-1]
            reading = reading_text(m.offset_frames, m.verdict, m.confidence)
            notes.tell(f"sync meter, {request.speakers[k].label}: {reading}")
    watch.add("meter", t)
    return readings[0]


# --- the sync meter in a run (quality.meter_live) and --sync-offset auto (autooffset.py) --------

def choose_offset(request: LipSyncRequest, plan: Plan, track: FaceTrack, loaded: Loaded, cancel: CancelFn,
                  notes: Notes) -> tuple[Plan, float]:
    """--sync-offset auto: probe, measure, and the plan (re-made when a correction applies) and
    the offset the job runs with."""
    from .autooffset import PROBE_S, auto_offset

    check_cancel = cancel_check(cancel)

    def poll() -> None:
        while not loaded.limit_notes.empty():
            notes.tell(loaded.limit_notes.get())
        check_cancel()

    notes.tell(f"sync offset auto: syncing and measuring a probe of up to {PROBE_S:g} s first")
    found = auto_offset(plan, track, loaded.executor, loaded.limit, poll, predictor=loaded.predictor,
                        blend=request.blend, align=request.align, restorer=loaded.restorer)
    notes.tell(found.note)
    if not found.applied or found.offset == 0:
        return plan, 0.0
    shifted = dataclasses.replace(request, sync_offset=found.offset)
    return make_plan(shifted, plan.info, sound=request.meter), found.offset


def measure_fields(measured: SyncMeasure | None) -> dict:
    """The result's sync meter fields for a reading (all None without one)."""
    if measured is None:
        return {"sync_offset_measured": None, "sync_confidence": None, "sync_verdict": None}
    return {"sync_offset_measured": measured.offset_frames, "sync_confidence": measured.confidence,
            "sync_verdict": measured.verdict}


def summary(request: LipSyncRequest, plan: Plan, tracks: list[FaceTrack], loaded: Loaded, settings: DetectorSettings,
            watch: Stopwatch, notes: Notes, t0: float) -> LipSyncResult:
    """The result of a finished run started at perf_counter() `t0` (frames_with_face: frames
    where any of the tracked people is)."""
    rel_used = [s - plan.start for s in plan.sources]
    track = tracks[0]
    return LipSyncResult(
        out=str(Path(request.out).expanduser()), frames=len(plan.sources), fps=plan.fps, duration=plan.duration,
        frames_with_face=int(sum(any(bool(t.has_face[r]) for t in tracks) for r in rel_used)),
        detected_frames=track.detected_frames, cache_hit=track.from_cache, device=str(loaded.device),
        precision=loaded.precision, batch_size=loaded.limit.size, seconds=time.perf_counter() - t0,
        stage_seconds=watch.seconds, detector=settings.kind, notes=notes.lines, runtime=loaded.executor.name,
        warm=loaded.warm,
    )
