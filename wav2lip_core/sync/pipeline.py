"""The core's one entry point: `run(request, progress, cancel, note, executor=, executors=,
restorers=) -> LipSyncResult`.

Before any frame: the plan (plan.py) probes the clip and decodes only the window of the sound
file the output hears (a seek, not the whole file), and the model is loaded (OpenVINO on a CPU,
converted once per checkpoint in a child process and cached; torch on a GPU) or taken from a
long-lived engine's `executors`. Then two streaming passes over the source, so memory grows with
neither the clip's nor the sound file's length:
  1. detect: decode the used frames once and find one face box per frame, or take the boxes
     from the detection cache; a fixed --box decodes nothing here;
  2. sync (sync.py): decode again in output order (ping-pong when the audio outlasts the
     video), crop, run the model in batches, blend, and encode straight into the output file
     (encode.py, which reads the same sound window again, by seeking).
Only per-frame boxes (a few bytes each), the window's 16 kHz samples and its mel spectrogram
are held whole.

Decode+crop, the model and blend run as overlapping stages in threads of their own; encoding
and the callbacks (progress, note, cancel) run only in the caller's thread.
"""

from __future__ import annotations

import math
import queue
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path


from ..faces import landmarks
from .. import protocol
from . import blend as blend_mod
from .blend import BLENDS
from ..media.decode import read_frames
from ..faces.detectors import DetectorSettings, resolve_detector
from ..media.encode import VideoWriter, check_output
from ..media.encoders import choose_encoder
from ..errors import AudioError, Cancelled, MediaError, Wav2LipError
from ..faces.tracking import FaceTrack, track_faces
from .plan import Plan, make_plan
from ..media.probe import probe_video
from .stages import BatchLimit, Stopwatch, calibration_batches, cancel_check, sync_stages

__all__ = ["LipSyncRequest", "LipSyncResult", "run", "find_faces", "detection_settings"]

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

@dataclass
class LipSyncRequest:
    face: str  # video or still image of the speaker
    audio: str  # the driving audio (any format PyAV reads)
    checkpoint: str  # wav2lip.pth / wav2lip_gan.pth
    out: str  # .mp4 to write (never one of the inputs)
    detector: str = protocol.DETECTOR_AUTO  # see protocol.DETECTORS
    detector_weights: str | None = None
    box: tuple[int, int, int, int] | None = None  # TOP BOTTOM LEFT RIGHT: no detection
    pads: tuple[int, int, int, int] = (0, 10, 0, 0)
    smooth: bool = True
    face_at: tuple[int, int] | None = None  # (x, y) on the face to follow; None: the largest
    blend: str = "feather"
    batch_size: int | None = None  # None: chosen for the device
    device: str = "auto"
    precision: str = "auto"
    runtime: str = "auto"  # see protocol.RUNTIMES: OpenVINO on a CPU, torch on a GPU
    fps: float | None = None  # output rate; for a video: one source frame per output frame at this rate
    start_frame: int = 0  # first source frame used
    frames: int | None = None  # number of source frames used (None: to the end)
    # Per output frame, the clip time (s from its first frame) whose frame is shown, as an editor
    # shows a clip by time; past the clip's end the last frame is held. Overrides start_frame/frames.
    source_times: tuple[float, ...] | None = None
    audio_start: float = 0.0  # audio-file time heard at output time 0 (negative: leading silence)
    audible: tuple[float, float] | None = None  # output seconds where the sound plays; silence elsewhere
    duration: float | None = None  # output seconds (None: the audio's length from audio_start)
    cache: bool = True
    cache_dir: str | None = None
    crf: int = protocol.CRF_DEFAULT
    encoder: str = protocol.ENCODER_AUTO  # see protocol.ENCODERS: NVENC on CUDA when it works, else x264
    preset: str | None = None  # x264 preset (protocol.PRESETS); None: the measured default
    silence: str = protocol.SILENCE_HOLD  # protocol.SILENCES: keep the source mouth in silences, or not
    sync_offset: float = 0.0  # frames: shift of the audio window driving each frame (negative: mouth earlier)
    enhance: str | None = None  # face restorer weights (spandrel: GFPGAN, RestoreFormer, CodeFormer)
    enhance_fidelity: float = protocol.ENHANCE_FIDELITY_DEFAULT  # CodeFormer's w
    align: str = protocol.ALIGN_AUTO  # protocol.ALIGNS: level tilted heads when landmarks are available


@dataclass
class LipSyncResult:
    out: str
    frames: int  # output frames
    fps: float
    duration: float  # output seconds
    frames_with_face: int
    detected_frames: int  # frames the detector ran on (0 on a cache hit or with --box)
    cache_hit: bool
    device: str
    precision: str
    batch_size: int  # the batch size the run ended with (smaller after a GPU out-of-memory)
    seconds: float  # wall clock, end to end
    detector: str = ""  # what ran ("box" for a fixed box; "auto" resolved)
    runtime: str = ""  # what ran the model ("torch" or "openvino")
    warm: bool = False  # the model was already loaded (given, or kept by a long-lived engine)
    notes: list[str] = field(default_factory=list)
    stage_seconds: dict[str, float] = field(default_factory=dict)


def _check_inputs(req: LipSyncRequest) -> None:
    for what, p, error in (("face video/image", req.face, MediaError), ("audio", req.audio, AudioError)):
        if not Path(p).expanduser().is_file():
            raise error(f"{what} file not found: {p}. Check the path.")
    check_output(req.out, (req.face, req.audio))  # fail before detection, not minutes later
    if req.blend not in BLENDS:
        raise Wav2LipError(f"unknown blend {req.blend!r}: use one of {', '.join(BLENDS)}")
    if req.align not in protocol.names(protocol.ALIGNS):
        raise Wav2LipError(f"unknown --align {req.align!r}: use one of {', '.join(protocol.names(protocol.ALIGNS))}")
    if req.blend == "mouth":  # at request time, not after detection
        landmarks.require("--blend mouth")
    if not (math.isfinite(req.enhance_fidelity) and 0.0 <= req.enhance_fidelity <= 1.0):
        raise Wav2LipError(f"--enhance-fidelity must be between 0 and 1, got {req.enhance_fidelity}")
    if req.batch_size is not None and req.batch_size < 1:
        raise Wav2LipError(f"batch size must be at least 1, got {req.batch_size}")
    if req.fps is not None and not (0 < req.fps <= 1000):
        raise Wav2LipError(f"--fps must be between 0 and 1000, got {req.fps}")
    if req.duration is not None and not req.duration > 0:
        raise Wav2LipError(f"--duration must be positive, got {req.duration}")
    if req.start_frame < 0 or (req.frames is not None and req.frames < 1):
        raise Wav2LipError("--start-frame must be >= 0 and --frames >= 1")
    if req.audible is not None and not (len(req.audible) == 2 and all(math.isfinite(t) for t in req.audible)
                                        and req.audible[0] < req.audible[1]):
        raise Wav2LipError(f"--audible needs two output times FROM < TO in seconds, got {req.audible}")
    if req.silence not in protocol.names(protocol.SILENCES):
        raise Wav2LipError(f"unknown --silence {req.silence!r}: use one of {', '.join(protocol.names(protocol.SILENCES))}")
    if not (math.isfinite(req.sync_offset) and abs(req.sync_offset) <= protocol.SYNC_OFFSET_MAX):
        raise Wav2LipError(f"--sync-offset must be a number of frames within ±{protocol.SYNC_OFFSET_MAX:g}, "
                           f"got {req.sync_offset}")
    if req.source_times is not None:
        if not req.source_times or not all(math.isfinite(t) for t in req.source_times):
            raise Wav2LipError("--source-times needs a non-empty list of finite clip times in seconds")
        if req.fps is None:
            raise Wav2LipError("--source-times needs --fps (the output frame rate)")


def detection_settings(req: LipSyncRequest, device: str) -> tuple[DetectorSettings, str]:
    """The detector that runs for `req` ("auto" resolved) and a line telling the user which."""
    kind, weights, line = ("box", None, "") if req.box is not None else resolve_detector(req.detector, req.detector_weights)
    return DetectorSettings(kind=kind, weights=weights, box=req.box, pads=tuple(req.pads), smooth=req.smooth,
                            device=device, face_at=tuple(req.face_at) if req.face_at is not None else None), line


def find_faces(plan: Plan, settings: DetectorSettings, *, cache_dir: str | None, use_cache: bool,
               progress: ProgressFn, cancel: CancelFn) -> FaceTrack:
    """Boxes for the used source frames [start, start + n) where n is what the output shows."""
    from ..faces.cache import FaceCache

    info = plan.info
    n = min(plan.used, max(plan.sources) - plan.start + 1)
    if settings.kind == "box":
        y1, y2, x1, x2 = settings.box
        box = (min(y1, info.height - 1), min(y2, info.height), min(x1, info.width - 1), min(x2, info.width))
        settings = DetectorSettings(kind="box", box=box)
    cache = FaceCache(cache_dir) if use_cache and settings.kind != "box" else None
    key = None
    if cache is not None:
        key = f"{cache.key(info.path, settings)}-{plan.start}-{n}"
        hit = cache.load(key)
        if hit is not None and len(hit.boxes) == n:
            progress(protocol.STAGE_DETECT, n, n)
            return hit
    frames = ((i - plan.start, f) for i, f in read_frames(info, range(plan.start, plan.start + n)))
    track = track_faces(frames, n, settings, progress=lambda d, t: progress(protocol.STAGE_DETECT, d, t), cancel=cancel,
                        source=info.path)
    if cache is not None and key is not None:
        cache.save(key, track)
    return track


def _never() -> bool:
    return False


def run(request: LipSyncRequest, progress: ProgressFn | None = None, cancel: CancelFn | None = None,
        note: NoteFn | None = None, executor=None, executors=None, restorers=None) -> LipSyncResult:
    """Lip-sync `request.face` to `request.audio` into `request.out`. Raises Wav2LipError
    subclasses (Cancelled when `cancel()` returned True); on any failure no output is left.
    `note` receives lines worth telling the user (which detector ran, a smaller batch, ...).
    `executor`: a model already loaded with runtime.load_executor for this request's checkpoint,
    device, precision and runtime; or `executors`: a runtime.Executors that a process serving several
    jobs keeps, asked for the model once the device, precision and runtime are resolved; and
    `restorers`: an enhance.Restorers such a process keeps for --enhance."""
    from ..model import runtime as runtime_mod
    from ..model.device import pick_device, resolve_precision

    t0 = time.perf_counter()
    progress = progress or (lambda stage, done, total: None)
    cancel = cancel or _never
    notes: list[str] = []

    def tell(line: str) -> None:
        notes.append(line)
        if note is not None:
            note(line)

    watch = Stopwatch()
    _check_inputs(request)

    t = time.perf_counter()
    progress(protocol.STAGE_AUDIO, 0, 1)
    info = probe_video(request.face, image_fps=request.fps or 25.0)
    plan = make_plan(request, info)  # decodes only the audio window the job hears
    for line in plan.notes:
        tell(line)
    progress(protocol.STAGE_AUDIO, 1, 1)
    t = watch.add("audio", t)

    progress(protocol.STAGE_LOAD, 0, 1)
    device = pick_device(request.device)
    precision = resolve_precision(request.precision, device)
    runtime = runtime_mod.resolve_runtime(request.runtime, device.type, precision)
    encoder = choose_encoder(request.encoder, preset=request.preset, crf=request.crf,
                             cuda=device.type == "cuda", size=(info.width, info.height))
    if encoder.note:
        tell(encoder.note)
    warm = executor is not None
    if executor is None and executors is not None:
        warm = executors.has(request.checkpoint, runtime=runtime, device=device, precision=precision)
        executor = executors.get(request.checkpoint, runtime=runtime, device=device, precision=precision, stop=cancel)
    if executor is None:
        executor = runtime_mod.load_executor(request.checkpoint, runtime=runtime, device=device, precision=precision,
                                         stop=cancel)
    precision = executor.precision
    restorer = None
    if request.enhance:  # loaded before detection, so a wrong file fails in seconds, not minutes
        from ..quality import enhance

        where = device.type if device.type in ("cuda", "mps") else "cpu"
        restorer = (restorers or enhance.Restorers()).get(request.enhance, where, request.enhance_fidelity)
        if where == "cpu":
            tell(f"face restoration ({restorer.arch}) runs on the CPU: expect seconds per frame")
    predictor = blend_mod.predictor_for(request.blend, request.align)  # ~1.5 s once per process
    # The model's thread halves the batch on a GPU out-of-memory; its note is told from this one.
    limit_notes: queue.SimpleQueue[str] = queue.SimpleQueue()
    limit = BatchLimit(request.batch_size or (DEFAULT_BATCH_CUDA if device.type == "cuda" else DEFAULT_BATCH_CPU),
                       limit_notes.put)
    batch = limit.size
    progress(protocol.STAGE_LOAD, 1, 1)
    t = watch.add("load", t)
    if cancel():
        raise Cancelled("cancelled")

    settings, line = detection_settings(request, "cuda" if device.type == "cuda" else "cpu")
    if line:
        tell(line)
    track = find_faces(plan, settings, cache_dir=request.cache_dir, use_cache=request.cache, progress=progress,
                       cancel=cancel)
    t = watch.add("detect", t)
    if getattr(executor, "needs_calibration", False):
        tell("calibrating int8 on this clip's faces (once per checkpoint)")
        executor.calibrate(calibration_batches(plan, track, batch, cancel, runtime_mod.CALIBRATION_BATCHES), cancel)
        t = watch.add("load", t)

    n_out = len(plan.sources)
    check_cancel = cancel_check(cancel)

    def poll() -> None:
        while not limit_notes.empty():
            tell(limit_notes.get())
        check_cancel()

    t_sync = time.perf_counter()
    with VideoWriter(request.out, width=info.width, height=info.height, fps=plan.fps, audio_path=request.audio,
                     audio_start=request.audio_start, duration=plan.duration, encoder=encoder,
                     source_paths=(request.face, request.audio), colour=info.colour,
                     audible=request.audible) as writer, \
            sync_stages(plan, track, executor, limit, watch, poll, predictor=predictor, blend=request.blend,
                        align=request.align, restorer=restorer) as stages:
        progress(protocol.STAGE_SYNC, 0, n_out)
        for group, _ in stages:
            for item in group:
                te = time.perf_counter()
                writer.write(item.frame, plan.times[item.k])
                watch.add("encode", te)
                check_cancel()
                if (item.k + 1) % batch == 0 or item.k + 1 == n_out:
                    progress(protocol.STAGE_SYNC, item.k + 1, n_out)
        poll()
        te = time.perf_counter()
    watch.add("encode", te)
    watch.add("sync", t_sync)

    rel_used = [s - plan.start for s in plan.sources]
    return LipSyncResult(
        out=str(Path(request.out).expanduser()), frames=n_out, fps=plan.fps, duration=plan.duration,
        frames_with_face=int(sum(bool(track.has_face[r]) for r in rel_used)),
        detected_frames=track.detected_frames, cache_hit=track.from_cache, device=str(device),
        precision=precision, batch_size=limit.size, seconds=time.perf_counter() - t0, stage_seconds=watch.seconds,
        detector=settings.kind, notes=notes, runtime=executor.name, warm=warm,
    )
