"""What the engine (`python -m wav2lip_core`) and the Blender add-on must agree on, defined once.

Standard library only, and importing it imports nothing else of the core: the add-on loads this
file inside Blender's own Python (an installed add-on carries a copy that install.py puts beside
it at build time; a checkout imports it from here), and `wav2lip --help` reads the choice lists
from it without importing torch.

The engine speaks JSON lines on stdout with `--progress json`:

    {"event": "hello", "protocol": 2, "version": "0.1.0"}              first line, always
    {"event": "note", "message": "..."}                                   something to tell the user
    {"event": "progress", "stage": "detect", "done": 12, "total": 90}
    {"event": "done", "out": "...", "frames": 90, "seconds": 4.2, ...}  the last line on success

Errors go to stderr as one line starting `error: ` (exit code 1; 2 for bad arguments, 130 for
cancelled). The add-on passes `--protocol N`; an engine that speaks another version exits with
code 3 and a message that says to re-run install.py.

`wav2lip serve` is the same engine kept warm for many jobs (wav2lip_core/serve.py). It writes
the hello line first, then reads one JSON request per line on stdin:

    {"op": "job", "id": "shot-12", "args": ["--face", "f.mp4", "--audio", "a.wav", ...]}
    {"op": "cancel", "id": "shot-12"}     running: stopped; queued: dropped; unknown: ignored
    {"op": "quit"}                        (or EOF on stdin, or SIGTERM) cancel, drop the queue, exit 0

`args` are exactly the one-shot CLI's arguments (`--progress` is ignored: events are always
JSON). A job may carry "protocol": N (or `--protocol N` in its args); another version than the
engine's is refused with an error event. Jobs run one at a time in arrival order, and every
event about a job names it under "job":

    {"event": "progress", "job": "shot-12", "stage": "sync", "done": 16, "total": 50}
    {"event": "note", "job": "shot-12", "message": "..."}
    {"event": "done", "job": "shot-12", "out": "...", ..., "warm": true}   as the CLI's done, plus
                                            "warm": the model was already loaded by an earlier job
    {"event": "error", "job": "shot-12", "message": "one line"}   the job failed; the engine goes on
    {"event": "cancelled", "job": "shot-12"}                       no output was written

A request line the engine cannot read gets an error event with "job": null (or the id it gave).
Nothing but events is ever written on stdout.
"""

from __future__ import annotations

import json
import math
from decimal import Decimal
from typing import Dict, Optional, Tuple

# Bump when an event, key, stage or option below changes meaning or disappears.
PROTOCOL_VERSION = 3
EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_PROTOCOL = 3
EXIT_CANCELLED = 130

# --- events and their keys ------------------------------------------------------------------
KEY_EVENT = "event"
EVENT_HELLO = "hello"
EVENT_NOTE = "note"
EVENT_PROGRESS = "progress"
EVENT_DONE = "done"
EVENT_ERROR = "error"  # serve only: a job failed (the one-shot CLI says it on stderr)
EVENT_CANCELLED = "cancelled"  # serve only

KEY_PROTOCOL = "protocol"
KEY_VERSION = "version"
KEY_MESSAGE = "message"
KEY_STAGE = "stage"
KEY_DONE = "done"
KEY_TOTAL = "total"
KEY_OUT = "out"
KEY_FRAMES = "frames"
KEY_SECONDS = "seconds"
KEY_CACHE_HIT = "cache_hit"
KEY_FRAMES_WITH_FACE = "frames_with_face"
KEY_DETECTOR = "detector"
KEY_JOB = "job"  # serve: the request's id, on every event about that job
KEY_WARM = "warm"  # serve's done: the model was reused from an earlier job

# --- serve's requests (one JSON object per stdin line) ----------------------------------------
KEY_OP = "op"
KEY_ID = "id"
KEY_ARGS = "args"
OP_JOB = "job"
OP_CANCEL = "cancel"
OP_QUIT = "quit"
SERVE_COMMAND = "serve"  # `wav2lip serve`
BATCH_COMMAND = "batch"  # `wav2lip batch JOBS`

# --- stages, in the order a run goes through them -------------------------------------------
STAGE_AUDIO = "audio"  # probe the clip, read the audio, plan the output
STAGE_LOAD = "load"  # model weights
STAGE_DETECT = "detect"
STAGE_SYNC = "sync"  # decode, crop, model, blend and encode, streamed together
STAGES: Tuple[str, ...] = (STAGE_AUDIO, STAGE_LOAD, STAGE_DETECT, STAGE_SYNC)
STAGE_LABELS: Dict[str, str] = {
    STAGE_AUDIO: "Reading audio",
    STAGE_LOAD: "Loading model",
    STAGE_DETECT: "Finding faces",
    STAGE_SYNC: "Syncing lips",
}
# Rough share of a run's time per stage (CPU, measured with bench/bench_pipeline.py), so one
# progress bar can cover the whole run.
STAGE_WEIGHTS: Dict[str, float] = {STAGE_AUDIO: 0.02, STAGE_LOAD: 0.03, STAGE_DETECT: 0.25, STAGE_SYNC: 0.70}

# --- choices: (name, label, description); the first is the default --------------------------
DETECTOR_AUTO = "auto"
DETECTOR_BOX = "box"  # no detection: a fixed box given with --box
DETECTORS: Tuple[Tuple[str, str, str], ...] = (
    (DETECTOR_AUTO, "Auto", "BlazeFace when its weights are found, else OpenCV's Haar cascade"),
    ("blazeface", "BlazeFace", "Fast front-camera face detector (needs blazeface.pth + anchors.npy)"),
    ("blazeface-back", "BlazeFace (back camera)", "BlazeFace model for smaller, farther faces"),
    ("s3fd", "S3FD", "The original Wav2Lip detector: slowest, most robust (needs its weights)"),
    ("haar", "Haar (OpenCV)", "OpenCV's bundled frontal-face detector: needs no weights file"),
)
DEVICES: Tuple[Tuple[str, str, str], ...] = (
    ("auto", "Auto", "CUDA or Apple GPU when available, else CPU"),
    ("cuda", "CUDA", "NVIDIA GPU"),
    ("mps", "Apple GPU", "Apple silicon (MPS)"),
    ("cpu", "CPU", "Processor only"),
)
PRECISIONS: Tuple[Tuple[str, str, str], ...] = (
    ("auto", "Auto", "fp16 on CUDA, bf16 on CPUs with native bf16, else fp32"),
    ("fp32", "fp32", "Exact"),
    ("fp16", "fp16", "Half precision (GPU)"),
    ("bf16", "bf16", "bfloat16 (GPU, or CPUs with AVX512-BF16/AMX)"),
    ("int8", "int8", "Quantized, calibrated on the job's own frames (OpenVINO on CPU; opt-in, accuracy unverified)"),
)
RUNTIMES: Tuple[Tuple[str, str, str], ...] = (
    ("auto", "Auto", "OpenVINO on a CPU when it is installed, torch on a GPU"),
    ("torch", "PyTorch", "Any device"),
    ("openvino", "OpenVINO", "CPU only: faster than torch there; needed for int8"),
)
BLENDS: Tuple[Tuple[str, str, str], ...] = (
    ("feather", "Feather", "Soft-masked lower face"),
    ("hard", "Hard", "The original's square paste"),
    ("mouth", "Mouth", "Only the mouth, from dlib's 68 landmarks (landmarks extra); feather where they fail"),
)
SILENCE_HOLD = "hold"
SILENCE_SYNC = "sync"
SILENCES: Tuple[Tuple[str, str, str], ...] = (
    (SILENCE_HOLD, "Hold", "Keep the source mouth where the audio is silent (fading in and out)"),
    (SILENCE_SYNC, "Sync", "The original: the model drives every frame, silent or not"),
)
ALIGN_AUTO = "auto"
ALIGNS: Tuple[Tuple[str, str, str], ...] = (
    (ALIGN_AUTO, "Auto", "Level tilted heads before the model when landmarks are available (landmarks extra)"),
    ("off", "Off", "Never rotate the face crop (the original)"),
)
# --sync-offset is a nudge: beyond this many frames (10 s at 25 fps) it is a wrong value, not a sync
SYNC_OFFSET_MAX = 250.0
# --enhance-fidelity: CodeFormer's w, 0 (most restored) to 1 (closest to the input)
ENHANCE_FIDELITY_DEFAULT = 0.5
ENCODER_AUTO = "auto"
ENCODER_X264 = "libx264"
ENCODER_NVENC = "h264_nvenc"
ENCODERS: Tuple[Tuple[str, str, str], ...] = (
    (ENCODER_AUTO, "Auto", "NVIDIA's NVENC when the model runs on CUDA and NVENC works, else x264"),
    (ENCODER_X264, "x264", "CPU H.264 encoder; --preset trades speed for file size"),
    (ENCODER_NVENC, "NVENC", "NVIDIA GPU H.264 encoder (falls back to x264 with a note when it cannot start)"),
)
# H.264's quality scale for --crf (x264's CRF, NVENC's CQ): 0 lossless, 51 smallest.
CRF_RANGE: Tuple[int, int] = (0, 51)
CRF_DEFAULT = 18
# x264's own preset names, fastest first (x264's `placebo` is left out: far slower for ~1% size).
# Here the default is not the first: it was picked from a measured speed/size table (see
# wav2lip_core/encoders.py). They apply to x264 only; NVENC runs its own p4 preset.
PRESET_DEFAULT = "veryfast"
PRESETS: Tuple[Tuple[str, str, str], ...] = (
    ("ultrafast", "Ultrafast", "Fastest (1/4 to 1/2 of veryfast's CPU time); files 1.9-2.8x medium's"),
    ("superfast", "Superfast", "1/2 to 3/4 of veryfast's CPU time; files 1.1-1.7x medium's"),
    ("veryfast", "Veryfast", "Default: 1/3 to 1/2 of medium's CPU time; files no larger than medium's at the same CRF"),
    ("faster", "Faster", "1.3-2x veryfast's CPU time; files ~10% smaller than veryfast's at equal quality"),
    ("fast", "Fast", "2-2.5x veryfast's CPU time"),
    ("medium", "Medium", "x264's own default: 2.3-3.4x veryfast's CPU time"),
    ("slow", "Slow", "Smaller files, slower (not measured here)"),
    ("slower", "Slower", "Smaller still, much slower (not measured here)"),
    ("veryslow", "Veryslow", "Smallest files, slowest (not measured here)"),
)


def names(choices: Tuple[Tuple[str, str, str], ...]) -> Tuple[str, ...]:
    return tuple(c[0] for c in choices)


# --- command-line options the add-on passes (the CLI defines them with these names) ---------
OPT_FACE = "--face"
OPT_AUDIO = "--audio"
OPT_CHECKPOINT = "--checkpoint"
OPT_OUT = "--out"
OPT_DETECTOR = "--detector"
OPT_DETECTOR_WEIGHTS = "--detector-weights"
OPT_BOX = "--box"
OPT_DEVICE = "--device"
OPT_PRECISION = "--precision"
OPT_RUNTIME = "--runtime"
OPT_ENCODER = "--encoder"
OPT_PRESET = "--preset"
OPT_FPS = "--fps"
OPT_START_FRAME = "--start-frame"
OPT_FRAMES = "--frames"
# A JSON file with one clip time (seconds from the clip's first frame) per output frame: output
# frame k shows the clip frame on screen at that time, as Blender shows it; past the clip's end
# the last frame is held. The add-on's timing mapping; the CLI's --start-frame/--frames remain.
OPT_SOURCE_TIMES = "--source-times"
OPT_AUDIO_START = "--audio-start"
# Two output times (s): the sound is heard only between them, silence elsewhere (a sound strip
# trimmed inside the clip's range). The engine cuts it, so Blender needs no audio module for it.
OPT_AUDIBLE = "--audible"
OPT_DURATION = "--duration"
OPT_BLEND = "--blend"
OPT_SILENCE = "--silence"
OPT_SYNC_OFFSET = "--sync-offset"
OPT_ENHANCE = "--enhance"
OPT_ENHANCE_FIDELITY = "--enhance-fidelity"
OPT_ALIGN = "--align"
OPT_PROGRESS = "--progress"
OPT_PROTOCOL = "--protocol"
PROGRESS_JSON = "json"


# Detector weight files as face-alignment names them in torch's hub cache (the core looks there,
# install.py checks what --detector-weights points at, the panel says what Auto will find). A
# BlazeFace model needs its anchors file beside it.
S3FD_FILE = "s3fd-619a316812.pth"
BLAZEFACE_FILES: Dict[str, Tuple[str, str]] = {
    "blazeface": ("blazeface.pth", "anchors.npy"),
    "blazeface-back": ("blazefaceback.pth", "anchorsback.npy"),
}


# --- what install.py records (JSON, in Blender's config folder and in the engine venv's root) --
CONFIG_NAME = "wav2lip_lipsync.json"
CONFIG_PYTHON = "python"  # the engine's interpreter
CONFIG_CHECKPOINT = "checkpoint"
CONFIG_DETECTOR_WEIGHTS = "detector_weights"  # BlazeFace/S3FD weights (--detector-weights)


# --- encoding and decoding events -----------------------------------------------------------

def event(kind: str, **fields: object) -> str:
    """One JSON line (without the newline)."""
    return json.dumps({KEY_EVENT: kind, **fields})


def hello(version: str) -> str:
    return event(EVENT_HELLO, **{KEY_PROTOCOL: PROTOCOL_VERSION, KEY_VERSION: version})


def progress(stage: str, done: int, total: int, **fields: object) -> str:
    """A progress line; `fields`: more keys (serve adds the job's id)."""
    return event(EVENT_PROGRESS, **{KEY_STAGE: stage, KEY_DONE: int(done), KEY_TOTAL: int(total)}, **fields)


def note(message: str, **fields: object) -> str:
    return event(EVENT_NOTE, **{KEY_MESSAGE: message}, **fields)


def parse_event(line: str) -> Optional[dict]:
    """One stdout line as an event dict, or None for anything else (stray prints)."""
    line = line.strip()
    if not line.startswith("{"):
        return None
    try:
        obj = json.loads(line)
    except ValueError:
        return None
    if not isinstance(obj, dict) or not isinstance(obj.get(KEY_EVENT), str):
        return None
    return obj


def request(op: str, job_id: str | None = None, args: list[str] | None = None) -> str:
    """One serve request line (without the newline), stamped with this side's protocol version."""
    fields: dict = {KEY_OP: op}
    if job_id is not None:
        fields[KEY_ID] = job_id
    if args is not None:
        fields[KEY_ARGS] = [str(a) for a in args]
        fields[KEY_PROTOCOL] = PROTOCOL_VERSION
    return json.dumps(fields)


def caller_mismatch_message(caller_protocol: object) -> str:
    """What the engine says to a caller speaking another version."""
    return (f"this engine speaks protocol {PROTOCOL_VERSION}, the caller {caller_protocol}: "
            "the add-on and the engine come from different versions; re-run install.py from the same download")


def mismatch_message(engine_protocol: object) -> str:
    return (f"the lip-sync engine speaks protocol {engine_protocol}, this add-on {PROTOCOL_VERSION}: "
            "the engine and the add-on come from different versions; re-run install.py from the same download")


# --- JOBS files ---------------------------------------------------------------------------------
# `wav2lip batch JOBS` reads one job per line: a JSON object whose keys are the one-shot CLI's long
# options without the dashes ("audio-start" and "audio_start" both work). A value is a string or a
# number; a list for an option taking several values (box, pads, face-at, audible); true for a
# flag (no-smooth, no-cache); false or null: not given. "source-times" may be an inline list of
# seconds instead of a file. "id" names the job in the report (default: its line number).
# Relative paths are relative to the JOBS file's folder. The add-on writes and reads these files.
JOB_ID = "id"
# Options that may hold an inline JSON list in a job; the CLI wants a file, so the runner writes one.
JOB_INLINE_LISTS: Tuple[str, ...] = (OPT_SOURCE_TIMES,)
# Options naming files or folders (resolved against the JOBS file's folder).
JOB_PATHS: Tuple[str, ...] = (OPT_FACE, OPT_AUDIO, OPT_CHECKPOINT, OPT_OUT, OPT_DETECTOR_WEIGHTS, OPT_SOURCE_TIMES,
                              OPT_ENHANCE, "--cache-dir")
# Of those, the files a result is made from (resume re-runs a job when one of them changed).
JOB_INPUTS: Tuple[str, ...] = (OPT_FACE, OPT_AUDIO, OPT_CHECKPOINT, OPT_DETECTOR_WEIGHTS, OPT_SOURCE_TIMES, OPT_ENHANCE)

# The report (`--report R.jsonl`): one JSON object per job.
REPORT_ID = "id"
REPORT_LINE = "line"  # the job's line number in JOBS (1-based)
REPORT_STATUS = "status"
REPORT_SECONDS = "seconds"
REPORT_OUT = "out"  # absolute path of the output
REPORT_FRAMES = "frames"
REPORT_ERROR = "error"  # one line, for failed jobs
REPORT_FINGERPRINT = "fingerprint"  # the request (options and its inputs' size/mtime): resume's key
REPORT_OUT_SIZE = "out_size"
REPORT_OUT_MTIME_NS = "out_mtime_ns"
STATUS_OK = "ok"
STATUS_FAILED = "failed"
STATUS_SKIPPED = "skipped"  # done by an earlier run from the same request, output unchanged
STATUS_CANCELLED = "cancelled"
JOB_STATUSES: Tuple[str, ...] = (STATUS_OK, STATUS_FAILED, STATUS_SKIPPED, STATUS_CANCELLED)


def job_option(key: str) -> str:
    """A job key as the CLI's option: "audio_start" -> "--audio-start"."""
    return "--" + str(key).strip().lstrip("-").replace("_", "-")


def job_args(job: dict, list_file=None) -> list:
    """The CLI arguments for a job (its "id" left out). `list_file(option, values) -> path` writes
    an inline list (JOB_INLINE_LISTS) to a file; without it such a list is refused. ValueError
    with a one-line message for a value that cannot be an argument."""
    args: list = []
    for key, value in job.items():
        if key == JOB_ID or value is None or value is False:
            continue
        opt = job_option(key)
        if value is True:
            args.append(opt)
        elif isinstance(value, list) and opt in JOB_INLINE_LISTS:
            if list_file is None:
                raise ValueError(f'"{key}": give a file name here, not a list')
            args += [opt, str(list_file(opt, value))]
        elif isinstance(value, list):
            if not all(_scalar(v) for v in value):
                raise ValueError(f'"{key}": a list may hold only strings and numbers')
            args += [opt, *(_arg(v) for v in value)]
        elif _scalar(value):
            args += [opt, _arg(value)]
        else:
            raise ValueError(f'"{key}": give a string, a number, a list or true, not {type(value).__name__}')
    return args


def job_from_args(args: list, inline_lists: bool = False) -> dict:
    """A job for CLI arguments (job_args' inverse): numbers as numbers where they read back the
    same, several values as a list, a flag as true. `inline_lists`: read the files named by
    JOB_INLINE_LISTS options into the job, so it does not depend on a temporary file."""
    job: dict = {}
    key = None
    for token in [str(a) for a in args]:
        if token.startswith("--") and len(token) > 2:
            key = token[2:]
            job[key] = True
        elif key is None:
            raise ValueError(f"{token!r} is not an option's value: options start with --")
        else:
            value = _number(token)
            held = job[key]
            job[key] = value if held is True else (held + [value] if isinstance(held, list) else [held, value])
    if inline_lists:
        for opt in JOB_INLINE_LISTS:
            path = job.get(opt[2:])
            if isinstance(path, str):
                with open(path, encoding="utf-8") as f:
                    job[opt[2:]] = json.load(f)
    return job


def _scalar(value: object) -> bool:
    return isinstance(value, (str, int, float)) and not isinstance(value, bool)


def _arg(value: object) -> str:
    if isinstance(value, float):
        return plain_number(value)
    return value if isinstance(value, str) else json.dumps(value)


def plain_number(x: float) -> str:
    """A float as a command-line value: its shortest exact digits, never with an exponent.
    argparse takes a value like `-3.3e-05` for an option (only `-N` and `-N.N` look like
    negative numbers to it), so `--audio-start -3.3e-05` would be refused; `-0.000033` reads
    back as the same float."""
    x = float(x)
    if not math.isfinite(x):
        return json.dumps(x)
    return format(Decimal(repr(x)), "f")


def _number(token: str):
    for kind in (int, float):
        try:
            value = kind(token)
        except ValueError:
            continue
        return value if _arg(value) == token else token
    return token
