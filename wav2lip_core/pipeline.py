"""The core's one entry point: `run(request, progress, cancel) -> LipSyncResult`.

Two streaming passes over the source, so memory does not grow with clip length:
  1. detect: decode the used frames once, find one face box per frame (or take them from
     the cache, or from a fixed --box);
  2. sync: decode again in output order (ping-pong when the audio outlasts the video), crop,
     run the model in batches, blend, and encode straight into the output file.
Only per-frame boxes (a few bytes each), the 16 kHz audio and its mel spectrogram are held whole.

The sync pass runs as three overlapping stages (overlap.py): decode+crop and the model each in a
thread of their own, blend+encode in the caller's thread, with SYNC_IN_FLIGHT batches at most
between the decoder and the encoder. Callbacks (progress, note, cancel) run only in the caller's
thread.
"""

from __future__ import annotations

import bisect
import math
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import audio as audio_mod
from . import protocol
from .blend import BLENDS, crop_face, model_inputs, paste, prediction_to_uint8
from .decode import read_frames
from .probe import VideoInfo, probe_video
from .encode import VideoWriter, check_output
from .errors import AudioError, Cancelled, MediaError, Wav2LipError
from .detectors import DetectorSettings, resolve_detector
from .faces import FaceTrack, track_faces
from .overlap import Overlap

ProgressFn = Callable[[str, int, int], None]
CancelFn = Callable[[], bool]
NoteFn = Callable[[str], None]

STAGES = protocol.STAGES
# Chosen by measurement on a 2-core CPU (bench/bench_pipeline.py): per-frame forward cost is
# flat from batch 8 to 32 and rises at the original's 128 (cache pressure); 16 keeps latency
# to cancel low. On CUDA a larger batch amortises launches; we back off on out-of-memory.
DEFAULT_BATCH_CPU = 16
DEFAULT_BATCH_CUDA = 64
# Batches between the decoder and the encoder in the sync pass: one being written, one in the
# model, one ready for it and one being decoded, so the model never waits for the decoder when
# the CPU has a core to spare. Frames held: this times the batch size (64 at 1080p with the
# CPU batch: ~400 MB as BGR).
SYNC_IN_FLIGHT = 4


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
    crf: int = 18


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
    notes: list[str] = field(default_factory=list)
    stage_seconds: dict[str, float] = field(default_factory=dict)


@dataclass
class Plan:
    """Everything decided before any frame is decoded."""

    info: VideoInfo
    start: int  # first used source frame
    used: int  # number of used source frames
    fps: float
    duration: float
    sources: list[int]  # per output frame: source frame index (absolute)
    times: list[float]  # per output frame: presentation time in seconds
    mel_starts: list[int]  # per output frame: start column of its 16-column mel window
    mel: np.ndarray


class _Stopwatch:
    """Seconds per stage: each stage's busy time (its thread's waits are not counted)."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self._lock = threading.Lock()  # the sync pass's stages add from their own threads

    def add(self, stage: str, since: float) -> float:
        now = time.perf_counter()
        with self._lock:
            self.seconds[stage] = self.seconds.get(stage, 0.0) + now - since
        return now


def _check_inputs(req: LipSyncRequest) -> None:
    for what, p, error in (("face video/image", req.face, MediaError), ("audio", req.audio, AudioError)):
        if not Path(p).expanduser().is_file():
            raise error(f"{what} file not found: {p}. Check the path.")
    check_output(req.out, (req.face, req.audio))  # fail before detection, not minutes later
    if req.blend not in BLENDS:
        raise Wav2LipError(f"unknown blend {req.blend!r}: use one of {', '.join(BLENDS)}")
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
    if req.source_times is not None:
        if not req.source_times or not all(math.isfinite(t) for t in req.source_times):
            raise Wav2LipError("--source-times needs a non-empty list of finite clip times in seconds")
        if req.fps is None:
            raise Wav2LipError("--source-times needs --fps (the output frame rate)")


def _audio_segment(wav: np.ndarray, start_s: float, duration: float | None,
                   audible: tuple[float, float] | None = None) -> tuple[np.ndarray, float]:
    """The 16 kHz samples heard during the output: starting at `start_s` in the file (zeros
    before the file starts), `duration` long (zeros after it ends), zeros outside `audible`."""
    sr = audio_mod.SAMPLE_RATE
    first = int(round(start_s * sr))
    if duration is None:
        duration = (len(wav) - first) / sr
        if duration <= 0:
            raise Wav2LipError(f"--audio-start {start_s:.3f} s is past the end of the audio ({len(wav) / sr:.3f} s)")
    n = int(round(duration * sr))
    seg = np.zeros(n, np.float32)
    lo, hi = max(first, 0), min(first + n, len(wav))
    if hi > lo:
        seg[lo - first: hi - first] = wav[lo:hi]
    if audible is not None:
        a, b = (min(max(int(round(t * sr)), 0), n) for t in audible)
        seg[:a] = 0.0
        seg[b:] = 0.0
    return seg, duration


def _ping_pong(k: int, n: int) -> int:
    """Source offset for output frame k when a clip of n frames plays forward then backward."""
    if n == 1:
        return 0
    k %= 2 * n - 2
    return k if k < n else 2 * n - 2 - k


# Clip times come from another program's arithmetic (an editor's frame -> seconds); a frame that
# starts within a millisecond after the asked time counts as already on screen.
_TIME_TOLERANCE = 1e-3


def frame_at(info: VideoInfo, t: float) -> int:
    """The clip frame on screen at `t` seconds from the first frame: the last one that started
    by then; the first before the start, the last (held) after the end."""
    i = bisect.bisect_right(info.frame_times, t + _TIME_TOLERANCE) - 1
    return min(max(i, 0), info.frame_count - 1)


def make_plan(req: LipSyncRequest, info: VideoInfo, wav: np.ndarray) -> Plan:
    seg, duration = _audio_segment(wav, req.audio_start, req.duration, req.audible)
    mel = audio_mod.melspectrogram(seg)
    audio_mod.check_mel_length(mel.shape[1])

    start = min(req.start_frame, info.frame_count - 1) if not info.is_image else 0
    if req.start_frame >= info.frame_count and not info.is_image:
        raise Wav2LipError(f"--start-frame {req.start_frame} is past the end of {info.path} ({info.frame_count} frames)")
    used = info.frame_count - start if not info.is_image else 1
    if req.frames is not None and not info.is_image:
        used = min(used, req.frames)

    # A fixed rate (asked for, an image, or a constant-rate video) uses the original's window
    # rule per frame index; a variable-rate video keeps its own frame times.
    follow_source_times = req.fps is None and info.variable_frame_rate and not info.is_image
    fps = float(req.fps or info.fps)
    if req.source_times is not None and not info.is_image:
        n_out = max(1, math.ceil(duration * fps - 1e-6))
        times = [k / fps for k in range(n_out)]
        chunk_starts = audio_mod.mel_chunk_starts(mel.shape[1], fps)
        mel_starts = [chunk_starts[min(k, len(chunk_starts) - 1)] for k in range(n_out)]
        last = len(req.source_times) - 1
        sources = [frame_at(info, req.source_times[min(k, last)]) for k in range(n_out)]
        start, used = min(sources), max(sources) - min(sources) + 1
    elif not follow_source_times:
        n_out = max(1, math.ceil(duration * fps - 1e-6))
        times = [k / fps for k in range(n_out)]
        chunk_starts = audio_mod.mel_chunk_starts(mel.shape[1], fps)
        mel_starts = [chunk_starts[min(k, len(chunk_starts) - 1)] for k in range(n_out)]
        sources = [start + _ping_pong(k, used) for k in range(n_out)]
    else:
        ft = info.frame_times
        durations = [ft[j + 1] - ft[j] for j in range(start, start + used - 1)] + [1.0 / info.fps]
        sources, times, t, k = [], [], 0.0, 0
        while t < duration - 1e-6:
            off = _ping_pong(k, used)
            sources.append(start + off)
            times.append(t)
            t += durations[off]
            k += 1
        mel_starts = [audio_mod.mel_window_start(t, mel.shape[1]) for t in times]
    return Plan(info=info, start=start, used=used, fps=fps, duration=duration, sources=sources,
                times=times, mel_starts=mel_starts, mel=mel)


def detection_settings(req: LipSyncRequest, device: str) -> tuple[DetectorSettings, str]:
    """The detector that runs for `req` ("auto" resolved) and a line telling the user which."""
    kind, weights, line = ("box", None, "") if req.box is not None else resolve_detector(req.detector, req.detector_weights)
    return DetectorSettings(kind=kind, weights=weights, box=req.box, pads=tuple(req.pads), smooth=req.smooth,
                            device=device, face_at=tuple(req.face_at) if req.face_at is not None else None), line


def find_faces(plan: Plan, settings: DetectorSettings, *, cache_dir: str | None, use_cache: bool,
               progress: ProgressFn, cancel: CancelFn) -> FaceTrack:
    """Boxes for the used source frames [start, start + n) where n is what the output shows."""
    from .cache import FaceCache

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


def _batches(plan: Plan, track: FaceTrack, batch: "int | BatchLimit", cancel: CancelFn) -> Iterator[list]:
    """Groups of (output index, frame, box or None, mel window) in output order; each group is
    as large as the batch limit when it is built (it shrinks after a GPU out-of-memory)."""
    group = []
    frames = read_frames(plan.info, plan.sources)
    for k, (src, frame) in enumerate(frames):
        if cancel():
            raise Cancelled("cancelled")
        rel = src - plan.start
        box = tuple(int(v) for v in track.boxes[rel]) if track.has_face[rel] else None
        s = plan.mel_starts[k]
        group.append((k, frame, box, plan.mel[:, s: s + audio_mod.MEL_STEP]))
        if len(group) >= (batch.size if isinstance(batch, BatchLimit) else batch):
            yield group
            group = []
    if group:
        yield group


class BatchLimit:
    """How many frames go through the model at once. An out-of-memory halves it for the rest of
    the run: retrying every later batch at the full size would fail (and cost) the same way."""

    def __init__(self, size: int, note: NoteFn | None = None):
        self.size = size
        self._note = note

    def halve(self) -> None:
        if self.size == 1:
            raise Wav2LipError("the GPU ran out of memory even at batch size 1: use --device cpu")
        self.size //= 2
        if self._note is not None:
            self._note(f"the GPU ran out of memory: continuing with batch size {self.size}")


def _sync_stages(plan: Plan, track: FaceTrack, runner, limit: BatchLimit, watch: _Stopwatch,
                 poll: Callable[[], None]) -> Overlap:
    """The sync pass's decode+crop and model stages, overlapped; iterating the result (in a
    with block) gives (group, faced items, predictions or None) per batch in output order."""

    def prepared(stopping: CancelFn) -> Iterator[tuple]:
        t = time.perf_counter()
        for group in _batches(plan, track, limit, stopping):
            t = watch.add("decode", t)
            faced = [g for g in group if g[2] is not None]
            inputs = _inputs(faced) if faced else None
            watch.add("crop", t)
            yield group, faced, inputs
            t = time.perf_counter()  # the wait for a free slot is not decoding

    def model(item: tuple) -> tuple:
        group, faced, inputs = item
        if inputs is None:
            return group, faced, None
        t = time.perf_counter()
        preds = runner.forward(*inputs, limit)
        watch.add("model", t)
        return group, faced, preds

    return Overlap(prepared, [model], in_flight=SYNC_IN_FLIGHT, poll=poll, name="wav2lip-sync")


def _blend(faced: list, preds, blend: str, watch: _Stopwatch) -> None:
    """The model's faces pasted into their frames (in the caller's thread: frames being
    written are never touched by another)."""
    if preds is None:
        return
    t = time.perf_counter()
    for g, p in zip(faced, preds):
        paste(g[1], prediction_to_uint8(p), g[2], blend)
    watch.add("blend", t)


def _cancel_check(cancel: CancelFn) -> Callable[[], None]:
    def check() -> None:
        if cancel():
            raise Cancelled("cancelled")
    return check


def synthesize(plan: Plan, track: FaceTrack, model, *, device, precision: str, batch: int | BatchLimit,
               blend: str, cancel: CancelFn, watch: _Stopwatch | None = None) -> Iterator[tuple[int, np.ndarray]]:
    """(output index, finished BGR frame) in output order: the frames before encoding. `model` is
    a runtime.Runner, or a torch module (run with torch on `device` in `precision`). Decoding and
    the model run in threads of their own while the caller consumes; close the generator (or
    exhaust it) to stop them."""
    from .runtime import as_runner

    runner = as_runner(model, device, precision)
    limit = batch if isinstance(batch, BatchLimit) else BatchLimit(batch)
    watch = watch or _Stopwatch()
    with _sync_stages(plan, track, runner, limit, watch, _cancel_check(cancel)) as stages:
        for group, faced, preds in stages:
            _blend(faced, preds, blend, watch)
            for k, frame, _, _ in group:
                yield k, frame


def _inputs(faced: list) -> tuple[np.ndarray, np.ndarray]:
    """Model inputs (mel (B,1,80,16), face (B,6,96,96)) for (k, frame, box, mel window) items."""
    faces = np.stack([crop_face(g[1], g[2]) for g in faced])
    mels = np.ascontiguousarray(np.stack([g[3] for g in faced])[:, None])
    return mels, model_inputs(faces)


def calibration_batches(plan: Plan, track: FaceTrack, batch: int, cancel: CancelFn,
                        count: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Up to `count` batches of this job's own model inputs (frames with a face), for int8."""
    out = []
    for group in _batches(plan, track, batch, cancel):
        faced = [g for g in group if g[2] is not None]
        if faced:
            out.append(_inputs(faced))
            if len(out) == count:
                break
    return out


def _never() -> bool:
    return False


def run(request: LipSyncRequest, progress: ProgressFn | None = None, cancel: CancelFn | None = None,
        note: NoteFn | None = None, runner=None) -> LipSyncResult:
    """Lip-sync `request.face` to `request.audio` into `request.out`. Raises Wav2LipError
    subclasses (Cancelled when `cancel()` returned True); on any failure no output is left.
    `note` receives lines worth telling the user (which detector ran, a smaller batch, ...).
    `runner`: a model already loaded with runtime.load_runner for this request's checkpoint,
    device, precision and runtime (a process serving several jobs loads it once)."""
    from . import runtime as runtime_mod
    from .device import pick_device, resolve_precision

    t0 = time.perf_counter()
    progress = progress or (lambda stage, done, total: None)
    cancel = cancel or _never
    notes: list[str] = []

    def tell(line: str) -> None:
        notes.append(line)
        if note is not None:
            note(line)

    watch = _Stopwatch()
    _check_inputs(request)

    t = time.perf_counter()
    progress(protocol.STAGE_AUDIO, 0, 1)
    info = probe_video(request.face, image_fps=request.fps or 25.0)
    wav = audio_mod.load_audio(request.audio)
    plan = make_plan(request, info, wav)
    progress(protocol.STAGE_AUDIO, 1, 1)
    t = watch.add("audio", t)

    progress(protocol.STAGE_LOAD, 0, 1)
    device = pick_device(request.device)
    precision = resolve_precision(request.precision, device)
    runtime = runtime_mod.resolve_runtime(request.runtime, device.type, precision)
    if runner is None:
        runner = runtime_mod.load_runner(request.checkpoint, runtime=runtime, device=device, precision=precision)
    precision = runner.precision
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
    if getattr(runner, "needs_calibration", False):
        tell("calibrating int8 on this clip's faces (once per checkpoint)")
        runner.calibrate(calibration_batches(plan, track, batch, cancel, runtime_mod.CALIBRATION_BATCHES))
        t = watch.add("load", t)

    n_out = len(plan.sources)
    check_cancel = _cancel_check(cancel)

    def poll() -> None:
        while not limit_notes.empty():
            tell(limit_notes.get())
        check_cancel()

    t_sync = time.perf_counter()
    with VideoWriter(request.out, width=info.width, height=info.height, fps=plan.fps, audio_path=request.audio,
                     audio_start=request.audio_start, duration=plan.duration, crf=request.crf,
                     source_paths=(request.face, request.audio), colour=info.colour,
                     audible=request.audible) as writer, \
            _sync_stages(plan, track, runner, limit, watch, poll) as stages:
        progress(protocol.STAGE_SYNC, 0, n_out)
        for group, faced, preds in stages:
            _blend(faced, preds, request.blend, watch)
            for k, frame, _, _ in group:
                te = time.perf_counter()
                writer.write(frame, plan.times[k])
                watch.add("encode", te)
                check_cancel()
                if (k + 1) % batch == 0 or k + 1 == n_out:
                    progress(protocol.STAGE_SYNC, k + 1, n_out)
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
        detector=settings.kind, notes=notes, runtime=runner.name,
    )
