"""The warm engine (`python -m wav2lip_core serve`) as the add-on uses it: the jobs given to one
engine process, and the session's one engine. Pure Python, no bpy.

One engine process per Blender session (`session_engine`): started by the first job, reused by
the next ones (the model stays loaded), started afresh when it died, when the interpreter or
its environment changed, or while it still holds a cancelled job (it may be loading a model,
deaf to the cancel: a new job must not wait behind it, nor be lost when it is stopped), and
stopped by `shutdown` (the add-on calls it on unregister and when a file loads; atexit here
covers Blender quitting). Its stdin is a pipe from Blender, so even a Blender that is killed
leaves no engine behind: the engine exits at the end of its input.

The process itself (start, hello and protocol check, requests, the reader threads, why it died,
the stop escalation that never blocks the UI) is serve_client.ServeClient's, shared with
`wav2lip batch`. The jobs and the queue that feeds them are in engine_jobs.py, which imports
this module; here a job is only what `EngineJobLike` says.
"""

from __future__ import annotations

import atexit
import os
import threading
import time
from typing import Any, Dict, List, Optional, Protocol, Set, Tuple, Union

from .job_state import CANCELLED, FAILED
from .wire import protocol, serve_client

P = protocol
FRESH_HINT = "; the next sync starts a fresh one"


def engine_key(python: str, env: Optional[Dict[str, str]]) -> Tuple:
    """What makes an engine reusable: the same interpreter in the same environment."""
    return (python, tuple(sorted((env or {}).items())))


class EngineJobLike(Protocol):
    """A job as the engine sees it (engine_jobs.EngineJob): its request, and what it is told."""

    id: str
    args: List[str]
    op: str  # one of protocol.JOB_REQUESTS: OP_JOB, OP_FETCH, OP_METER

    def engine_event(self, event: Any) -> None: ...  # a note, progress or final event about it

    def engine_ended(self, status: str, message: str) -> None: ...  # failed or cancelled without one

    def engine_released(self) -> None: ...  # the engine let go of it (may clean up now)


class WarmEngine:
    """One `wav2lip serve` process (a ServeClient) and the jobs it was given."""

    def __init__(self, python: str, env: Optional[Dict[str, str]] = None,
                 cwd: Union[str, "os.PathLike[str]", None] = None) -> None:
        self.python = python
        self.key = engine_key(python, env)
        self._lock = threading.Lock()  # the jobs below; never held while writing to the process
        self._jobs: Dict[str, EngineJobLike] = {}
        self._cancelling: Set[str] = set()  # jobs asked to stop that the engine has not let go of
        self.started_at: Optional[float] = None
        self.client = serve_client.ServeClient(python, on_event=self._on_event, on_exit=self._on_exit,
                                               on_lost=self._on_lost, env=env, cwd=str(cwd) if cwd else None)

    def start(self) -> "WarmEngine":
        self.started_at = time.monotonic()
        self.client.start()
        return self

    @property
    def alive(self) -> bool:
        return self.client.alive

    @property
    def free(self) -> bool:
        """Alive, and holding no cancelled job: a new job may go to it."""
        with self._lock:
            cancelling = bool(self._cancelling)
        return self.alive and not cancelling

    @property
    def pid(self) -> Optional[int]:
        return self.client.pid

    # -- jobs ------------------------------------------------------------------------------------
    def take(self, job: EngineJobLike) -> Optional[str]:
        """Send `job` to the engine, or say in one line why it cannot take it. The caller holds the
        job's lock, so a cancel comes either before (the job is never sent) or after its request."""
        with self._lock:
            dead = self._dead()
            if dead is None:
                self._jobs[job.id] = job
        if dead is None:
            kind = P.JOB_REQUESTS[job.op]
            self.client.send(kind(id=job.id, args=list(job.args)))
        return dead

    def _dead(self) -> Optional[str]:
        c = self.client
        if c.exit is not None:
            return self._why(c.exit)
        if c.lost is not None:
            return f"the add-on {c.lost}{FRESH_HINT}"
        if c.refusal is not None:
            return c.refusal
        if c.stopping:
            return "the lip-sync engine was stopped; run Sync Lips again"
        return None

    @staticmethod
    def _why(exit: Any) -> str:
        if exit.stopped:
            return "the lip-sync engine was stopped; run Sync Lips again"
        return exit.reason + (FRESH_HINT if exit.crashed else "")

    def request_cancel(self, job: EngineJobLike) -> None:
        """Ask the engine to stop `job`; until it lets go of it, the engine takes no new job."""
        with self._lock:
            if job.id in self._jobs:
                self._cancelling.add(job.id)
        self.client.send(P.CancelRequest(id=job.id))

    def stop(self, grace: float = 2.0, wait: bool = False) -> None:
        """Quit (the running job is cancelled), then SIGTERM, then SIGKILL, `grace` seconds apart,
        in a thread: the caller (the UI) does not wait, unless `wait`. It takes no job from now."""
        self.client.stop(grace, wait=wait)

    # -- what the client reports (its reader threads) --------------------------------------------
    def _on_event(self, event: Any) -> None:
        job_id = getattr(event, "job", None)
        final = isinstance(event, (P.Done, P.Error, P.Cancelled))
        with self._lock:
            job = self._jobs.get(job_id) if isinstance(job_id, str) else None
            if job is not None and final:
                del self._jobs[job.id]
                self._cancelling.discard(job.id)
        if job is None:
            return
        try:
            job.engine_event(event)
        except Exception:
            if final:  # back among the running jobs, so that _on_lost fails it
                with self._lock:
                    self._jobs[job.id] = job
            raise
        finally:
            if final:
                job.engine_released()

    def _take_all(self) -> List[EngineJobLike]:
        with self._lock:
            jobs, self._jobs = list(self._jobs.values()), {}
            self._cancelling.clear()
        return jobs

    def _on_lost(self, reason: str) -> None:
        """A bug in the add-on's reading: fail the jobs in one line (the client retires the
        engine: what it says can no longer be followed); the next job starts a fresh one."""
        why = f"the add-on {reason}{FRESH_HINT}"
        for job in self._take_all():
            try:
                job.engine_ended(FAILED, why)
            finally:
                job.engine_released()

    def _on_exit(self, exit: Any) -> None:
        for job in self._take_all():
            try:
                job.engine_ended(CANCELLED if exit.stopped else FAILED, "cancelled" if exit.stopped else self._why(exit))
            finally:
                job.engine_released()


# -- the session's engine ----------------------------------------------------------------------

_session_lock = threading.Lock()
_session: Optional[WarmEngine] = None


def session_engine(python: str, env: Optional[Dict[str, str]] = None,
                   cwd: Union[str, "os.PathLike[str]", None] = None) -> WarmEngine:
    """The session's warm engine for this interpreter and environment, started when there is none
    (or it died, or still holds a cancelled job, or another interpreter/environment is asked
    for: the old one is stopped, without waiting for it)."""
    global _session
    with _session_lock:
        old = _session
        if old is not None and old.free and old.key == engine_key(python, env):
            return old
        _session = WarmEngine(python, env, cwd).start()
        new = _session
    if old is not None and old.alive:
        old.stop()
    return new


def session_engine_for(preferred: str, env: Optional[Dict[str, str]] = None,
                       cwd: Union[str, "os.PathLike[str]", None] = None) -> WarmEngine:
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


def shutdown(grace: float = 2.0, wait: bool = False) -> None:
    """Stop the session's engine (its running job is cancelled); a later job starts a new one.
    Returns at once unless `wait` (Blender quitting: see it gone)."""
    global _session
    with _session_lock:
        engine, _session = _session, None
    if engine is not None:
        engine.stop(grace, wait=wait)


def _at_exit() -> None:
    """Blender quits: stop the engine and see every stopping engine gone (their threads are
    daemons, which would die with us before the quit, SIGTERM or SIGKILL went out)."""
    shutdown(wait=True)
    serve_client.join_stoppers(10.0)


atexit.register(_at_exit)
