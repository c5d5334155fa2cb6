"""The warm engine (`python -m wav2lip_core serve`) as the add-on uses it: the process and the
session's one engine. Pure Python, no bpy.

One engine process per Blender session (`session_engine`): started by the first job, reused by
the next ones (the model stays loaded), started afresh when it died, when the interpreter or
its environment changed, or while it still holds a cancelled job (it may be loading a model,
deaf to the cancel: a new job must not wait behind it, nor be lost when it is stopped), and
stopped by `shutdown` (the add-on calls it on unregister and when a file loads; atexit here
covers Blender quitting). Its stdin is a pipe from Blender, so even a Blender that is killed
leaves no engine behind: the engine exits at the end of its input.

Nothing here blocks the caller (Blender's UI thread) on the process: stopping escalates (quit,
SIGTERM, SIGKILL) in a thread, and a bug in a reader thread fails the jobs instead of leaving
their progress frozen.

The jobs it runs and the queue that feeds it are in jobqueue.py.
"""

from __future__ import annotations

import atexit
import os
import signal
import subprocess
import threading
import time
from collections import deque
from typing import TYPE_CHECKING, Deque, Dict, Optional, Sequence, Set, Tuple, Union

from .runner import CANCELLED, FAILED, RUNNING, _MAX_LINE, _signal_group, engine_popen_kwargs, error_from_stderr, protocol_refusal
from .wire import protocol

if TYPE_CHECKING:
    from .jobqueue import EngineJob

P = protocol


def engine_key(python: str, env: Optional[Dict[str, str]]) -> Tuple:
    """What makes an engine reusable: the same interpreter in the same environment."""
    return (python, tuple(sorted((env or {}).items())))


class Engine:
    """One `wav2lip serve` process and the jobs it was given."""

    def __init__(self, python: str, env: Optional[Dict[str, str]] = None,
                 cwd: Union[str, "os.PathLike[str]", None] = None) -> None:
        self.python = python
        self.argv = [python, "-m", "wav2lip_core", P.SERVE_COMMAND]
        self.key = engine_key(python, env)
        self._env = env
        self._cwd = str(cwd) if cwd else None
        self._proc: Optional[subprocess.Popen] = None
        self._lock = threading.Lock()  # the state below; never held while writing to the process
        self._write_lock = threading.Lock()  # stdin (a full pipe must not hold up the readers)
        self._jobs: Dict[str, "EngineJob"] = {}
        self._stderr: Deque[str] = deque(maxlen=200)
        self._error_line = ""
        self._hello = False
        self._refusal: Optional[str] = None
        self._dead: Optional[str] = None  # why it cannot take jobs any more
        self._stopping = False
        self._stopper: Optional[threading.Thread] = None
        self._cancelling: Set[str] = set()  # jobs asked to stop that the engine has not let go of
        self._exited = threading.Event()
        self.started_at: Optional[float] = None

    def start(self) -> "Engine":
        self.started_at = time.monotonic()
        try:
            self._proc = subprocess.Popen(self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                          stderr=subprocess.PIPE, cwd=self._cwd, **engine_popen_kwargs(self._env))
        except OSError as exc:
            self._dead = f"cannot start the lip-sync engine '{self.python}': {exc.strerror or exc}"
            self._exited.set()
            return self
        out_t = threading.Thread(target=self._read_stdout, name="wav2lip-engine-stdout", daemon=True)
        err_t = threading.Thread(target=self._read_stderr, name="wav2lip-engine-stderr", daemon=True)
        for t in (out_t, err_t):
            t.start()
        threading.Thread(target=self._wait_exit, args=(out_t, err_t), name="wav2lip-engine-wait", daemon=True).start()
        return self

    @property
    def alive(self) -> bool:
        return self._dead is None and not self._stopping and self._proc is not None and self._proc.poll() is None

    @property
    def free(self) -> bool:
        """Alive, and holding no cancelled job: a new job may go to it."""
        with self._lock:
            cancelling = bool(self._cancelling)
        return self.alive and not cancelling

    @property
    def pid(self) -> Optional[int]:
        return self._proc.pid if self._proc is not None else None

    # -- jobs ------------------------------------------------------------------------------------
    def submit(self, job: "EngineJob") -> None:
        # Under the job's lock: a cancel either comes first (the job is never sent) or finds the
        # engine set and asks it to stop the job, after the job's request.
        with job._lock:
            if job._progress.status != RUNNING:  # cancelled before it was handed over
                return
            job._engine = self
            job.submitted_at = time.monotonic()
            with self._lock:
                dead = self._dead or self._refusal
                if dead is None and self._stopping:
                    dead = "the lip-sync engine was stopped; run Sync Lips again"
                if dead is None:
                    self._jobs[job.id] = job
            if dead is None:
                self._send(P.request(P.OP_JOB, job.id, job.args))
        if dead is not None:
            job._finish(FAILED, dead)

    def request_cancel(self, job: "EngineJob") -> None:
        """Ask the engine to stop `job`; until it lets go of it, the engine takes no new job."""
        with self._lock:
            if job.id in self._jobs:
                self._cancelling.add(job.id)
        self._send(P.request(P.OP_CANCEL, job.id))

    def stop(self, grace: float = 2.0, wait: bool = False) -> None:
        """Quit (the running job is cancelled), then SIGTERM, then SIGKILL, `grace` seconds apart,
        in a thread: the caller (the UI) does not wait, unless `wait`. It takes no job from now."""
        with self._lock:
            self._stopping = True
            proc, stopper = self._proc, self._stopper
            if proc is not None and stopper is None:
                stopper = self._stopper = threading.Thread(target=self._escalate, args=(proc, grace),
                                                           name="wav2lip-engine-stop", daemon=True)
                stopper.start()
                _stoppers[:] = [t for t in _stoppers if t.is_alive()] + [stopper]
        if wait and stopper is not None:
            stopper.join()
            self._exited.wait(grace)

    def _escalate(self, proc: subprocess.Popen, grace: float) -> None:
        self._send(P.request(P.OP_QUIT))
        try:
            with self._write_lock:
                if proc.stdin is not None:
                    proc.stdin.close()
        except OSError:
            pass
        for sig in (signal.SIGTERM, getattr(signal, "SIGKILL", signal.SIGTERM)):
            try:
                proc.wait(timeout=grace)
                return
            except subprocess.TimeoutExpired:
                _signal_group(proc, sig)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:  # pragma: no cover - unkillable process
            pass

    def _send(self, line: str) -> None:
        proc = self._proc
        if proc is None or proc.stdin is None:
            return
        try:
            with self._write_lock:
                proc.stdin.write(line + "\n")
                proc.stdin.flush()
        except (OSError, ValueError):  # it died; _wait_exit tells the jobs
            pass

    # -- reader threads --------------------------------------------------------------------------
    def _read_stdout(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        stream = self._proc.stdout
        try:
            for line in stream:
                self._on_line(line)
        except Exception as exc:  # noqa: BLE001 - a bug here must not leave the bar frozen forever
            self._reader_failed(exc)
            _drain(stream)

    def _on_line(self, line: str) -> None:
        obj = P.parse_event(line)
        if obj is None:
            return
        if obj[P.KEY_EVENT] == P.EVENT_HELLO:
            self._hello = True
            if obj.get(P.KEY_PROTOCOL) != P.PROTOCOL_VERSION:  # another version: stop it
                self._refusal = P.mismatch_message(obj.get(P.KEY_PROTOCOL))
                assert self._proc is not None
                _signal_group(self._proc, signal.SIGTERM)
            return
        job_id = obj.get(P.KEY_JOB)
        final = obj[P.KEY_EVENT] in (P.EVENT_DONE, P.EVENT_ERROR, P.EVENT_CANCELLED)
        with self._lock:
            job = self._jobs.get(job_id) if isinstance(job_id, str) else None
            if job is not None and final:
                del self._jobs[job_id]
                self._cancelling.discard(job_id)
        if job is not None:
            try:
                job._event(obj)
            except Exception:
                if final:  # back among the running jobs, so that _reader_failed fails it
                    with self._lock:
                        self._jobs[job_id] = job
                raise
            finally:
                if final:
                    job._release()

    def _read_stderr(self) -> None:
        assert self._proc is not None and self._proc.stderr is not None
        stream = self._proc.stderr
        try:
            for line in stream:
                text = line.rstrip("\n")
                if len(text) > _MAX_LINE:
                    text = text[:_MAX_LINE] + " ..."
                with self._lock:
                    self._stderr.append(text)
                    if text.startswith("error:"):
                        self._error_line = text[len("error:"):].strip()
        except Exception as exc:  # noqa: BLE001 - as in _read_stdout
            self._reader_failed(exc)
            _drain(stream)

    def _reader_failed(self, exc: BaseException) -> None:
        """A bug in the add-on's reading: fail the jobs in one line, and retire the engine (what
        it says can no longer be followed); the next job starts a fresh one."""
        what = " ".join(str(exc).split())[:200]
        why = (f"the add-on lost track of the lip-sync engine ({type(exc).__name__}"
               f"{': ' + what if what else ''}); the next sync starts a fresh one")
        with self._lock:
            if self._dead is None:
                self._dead = why
            jobs, self._jobs = list(self._jobs.values()), {}
            self._cancelling.clear()
        for job in jobs:
            try:
                job._finish(FAILED, why)
            finally:
                job._release()
        self.stop(grace=0.5)

    def _wait_exit(self, out_t: threading.Thread, err_t: threading.Thread) -> None:
        assert self._proc is not None
        rc = self._proc.wait()
        out_t.join()
        err_t.join()
        with self._lock:
            stderr = list(self._stderr)
            jobs, self._jobs = list(self._jobs.values()), {}
            self._cancelling.clear()
            if self._dead is None:
                self._dead = self._why_dead(rc, stderr)
        for job in jobs:
            if self._stopping and not self._refusal:
                job._finish(CANCELLED, "cancelled")
            else:
                job._finish(FAILED, self._dead)
            job._release()
        self._exited.set()

    def _why_dead(self, rc: int, stderr: Sequence[str]) -> str:
        if self._refusal:
            return self._refusal
        if not self._hello:  # it never started serving: another version, or a broken install
            refusal = protocol_refusal(stderr, rc)
            if refusal is None and rc == P.EXIT_USAGE:  # argparse: an engine from before `serve`
                refusal = P.mismatch_message(f"older than {P.PROTOCOL_VERSION}")
            return refusal or error_from_stderr(stderr, rc, self._error_line)
        if rc < 0:
            try:
                how = f"killed by {signal.Signals(-rc).name}"
            except ValueError:
                how = f"killed by signal {-rc}"
        else:
            last = self._error_line or next((s.strip() for s in reversed(stderr) if s.strip()), "")
            how = f"exit code {rc}" + (f": {last}" if last else "")
        return f"the lip-sync engine stopped unexpectedly ({how}); the next sync starts a fresh one"


# -- the session's engine ----------------------------------------------------------------------

_session_lock = threading.Lock()
_session: Optional[Engine] = None


def session_engine(python: str, env: Optional[Dict[str, str]] = None,
                   cwd: Union[str, "os.PathLike[str]", None] = None) -> Engine:
    """The session's warm engine for this interpreter and environment, started when there is none
    (or it died, or still holds a cancelled job, or another interpreter/environment is asked
    for: the old one is stopped, without waiting for it)."""
    global _session
    with _session_lock:
        old = _session
        if old is not None and old.free and old.key == engine_key(python, env):
            return old
        _session = Engine(python, env, cwd).start()
        new = _session
    if old is not None and old.alive:
        old.stop()
    return new


def session_engine_for(preferred: str, env: Optional[Dict[str, str]] = None,
                       cwd: Union[str, "os.PathLike[str]", None] = None) -> Engine:
    """session_engine for the engine Python the preference names, else the first candidate that
    can import the core. The lookup runs interpreters (engine_python's probes), so call this
    where waiting is fine: JobQueue does, in its own thread. EngineNotFound says what to set."""
    from .engine_python import EngineNotFound, find_engine_python

    python = find_engine_python(preferred)
    if not python:
        raise EngineNotFound("no Python with wav2lip_core found: run install.py, or set 'Engine Python' "
                             "in the add-on preferences")
    return session_engine(python, env, cwd)


def session_pid() -> Optional[int]:
    """The running session engine's process id (None when there is none)."""
    engine = _session
    return engine.pid if engine is not None and engine.alive else None


_stoppers: "list[threading.Thread]" = []  # engines being stopped, seen through at exit


def shutdown(grace: float = 2.0, wait: bool = False) -> None:
    """Stop the session's engine (its running job is cancelled); a later job starts a new one.
    Returns at once unless `wait` (Blender quitting: see it gone)."""
    global _session
    with _session_lock:
        engine, _session = _session, None
    if engine is not None:
        engine.stop(grace, wait=wait)


def _drain(stream) -> None:
    """Read a pipe to its end, so an engine whose output is no longer followed never blocks on it."""
    try:
        for _ in stream:
            pass
    except Exception:  # noqa: BLE001 - the pipe is going away anyway
        pass


def _at_exit() -> None:
    """Blender quits: stop the engine and see every stopping engine gone (their threads are
    daemons, which would die with us before the quit, SIGTERM or SIGKILL went out)."""
    shutdown(wait=True)
    for stopper in list(_stoppers):
        stopper.join(10.0)


atexit.register(_at_exit)
