"""Run the lip-sync engine (`python -m wav2lip_core ... --progress json`) in its own process.

Pure Python, no bpy: Blender's operator polls a `JobRunner` from a timer (interactive) or waits
on it (background mode), and the tests drive it with a stand-in engine. Events, stages and the
protocol version come from the engine's own protocol module (`wire.protocol`).

The runner owns a work folder: a hidden folder inside the destination's folder (same file
system), where the engine writes; only a finished result is renamed to its destination, never
over an existing file. On failure or cancel the folder is removed, so nothing partial is left.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections import deque
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Deque, Dict, List, Optional, Sequence, Union

from .wire import protocol

RUNNING = "running"
DONE = "done"
FAILED = "failed"
CANCELLED = "cancelled"

WORK_PREFIX = ".wav2lip-job-"  # hidden work folders inside the output folder
_MAX_LINE = 4000  # characters of one stderr line kept (a runaway line must not fill memory)


@dataclass
class Progress:
    """What the UI shows. Updated by the reader thread; read by the UI (copy via `poll`)."""

    status: str = RUNNING
    stage: str = "starting"
    done: int = 0
    total: int = 0
    fraction: float = 0.0
    message: str = ""
    out: Optional[str] = None
    frames: Optional[int] = None
    seconds: Optional[float] = None
    detector: Optional[str] = None
    engine_version: Optional[str] = None
    notes: List[str] = field(default_factory=list)  # the engine's `note` events, in order
    warm: Optional[bool] = None  # serve's done: the model was already loaded

    @property
    def text(self) -> str:
        if self.status == DONE:
            return "Done"
        if self.status in (FAILED, CANCELLED):
            return self.message or self.status.capitalize()
        label = protocol.STAGE_LABELS.get(self.stage, self.stage.replace("_", " ").capitalize())
        if self.total > 0:
            return f"{label} {self.done}/{self.total}"
        return label + "..."


def _overall_fraction(stage: str, done: int, total: int) -> float:
    """Progress in 0..1 over all stages: the stages before the current one count fully (even if
    they never reported), the current one partly."""
    part = (min(max(done, 0), total) / total) if total > 0 else 0.0
    weights = protocol.STAGE_WEIGHTS
    if stage not in weights:
        return part
    order = list(protocol.STAGES)
    finished = sum(weights.get(s, 0.0) for s in order[: order.index(stage)])
    return min(1.0, finished + weights[stage] * part)


def error_from_stderr(lines: Sequence[str], returncode: Optional[int], error_line: str = "") -> str:
    """The engine's one-line `error: ...` message, else the last stderr line, else the exit code."""
    if error_line:
        return error_line
    for line in reversed(lines):
        text = line.strip()
        if text.startswith("error:"):
            return text[len("error:"):].strip()
    for line in reversed(lines):
        text = line.strip()
        if text:
            return f"the lip-sync engine failed (exit code {returncode}): {text}"
    return f"the lip-sync engine failed (exit code {returncode}) without a message"


_ENGINE_SPEAKS = re.compile(r"engine speaks protocol (\d+)")


def protocol_refusal(lines: Sequence[str], returncode: Optional[int]) -> Optional[str]:
    """The add-on's message when the engine refused our protocol (exit 3), or is older than the
    `--protocol` option (argparse's "unrecognized arguments"); None otherwise."""
    text = "\n".join(lines)
    if returncode == protocol.EXIT_PROTOCOL:
        m = _ENGINE_SPEAKS.search(text)
        return protocol.mismatch_message(m.group(1) if m else "another")
    if returncode == protocol.EXIT_USAGE and "unrecognized arguments" in text and protocol.OPT_PROTOCOL in text:
        return protocol.mismatch_message(f"older than {protocol.PROTOCOL_VERSION}")
    return None


class JobRunner:
    """One engine process.

    argv: the full command line, e.g. [python, "-m", "wav2lip_core", ..., "--out", str(runner.work_out)].
    Build it with `work_out` (inside the runner's work folder) as the engine's --out; on success
    the file is renamed to `dest` (when given). The work folder is a hidden folder beside `dest`
    (a temp folder without one), so the rename never copies across file systems.
    """

    def __init__(
        self,
        argv: Sequence[str] = (),
        *,
        dest: Union[str, "os.PathLike[str]", None] = None,
        env: Optional[Dict[str, str]] = None,
        cwd: Union[str, "os.PathLike[str]", None] = None,
        workdir: Union[str, "os.PathLike[str]", None] = None,
        suffix: str = ".mp4",
    ) -> None:
        self.dest = Path(dest) if dest else None
        if workdir:
            self.workdir = Path(workdir)
            self.workdir.mkdir(parents=True, exist_ok=True)
        else:
            self.workdir = make_workdir(self.dest)
        self.work_out = self.workdir / ("result" + suffix)
        self.argv: List[str] = [str(a) for a in argv]
        self.env = env
        self.cwd = str(cwd) if cwd else None
        self._proc: Optional[subprocess.Popen] = None
        self._lock = threading.Lock()
        self._progress = Progress()
        self._stderr: Deque[str] = deque(maxlen=200)
        self._error_line = ""  # the engine's last `error:` line, kept whatever follows it
        self._refusal: Optional[str] = None  # protocol mismatch seen in the hello event
        self._threads: List[threading.Thread] = []
        self._cancel_requested = False
        self._finished = threading.Event()
        self.started_at: Optional[float] = None
        self.ended_at: Optional[float] = None

    # -- life cycle -----------------------------------------------------------------------------

    def start(self) -> "JobRunner":
        if not self.argv:
            raise ValueError("JobRunner.start: empty command line")
        self.started_at = time.monotonic()
        try:
            self._proc = subprocess.Popen(
                self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                cwd=self.cwd, **engine_popen_kwargs(self.env))
        except OSError as exc:
            self._finish(FAILED, f"cannot start the lip-sync engine '{self.argv[0]}': {exc.strerror or exc}")
            return self
        out_t = threading.Thread(target=self._read_stdout, name="wav2lip-stdout", daemon=True)
        err_t = threading.Thread(target=self._read_stderr, name="wav2lip-stderr", daemon=True)
        wait_t = threading.Thread(target=self._wait_exit, args=(out_t, err_t), name="wav2lip-wait", daemon=True)
        self._threads = [out_t, err_t, wait_t]
        for t in self._threads:
            t.start()
        return self

    def _read_stdout(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        P = protocol
        for line in self._proc.stdout:
            obj = P.parse_event(line)
            if obj is None:
                continue
            refuse = False
            with self._lock:
                if obj[P.KEY_EVENT] == P.EVENT_HELLO:
                    self._progress.engine_version = str(obj.get(P.KEY_VERSION) or "") or None
                    if obj.get(P.KEY_PROTOCOL) != P.PROTOCOL_VERSION:
                        self._refusal = P.mismatch_message(obj.get(P.KEY_PROTOCOL))
                        refuse = True
                else:
                    apply_event(self._progress, obj)
            if refuse:  # an engine of another version: stop it before it writes anything
                _signal_group(self._proc, signal.SIGTERM)

    def _read_stderr(self) -> None:
        assert self._proc is not None and self._proc.stderr is not None
        for line in self._proc.stderr:
            text = line.rstrip("\n")
            if len(text) > _MAX_LINE:
                text = text[:_MAX_LINE] + " ..."
            with self._lock:
                self._stderr.append(text)
                if text.startswith("error:"):
                    self._error_line = text[len("error:"):].strip()

    def _wait_exit(self, out_t: threading.Thread, err_t: threading.Thread) -> None:
        assert self._proc is not None
        rc = self._proc.wait()
        out_t.join()
        err_t.join()
        with self._lock:
            cancelled = self._cancel_requested
            stderr = list(self._stderr)
            error_line = self._error_line
            refusal = self._refusal
            reported_out = self._progress.out
        if refusal:
            self._finish(FAILED, refusal)
            return
        if cancelled:
            self._finish(CANCELLED, "cancelled")
            return
        if rc != 0:
            self._finish(FAILED, protocol_refusal(stderr, rc) or error_from_stderr(stderr, rc, error_line))
            return
        status, message, produced = deliver(Path(reported_out) if reported_out else self.work_out, self.dest)
        if status == DONE:
            with self._lock:
                self._progress.out = str(produced)
        self._finish(status, message)

    def _finish(self, status: str, message: str) -> None:
        with self._lock:
            if self._progress.status != RUNNING:
                return
            self._progress.status = status
            self._progress.message = message
            if status == DONE:
                self._progress.fraction = 1.0
                self._progress.stage = "done"
        self.ended_at = time.monotonic()
        self.cleanup()
        self._finished.set()

    # -- control --------------------------------------------------------------------------------

    def poll(self) -> Progress:
        """A copy of the current progress (safe to read from the UI thread)."""
        with self._lock:
            p = self._progress
            return dataclasses.replace(p, notes=list(p.notes))

    @property
    def finished(self) -> bool:
        return self._finished.is_set()

    def wait(self, timeout: Optional[float] = None) -> Progress:
        self._finished.wait(timeout)
        return self.poll()

    def cancel(self, grace: float = 3.0) -> None:
        """Stop the engine (terminate, then kill after `grace` seconds); removes the work folder."""
        with self._lock:
            if self._progress.status != RUNNING:
                return
            self._cancel_requested = True
        proc = self._proc
        if proc is None:
            self._finish(CANCELLED, "cancelled")
            return
        _signal_group(proc, signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            _signal_group(proc, getattr(signal, "SIGKILL", signal.SIGTERM))
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:  # pragma: no cover - unkillable process
                pass
        self._finished.wait(grace)
        if not self._finished.is_set():  # pragma: no cover - pipes held open by a grandchild
            self._finish(CANCELLED, "cancelled")

    def stderr_tail(self, n: int = 20) -> List[str]:
        with self._lock:
            return list(self._stderr)[-n:]

    def cleanup(self) -> None:
        shutil.rmtree(self.workdir, ignore_errors=True)

    @property
    def pid(self) -> Optional[int]:
        return self._proc.pid if self._proc else None


def make_workdir(dest: Optional[Path]) -> Path:
    """A new hidden work folder beside `dest` (same file system: the final rename never copies),
    or a temp folder without one. Its name carries this process's id, so work folders that a
    Blender which was killed could not remove are removed here, next time."""
    if dest is not None:
        dest.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_workdirs(dest.parent)
        return Path(tempfile.mkdtemp(prefix=f"{WORK_PREFIX}{os.getpid()}-", dir=str(dest.parent)))
    return Path(tempfile.mkdtemp(prefix="wav2lip_job_"))


def remove_stale_workdirs(folder: Path) -> None:
    """Remove work folders in `folder` whose Blender process is gone (POSIX: Windows' os.kill
    has no harmless probe)."""
    if os.name != "posix":  # pragma: no cover
        return
    try:
        names = [n for n in os.listdir(folder) if n.startswith(WORK_PREFIX)]
    except OSError:
        return
    for name in names:
        pid = name[len(WORK_PREFIX):].split("-", 1)[0]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(folder / name, ignore_errors=True)
        except OSError:
            pass  # alive (someone else's): leave it


def apply_event(p: Progress, obj: dict) -> None:
    """Fold one engine event (note, progress, done) into `p` (the caller holds its lock)."""
    P = protocol
    kind = obj[P.KEY_EVENT]
    if kind == P.EVENT_NOTE:
        message = str(obj.get(P.KEY_MESSAGE) or "").strip()
        if message:
            p.notes.append(message)
    elif kind == P.EVENT_DONE:
        p.out = str(obj.get(P.KEY_OUT) or "") or None
        p.frames = _as_int(obj.get(P.KEY_FRAMES))
        p.seconds = _as_float(obj.get(P.KEY_SECONDS))
        p.detector = str(obj.get(P.KEY_DETECTOR) or "") or None
        warm = obj.get(P.KEY_WARM)
        p.warm = warm if isinstance(warm, bool) else None
    elif kind == P.EVENT_PROGRESS and isinstance(obj.get(P.KEY_STAGE), str):
        stage = obj[P.KEY_STAGE]
        p.stage = stage
        p.done = _as_int(obj.get(P.KEY_DONE)) or 0
        p.total = _as_int(obj.get(P.KEY_TOTAL)) or 0
        p.fraction = max(p.fraction, _overall_fraction(stage, p.done, p.total))


def deliver(produced: Path, dest: Optional[Path]) -> "tuple[str, str, Path]":
    """(status, message, final path) for an engine run that reported success: the file must be
    there, and is renamed to `dest` (when given) without replacing anything."""
    if not produced.is_file():
        return FAILED, f"the lip-sync engine finished but wrote no file ({produced})", produced
    if dest is None:
        return DONE, "", produced
    try:
        move_into_place(produced, dest)
    except FileExistsError:
        return FAILED, (f"cannot save the result as {dest}: a file or folder of that name "
                        "appeared meanwhile; nothing was overwritten, run Sync Lips again"), produced
    except OSError as exc:
        return FAILED, f"cannot save the result as {dest}: {exc.strerror or exc}", produced
    return DONE, "", dest


def engine_popen_kwargs(env: Optional[Dict[str, str]]) -> dict:
    """Popen settings for an engine process: UTF-8 pipes whatever the system's code page, no
    Blender Python home, its own process group (a signal reaches its children too)."""
    env = dict(os.environ if env is None else env)
    env.setdefault("PYTHONUNBUFFERED", "1")
    env["PYTHONUTF8"] = "1"
    env["PYTHONIOENCODING"] = "utf-8"
    env.pop("PYTHONHOME", None)
    kwargs: dict = dict(env=env, text=True, encoding="utf-8", errors="replace", bufsize=1)
    if os.name == "posix":
        kwargs["start_new_session"] = True
    else:  # pragma: no cover - Windows
        kwargs["creationflags"] = getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0) | getattr(
            subprocess, "CREATE_NO_WINDOW", 0)
    return kwargs


def move_into_place(src: Path, dest: Path) -> None:
    """Rename `src` to `dest` in one step, never replacing an existing `dest` (FileExistsError).
    A hard link claims the name atomically where the file system has them; elsewhere (FAT,
    some network shares) a rename after a check, which Windows' rename refuses to overwrite anyway."""
    try:
        os.link(src, dest)
    except FileExistsError:
        raise
    except OSError:
        if os.path.lexists(dest):
            raise FileExistsError(str(dest)) from None
        os.replace(src, dest)
        return
    try:
        os.unlink(src)
    except OSError:
        pass  # the work folder goes anyway


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    if proc.poll() is not None:
        return
    try:
        if os.name == "posix":
            os.killpg(proc.pid, sig)
        elif sig == signal.SIGTERM:  # pragma: no cover - Windows
            proc.terminate()
        else:  # pragma: no cover
            proc.kill()
    except (ProcessLookupError, PermissionError, OSError):
        try:
            proc.kill()
        except OSError:
            pass


def _as_int(v: object) -> Optional[int]:
    try:
        return int(v)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def _as_float(v: object) -> Optional[float]:
    try:
        return float(v)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
