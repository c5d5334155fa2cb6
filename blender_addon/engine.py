"""The warm engine (`python -m wav2lip_core serve`) as the add-on uses it. Pure Python, no bpy.

One engine process per Blender session (`session_engine`): started by the first job, reused by
the next ones (the model stays loaded), started afresh when it died or when the interpreter or
its environment changed, and stopped by `shutdown` (the add-on calls it on unregister and when a
file loads; atexit here covers Blender quitting). Its stdin is a pipe from Blender, so even a
Blender that is killed leaves no engine behind: the engine exits at the end of its input.

`EngineJob` is one job as the UI sees it (poll, finished, wait, cancel) with its work folder
(runner.py's rule: only a finished result is moved into place, never over a file).
`JobQueue` hands its jobs to the session's engine one after another, each when the one before
has finished, so an engine that crashes costs only the job it was running.
"""

from __future__ import annotations

import atexit
import dataclasses
import itertools
import os
import signal
import subprocess
import threading
import time
from collections import deque
from pathlib import Path
from typing import Callable, Deque, Dict, List, Optional, Sequence, Tuple, Union

from .runner import (CANCELLED, DONE, FAILED, RUNNING, Progress, _MAX_LINE, _signal_group, apply_event, deliver,
                     engine_popen_kwargs, error_from_stderr, make_workdir, protocol_refusal)
from .wire import protocol

P = protocol
QUEUED = "queued"  # the stage a job shows before the engine starts it
_ids = itertools.count(1)


class EngineJob:
    """One job on the warm engine. `args`: the one-shot CLI's arguments (--out: `work_out`)."""

    def __init__(self, *, dest: Union[str, "os.PathLike[str]", None] = None, suffix: str = ".mp4",
                 label: str = "") -> None:
        self.dest = Path(dest) if dest else None
        self.workdir = make_workdir(self.dest)
        self.work_out = self.workdir / ("result" + suffix)
        self.id = f"{os.getpid()}-{next(_ids)}"
        self.label = label
        self.args: List[str] = []
        self._lock = threading.Lock()
        self._progress = Progress(stage=QUEUED)
        self._finished = threading.Event()
        self._released = threading.Event()  # the engine is done with it (it may write until then)
        self._on_finish: List[Callable[["EngineJob"], None]] = []
        self._engine: Optional[Engine] = None
        self.submitted_at: Optional[float] = None
        self.first_progress_at: Optional[float] = None  # first progress event (request-to-work latency)
        self.ended_at: Optional[float] = None

    # -- engine side (its reader threads) -------------------------------------------------------
    def _event(self, obj: dict) -> None:
        kind = obj[P.KEY_EVENT]
        if kind == P.EVENT_ERROR:
            self._finish(FAILED, str(obj.get(P.KEY_MESSAGE) or "the lip-sync engine failed without a message"))
            return
        if kind == P.EVENT_CANCELLED:
            self._finish(CANCELLED, "cancelled")
            return
        with self._lock:
            if self._progress.status != RUNNING:
                return
            if kind == P.EVENT_PROGRESS and self.first_progress_at is None:
                self.first_progress_at = time.monotonic()
            apply_event(self._progress, obj)
            reported = self._progress.out
        if kind == P.EVENT_DONE:
            status, message, produced = deliver(Path(reported) if reported else self.work_out, self.dest)
            if status == DONE:
                with self._lock:
                    self._progress.out = str(produced)
            self._finish(status, message)

    def _release(self) -> None:
        """The engine has let go of the job (its last event, or its exit): the work folder goes."""
        self._released.set()
        if self.finished:
            self.cleanup()

    def _finish(self, status: str, message: str, cleanup: bool = True) -> None:
        with self._lock:
            if self._progress.status != RUNNING:
                return
            self._progress.status = status
            self._progress.message = message
            if status == DONE:
                self._progress.fraction = 1.0
                self._progress.stage = "done"
            callbacks = list(self._on_finish)
        self.ended_at = time.monotonic()
        if cleanup:
            self.cleanup()  # a result has been moved out by now; nothing partial stays
        self._finished.set()
        for cb in callbacks:
            cb(self)

    # -- UI side --------------------------------------------------------------------------------
    def on_finish(self, callback: Callable[["EngineJob"], None]) -> None:
        self._on_finish.append(callback)

    def poll(self) -> Progress:
        with self._lock:
            return dataclasses.replace(self._progress, notes=list(self._progress.notes))

    @property
    def finished(self) -> bool:
        return self._finished.is_set()

    def wait(self, timeout: Optional[float] = None) -> Progress:
        self._finished.wait(timeout)
        return self.poll()

    def cancel(self, grace: float = 10.0) -> None:
        """Stop the job, at once for the UI: dropped if the engine has not got it, else the engine
        is asked to stop it; the work folder goes when the engine has let go of it, and an engine
        that has not within `grace` seconds is stopped (it looks between batches of frames, but
        not while it loads a model: a warm engine is worth waiting a few seconds for)."""
        engine = self._engine
        if engine is None or self.finished:
            self._finish(CANCELLED, "cancelled")
            return
        engine.request_cancel(self)
        if self._released.wait(0.3):  # the usual case: the engine answers within a few checks
            self._finish(CANCELLED, "cancelled")
            return
        self._finish(CANCELLED, "cancelled", cleanup=False)
        threading.Thread(target=self._settle, args=(engine, grace), name="wav2lip-cancel", daemon=True).start()

    def _settle(self, engine: "Engine", grace: float) -> None:
        if not self._released.wait(grace):
            engine.stop(grace=0.5)
        self.cleanup()

    def cleanup(self) -> None:
        import shutil

        shutil.rmtree(self.workdir, ignore_errors=True)

    @property
    def pid(self) -> Optional[int]:
        return self._engine.pid if self._engine is not None else None


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
        self._lock = threading.Lock()
        self._jobs: Dict[str, EngineJob] = {}
        self._stderr: Deque[str] = deque(maxlen=200)
        self._error_line = ""
        self._hello = False
        self._refusal: Optional[str] = None
        self._dead: Optional[str] = None  # why it cannot take jobs any more
        self._stopping = False
        self._exited = threading.Event()
        self.started_at: Optional[float] = None
        self.engine_version: Optional[str] = None

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
    def pid(self) -> Optional[int]:
        return self._proc.pid if self._proc is not None else None

    # -- jobs ------------------------------------------------------------------------------------
    def submit(self, job: EngineJob) -> None:
        job._engine = self
        job.submitted_at = time.monotonic()
        with self._lock:
            dead = self._dead or self._refusal
            if dead is None:
                self._jobs[job.id] = job
        if dead is not None:
            job._finish(FAILED, dead)
            return
        self._send(P.request(P.OP_JOB, job.id, job.args))

    def request_cancel(self, job: EngineJob) -> None:
        self._send(P.request(P.OP_CANCEL, job.id))

    def stop(self, grace: float = 2.0) -> None:
        """Quit (the running job is cancelled), then SIGTERM, then SIGKILL; waits for the exit."""
        self._stopping = True
        proc = self._proc
        if proc is None:
            return
        self._send(P.request(P.OP_QUIT))
        try:
            if proc.stdin is not None:
                proc.stdin.close()
        except OSError:
            pass
        for sig in (signal.SIGTERM, getattr(signal, "SIGKILL", signal.SIGTERM)):
            try:
                proc.wait(timeout=grace)
                break
            except subprocess.TimeoutExpired:
                _signal_group(proc, sig)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:  # pragma: no cover - unkillable process
            pass
        self._exited.wait(grace)

    def _send(self, line: str) -> None:
        proc = self._proc
        if proc is None or proc.stdin is None:
            return
        try:
            with self._lock:
                proc.stdin.write(line + "\n")
                proc.stdin.flush()
        except (OSError, ValueError):  # it died; _wait_exit tells the jobs
            pass

    # -- reader threads --------------------------------------------------------------------------
    def _read_stdout(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for line in self._proc.stdout:
            obj = P.parse_event(line)
            if obj is None:
                continue
            if obj[P.KEY_EVENT] == P.EVENT_HELLO:
                self._hello = True
                self.engine_version = str(obj.get(P.KEY_VERSION) or "") or None
                if obj.get(P.KEY_PROTOCOL) != P.PROTOCOL_VERSION:  # another version: stop it
                    self._refusal = P.mismatch_message(obj.get(P.KEY_PROTOCOL))
                    _signal_group(self._proc, signal.SIGTERM)
                continue
            job_id = obj.get(P.KEY_JOB)
            with self._lock:
                job = self._jobs.get(job_id) if isinstance(job_id, str) else None
                if job is not None and obj[P.KEY_EVENT] in (P.EVENT_DONE, P.EVENT_ERROR, P.EVENT_CANCELLED):
                    del self._jobs[job_id]
            if job is not None:
                job._event(obj)
                if obj[P.KEY_EVENT] in (P.EVENT_DONE, P.EVENT_ERROR, P.EVENT_CANCELLED):
                    job._release()

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
            stderr = list(self._stderr)
            jobs, self._jobs = list(self._jobs.values()), {}
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


class JobQueue:
    """Jobs for the session's engine, one after another. `engine_for()` gives the engine for the
    next job (the session's warm one, restarted when it died)."""

    def __init__(self, jobs: Sequence[EngineJob], engine_for: Callable[[], Engine]) -> None:
        self.jobs = list(jobs)
        self._engine_for = engine_for
        self._next = 0
        self._lock = threading.Lock()
        self._dropped = False
        for job in self.jobs:
            job.on_finish(self._advance)

    def start(self) -> "JobQueue":
        self._advance(None)
        return self

    def _advance(self, _finished: Optional[EngineJob]) -> None:
        with self._lock:
            if self._dropped or self._next >= len(self.jobs):
                return
            job = self.jobs[self._next]
            self._next += 1
        try:
            engine = self._engine_for()
        except Exception as exc:  # noqa: BLE001 - reported on the job, never lost in a thread
            job._finish(FAILED, f"cannot start the lip-sync engine: {exc}")
            return
        engine.submit(job)

    @property
    def current(self) -> Optional[EngineJob]:
        """The job the engine works on (or the next to go), None when all have finished."""
        return next((j for j in self.jobs if not j.finished), None)

    @property
    def finished(self) -> bool:
        return all(j.finished for j in self.jobs)

    def fraction(self) -> float:
        """Overall progress: finished jobs count fully, the current one partly."""
        if not self.jobs:
            return 1.0
        return sum(1.0 if j.finished else j.poll().fraction for j in self.jobs) / len(self.jobs)

    def cancel(self) -> None:
        """Drop the jobs not started yet, then stop the current one."""
        with self._lock:
            self._dropped = True
            pending = self.jobs[self._next:]
        for job in pending:
            job._finish(CANCELLED, "cancelled")
        for job in self.jobs:
            if not job.finished:
                job.cancel()


# -- the session's engine ----------------------------------------------------------------------

_session_lock = threading.Lock()
_session: Optional[Engine] = None


def session_engine(python: str, env: Optional[Dict[str, str]] = None,
                   cwd: Union[str, "os.PathLike[str]", None] = None) -> Engine:
    """The session's warm engine for this interpreter and environment, started when there is none
    (or it died, or another interpreter/environment is asked for: the old one is stopped)."""
    global _session
    with _session_lock:
        old = _session
        if old is not None and old.alive and old.key == engine_key(python, env):
            return old
        _session = Engine(python, env, cwd).start()
        new = _session
    if old is not None and old.alive:
        old.stop()
    return new


def session_pid() -> Optional[int]:
    """The running session engine's process id (None when there is none)."""
    engine = _session
    return engine.pid if engine is not None and engine.alive else None


def shutdown(grace: float = 2.0) -> None:
    """Stop the session's engine (its running job is cancelled); a later job starts a new one."""
    global _session
    with _session_lock:
        engine, _session = _session, None
    if engine is not None:
        engine.stop(grace)


atexit.register(shutdown)
