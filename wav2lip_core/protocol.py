"""What the engine (`python -m wav2lip_core`) and the Blender add-on must agree on, defined once.

Standard library only, and importing it imports nothing else of the core: the add-on loads this
file inside Blender's own Python (an installed add-on carries a copy that install.py puts beside
it at build time; a checkout imports it from here), and `wav2lip --help` reads the choice lists
from it without importing torch.

The engine speaks JSON lines on stdout with `--progress json`, one event per line (the classes
Hello, Note, Progress, Done below; `to_json` writes one, `parse_event` reads one):

    {"event": "hello", "protocol": 5, "version": "0.1.0"}              first line, always
    {"event": "progress", "stage": "detect", "done": 12, "total": 90}
    {"event": "done", "out": "...", "frames": 90, "seconds": 4.2, ...}  the last line on success

Errors go to stderr as one line starting `error: ` (exit code 1; 2 for bad arguments, 130 for
cancelled). The add-on passes `--protocol N`; an engine that speaks another version exits with
code 3 and a message that says to re-run install.py.

`wav2lip serve` (jobs/serve.py) keeps the engine warm for many jobs: hello, then one request per
stdin line (JobRequest, FetchRequest, MeterRequest, FacesRequest, CancelRequest, QuitRequest;
`parse_request`):

    {"op": "job", "id": "shot-12", "args": ["--face", "f.mp4", ...], "protocol": 5}
    {"op": "fetch", "id": "clip-1", "args": ["https://...", "--from", "5", "--out", "DIR"]}
    {"op": "faces", "id": "pick-1", "args": ["clip.mp4", "--time", "2.5"]}   done: "faces", "width", ...
    {"op": "cancel", "id": "shot-12"}     running: stopped; queued: dropped; unknown: ignored
    {"op": "quit"}                        (or EOF on stdin, or SIGTERM) cancel, drop the queue, exit 0

`args` are exactly the one-shot CLI's (`--progress` is ignored), a fetch's `wav2lip fetch`'s; a
fetch is a job like the others (its done has `out` and no `frames`). A job of another protocol version
(its "protocol" or `--protocol N`) is refused with an error event. Jobs run one at a time in
arrival order; every event about one names it under "job" (Error and Cancelled are serve's own):

    {"event": "progress", "job": "shot-12", "stage": "sync", "done": 16, "total": 50}
    {"event": "done", "job": "shot-12", "out": "...", ..., "warm": true}
    {"event": "error", "job": "shot-12", "message": "one line"}   the job failed; the engine goes on
    {"event": "cancelled", "job": "shot-12"}                       no output was written

A request the engine cannot read gets an error event with "job": null (or the id it gave). Only
events go to stdout. A line that is no message of this protocol raises ProtocolError; keys a
side does not know ride along in `extra`. JOBS files: batch_format.py; the client: serve_client.py.
"""

# (No `from __future__ import annotations`: the dataclasses below then build even when this file is
# loaded by path without a sys.modules entry, as blender_addon/engine_setup.py loads it.)
import json
import math
from dataclasses import MISSING, dataclass, field, fields
from decimal import Decimal
from typing import Any, ClassVar, Dict, List, Optional, Tuple, Type, TypeVar, Union

# The core's files the add-on loads by path (blender_addon/wire.py); install.py copies them into it.
ADDON_FILES: Tuple[str, ...] = ("protocol.py", "options.py", "batch_format.py", "serve_client.py", "files.py")
# Bump when an event, key, stage or option below changes meaning or disappears.
PROTOCOL_VERSION = 5  # 5: the faces request, --face-at auto, --face-time, --speaker, --out-audio (4: fetch, meter)
EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_PROTOCOL, EXIT_CANCELLED = 0, 1, 2, 3, 130

# --- the kind of each line and the job it is about (the other keys: the dataclasses' fields) ---
KEY_EVENT = "event"
EVENT_HELLO = "hello"
EVENT_NOTE = "note"
EVENT_PROGRESS = "progress"
EVENT_DONE = "done"
EVENT_ERROR = "error"  # serve only: a job failed (the one-shot CLI says it on stderr)
EVENT_CANCELLED = "cancelled"  # serve only
KEY_JOB = "job"  # serve: the request's id, on every event about that job
KEY_OP = "op"  # serve's requests (one JSON object per stdin line)
KEY_ID = "id"
OP_JOB = "job"
OP_CANCEL = "cancel"
OP_QUIT = "quit"
OP_FETCH = "fetch"  # serve: download a URL (the fetch command's args) as a job
OP_METER = "meter"  # serve: measure a clip's sync (the meter command's args) as a job
OP_FACES = "faces"  # serve: the faces on one frame (the faces command's args) as a job
SERVE_COMMAND = "serve"  # `wav2lip serve`
BATCH_COMMAND = "batch"  # `wav2lip batch JOBS`
FETCH_COMMAND = "fetch"  # `wav2lip fetch URL`: a clip or a sound from the web (media/fetch.py)
FACES_COMMAND = "faces"  # `wav2lip faces VIDEO --time SEC`: the faces on one frame (faces/lookup.py)
METER_COMMAND = "meter"  # `wav2lip meter VIDEO`: how far the mouth lags its sound (quality/meter.py)

# --- stages, in the order a run goes through them -------------------------------------------
STAGE_AUDIO = "audio"  # probe the clip, read the audio, plan the output
STAGE_LOAD = "load"  # model weights
STAGE_DETECT = "detect"
STAGE_SYNC = "sync"  # decode, crop, model, blend and encode, streamed together
STAGES: Tuple[str, ...] = (STAGE_AUDIO, STAGE_LOAD, STAGE_DETECT, STAGE_SYNC)
# `wav2lip fetch`, serve's fetch op, and a job whose --face/--audio is a URL (before its other
# stages): bytes downloaded (done/total; total 0 while unknown)
STAGE_FETCH = "fetch"
STAGE_LABELS: Dict[str, str] = {
    STAGE_AUDIO: "Reading audio",
    STAGE_LOAD: "Loading model",
    STAGE_DETECT: "Finding faces",
    STAGE_SYNC: "Syncing lips",
    STAGE_FETCH: "Downloading",
}
# Rough share of a run's time per stage (CPU, measured with bench/bench_pipeline.py), so one
# progress bar can cover the whole run.
STAGE_WEIGHTS: Dict[str, float] = {STAGE_AUDIO: 0.02, STAGE_LOAD: 0.03, STAGE_DETECT: 0.25, STAGE_SYNC: 0.70}

# The option names and choice lists live in options.py (one source, part of this protocol);
# every caller reads them as protocol.X.
from .options import *  # noqa: E402,F401,F403


# --- events and requests as dataclasses --------------------------------------------------------

class ProtocolError(ValueError):
    """A line that is not an event or request of this protocol. One line; `job`: the id it named."""

    def __init__(self, message: str, job: Optional[str] = None) -> None:
        super().__init__(" ".join(str(message).split()))
        self.job = job


def _key(types: Optional[tuple], what: str = "", **kw: Any) -> Any:
    # A field's JSON types (None: any), their name for the error; `always`: written even when None.
    return field(metadata={"types": types, "what": what, "always": kw.pop("always", False)}, **kw)


_STR, _INT, _NUM, _BOOL = ((str,), "a string"), ((int,), "a whole number"), ((int, float), "a number"), ((bool,), "true or false")
M = TypeVar("M", bound="Message")


@dataclass(kw_only=True)
class Message:
    """One JSON line: its kind under KIND_KEY, then its fields (None: left out), then `extra`."""

    KIND_KEY: ClassVar[str] = KEY_EVENT
    WHAT: ClassVar[str] = "event"
    KIND: ClassVar[str] = ""
    extra: Dict[str, Any] = field(default_factory=dict)  # keys this side does not know, as they came

    def to_json(self) -> str:  # one line, without the newline
        obj: Dict[str, Any] = {self.KIND_KEY: self.KIND}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name != "extra" and (value is not None or f.metadata["always"]):
                obj[f.name] = value
        obj.update((k, v) for k, v in self.extra.items() if k not in obj)
        return json.dumps(obj)

    @classmethod
    def from_json(cls: Type[M], line: str) -> M:  # ProtocolError for another kind or a malformed one
        return _parse(line, cls.KIND_KEY, {cls.KIND: cls})  # type: ignore[return-value]

    @classmethod
    def from_dict(cls: Type[M], obj: Dict[str, Any], job: Optional[str] = None) -> M:
        values: Dict[str, Any] = {}
        for f in [f for f in fields(cls) if f.name != "extra"]:
            value, types = obj.get(f.name), f.metadata["types"]
            required = f.default is MISSING and f.default_factory is MISSING
            if value is None and not required:  # absent or null: None, not the default (a hello
                values[f.name] = None           # without "protocol" speaks no version of ours)
                continue
            if value is None or (types is not None and not _is(value, types)):
                raise ProtocolError(f'a "{cls.KIND}" {cls.WHAT} needs "{f.name}" ({f.metadata["what"]}), '
                                    f'not {json.dumps(value)[:40]}', job)
            values[f.name] = value
        names = {f.name for f in fields(cls)} | {cls.KIND_KEY}
        return cls(**values, extra={k: v for k, v in obj.items() if k not in names})


def _is(value: object, types: tuple) -> bool:
    if isinstance(value, bool) and bool not in types:  # JSON's true is not a number
        return False
    if list in types:
        return isinstance(value, list) and all(isinstance(v, str) for v in value)
    return isinstance(value, types)


@dataclass(kw_only=True)
class Hello(Message):
    KIND: ClassVar[str] = EVENT_HELLO  # the engine's first line
    protocol: Any = _key(None, default=PROTOCOL_VERSION)  # any value: the caller says what it wanted
    version: Optional[str] = _key(*_STR, default=None)


@dataclass(kw_only=True)
class Note(Message):
    KIND: ClassVar[str] = EVENT_NOTE
    message: str = _key(*_STR)
    job: Optional[str] = _key(*_STR, default=None)  # serve: the job it is about


@dataclass(kw_only=True)
class Progress(Message):
    KIND: ClassVar[str] = EVENT_PROGRESS
    stage: str = _key(*_STR)
    done: int = _key(*_INT)
    total: int = _key(*_INT)
    job: Optional[str] = _key(*_STR, default=None)


@dataclass(kw_only=True)
class Done(Message):
    """The last line on success; serve adds `warm`: the model was loaded by an earlier job."""
    KIND: ClassVar[str] = EVENT_DONE
    job: Optional[str] = _key(*_STR, default=None)
    out: str = _key(*_STR)
    frames: Optional[int] = _key(*_INT, default=None)  # a sync's frames (a fetch has none)
    seconds: float = _key(*_NUM)
    cache_hit: Optional[bool] = _key(*_BOOL, default=None)
    frames_with_face: Optional[int] = _key(*_INT, default=None)
    detector: Optional[str] = _key(*_STR, default=None)
    warm: Optional[bool] = _key(*_BOOL, default=None)
    # The sync meter's reading of a sync's output (absent with --no-meter): frames the mouth comes
    # later (+) than its sound (null when no sync was found), its confidence 0-1, its verdict
    # ("in sync", "mouth 1.2 frames late", "no sync found", ...), and the --sync-offset used.
    sync_offset_measured: Optional[float] = _key(*_NUM, default=None)
    sync_confidence: Optional[float] = _key(*_NUM, default=None)
    sync_verdict: Optional[str] = _key(*_STR, default=None)
    sync_offset: Optional[float] = _key(*_NUM, default=None)
    # A faces request's answer: the boxes [x1, y1, x2, y2] in the clip's upright pixels (largest
    # first), the clip's size and the frame's time. A sync with --face-at auto or speakers: the
    # lines saying whom it followed are notes, not keys.
    faces: Optional[List[List[int]]] = _key(None, "a list of [x1, y1, x2, y2] boxes", default=None)
    width: Optional[int] = _key(*_INT, default=None)
    height: Optional[int] = _key(*_INT, default=None)
    time: Optional[float] = _key(*_NUM, default=None)


@dataclass(kw_only=True)
class Error(Message):
    KIND: ClassVar[str] = EVENT_ERROR  # serve: a job failed (or a request could not be read: `job` None)
    job: Optional[str] = _key(*_STR, default=None, always=True)
    message: str = _key(*_STR)


@dataclass(kw_only=True)
class Cancelled(Message):
    KIND: ClassVar[str] = EVENT_CANCELLED  # serve: the job stopped (or left the queue), no output written
    job: Optional[str] = _key(*_STR, default=None)


@dataclass(kw_only=True)
class Request(Message):
    KIND_KEY: ClassVar[str] = KEY_OP
    WHAT: ClassVar[str] = "request"


@dataclass(kw_only=True)
class JobRequest(Request):
    """serve: run the one-shot CLI's `args` as job `id`, stamped with the caller's protocol."""
    KIND: ClassVar[str] = OP_JOB
    id: str = _key(*_STR)
    args: List[str] = _key((list,), "a list of strings")
    protocol: Any = _key(None, default=PROTOCOL_VERSION)


@dataclass(kw_only=True)
class FetchRequest(Request):
    """serve: run `wav2lip fetch`'s `args` (URL, --from, --to, --max-height, --out) as job `id`:
    progress of stage "fetch", then done (its `out` the file; no frames), error or cancelled, as
    a job's; a cancelled fetch leaves nothing."""
    KIND: ClassVar[str] = OP_FETCH
    id: str = _key(*_STR)
    args: List[str] = _key((list,), "a list of strings")
    protocol: Any = _key(None, default=PROTOCOL_VERSION)


@dataclass(kw_only=True)
class MeterRequest(Request):
    """serve: run `wav2lip meter`'s `args` (VIDEO, --audio, --audio-start, --from, --to, ...) as
    job `id`: progress of stage "meter", then done (its `out` the clip, the reading in its sync_*
    fields), error or cancelled, as a job's."""
    KIND: ClassVar[str] = OP_METER
    id: str = _key(*_STR)
    args: List[str] = _key((list,), "a list of strings")
    protocol: Any = _key(None, default=PROTOCOL_VERSION)


@dataclass(kw_only=True)
class FacesRequest(Request):
    """serve: run `wav2lip faces`'s `args` (VIDEO, --time, --detector, ...) as job `id`: done
    (its `out` the clip; `faces`, `width`, `height`, `time`), error or cancelled, as a job's."""

    KIND: ClassVar[str] = OP_FACES
    id: str = _key(*_STR)
    args: List[str] = _key((list,), "a list of strings")
    protocol: Any = _key(None, default=PROTOCOL_VERSION)


@dataclass(kw_only=True)
class CancelRequest(Request):
    KIND: ClassVar[str] = OP_CANCEL
    id: str = _key(*_STR)


@dataclass(kw_only=True)
class QuitRequest(Request):
    KIND: ClassVar[str] = OP_QUIT


Event = Union[Hello, Note, Progress, Done, Error, Cancelled]
EVENTS: Dict[str, Type[Message]] = {c.KIND: c for c in (Hello, Note, Progress, Done, Error, Cancelled)}
# What serve queues and runs one at a time, each with progress, done, error or cancelled events.
JOB_REQUESTS: Dict[str, Type[Message]] = {c.KIND: c for c in (JobRequest, FetchRequest, MeterRequest, FacesRequest)}
REQUESTS: Dict[str, Type[Message]] = {**JOB_REQUESTS, OP_CANCEL: CancelRequest, OP_QUIT: QuitRequest}


def parse_event(line: str) -> Event:
    """One stdout line of the engine as its event; ProtocolError for anything else."""
    return _parse(line, KEY_EVENT, EVENTS)  # type: ignore[return-value]


def parse_request(line: str) -> Union[JobRequest, FetchRequest, MeterRequest, FacesRequest, CancelRequest, QuitRequest]:
    """One stdin line of `serve` as its request; ProtocolError (naming the job, if any) otherwise."""
    return _parse(line, KEY_OP, REQUESTS)  # type: ignore[return-value]


def _parse(line: str, kind_key: str, kinds: Dict[str, Type[Message]]) -> Message:
    what = next(iter(kinds.values())).WHAT
    text = line.strip()
    try:
        obj = json.loads(text)
    except ValueError:
        raise ProtocolError(f"not a JSON {what}: {text[:80]}") from None
    if not isinstance(obj, dict):
        raise ProtocolError(f"each {what} must be a JSON object, not: {text[:80]}")
    job = obj.get(KEY_JOB if kind_key == KEY_EVENT else KEY_ID)
    job = job if isinstance(job, str) else None
    kind = obj.get(kind_key)
    cls = kinds.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise ProtocolError(f'unknown {what} "{kind_key}": {json.dumps(kind)[:40]} (known: {", ".join(kinds)})', job)
    return cls.from_dict(obj, job)


def plain_number(x: float) -> str:
    """A float as a command-line value: its shortest exact digits, never with an exponent (argparse
    takes `-3.3e-05` for an option, not a value; `-0.000033` reads back as the same float)."""
    x = float(x)
    if not math.isfinite(x):
        return json.dumps(x)
    return format(Decimal(repr(x)), "f")
