"""Jobs for the warm engine (engine.py) and the queue that feeds them to it. Pure Python, no bpy.

`EngineJob` is one job as the UI sees it (poll, finished, wait, cancel) with its work folder
(job_state.py's rule: only a finished result is moved into place, never over a file). `JobQueue`
hands its jobs to the session's engine one after another, each when the one before has
finished, so an engine that crashes costs only the job it was running. The first job is handed
over in a thread of its own: finding and starting the engine (engine_python's interpreter
probes, stopping an old engine) never holds up the caller, Blender's UI thread.

A cancel that comes while a finished job's result is being moved into place does not undo it:
the clip is complete, so the job ends done (the UI inserts it) rather than cancelled.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import shutil
import threading
import time
from pathlib import Path
from typing import Any, Callable, List, Optional, Sequence, Union

from .engine import WarmEngine
from .engine_python import EngineNotFound
from .job_state import CANCELLED, DONE, FAILED, RUNNING, Progress, apply_event, deliver, make_workdir
from .wire import protocol

P = protocol
QUEUED = "queued"  # the stage a job shows before the engine starts it
_ids = itertools.count(1)


class EngineJob:
    """One job on the warm engine. `args`: the one-shot CLI's arguments (--out: `work_out`), or
    for a fetch (`op` P.OP_FETCH) `wav2lip fetch`'s, whose file stays where the engine put it."""

    def __init__(self, *, dest: Union[str, "os.PathLike[str]", None] = None, suffix: str = ".mp4",
                 label: str = "", op: str = P.OP_JOB) -> None:
        self.dest = Path(dest) if dest else None
        self.workdir = make_workdir(self.dest)
        self.work_out = self.workdir / ("result" + suffix)
        self.id = f"{os.getpid()}-{next(_ids)}"
        self.label = label
        self.op = op  # P.OP_JOB: a sync (the CLI's arguments); OP_FETCH: a download; OP_METER: a measure
        self.args: List[str] = []
        self._lock = threading.Lock()
        self._progress = Progress(stage=QUEUED)
        self._finished = threading.Event()
        self._released = threading.Event()  # the engine is done with it (it may write until then)
        self._on_finish: List[Callable[["EngineJob"], None]] = []
        self._engine: Optional[WarmEngine] = None  # set (under _lock) when an engine takes the job
        self._delivering = False  # the engine said done: the result is being moved into place
        self.submitted_at: Optional[float] = None
        self.first_progress_at: Optional[float] = None  # first progress event (request-to-work latency)
        self.ended_at: Optional[float] = None

    # -- engine side (engine.EngineJobLike: its reader threads) ----------------------------------
    def hand_to(self, engine: WarmEngine) -> None:
        """Give the job to `engine`; under the job's lock, so a cancel either comes first (the job
        is never sent) or finds the engine set and asks it to stop the job, after its request."""
        with self._lock:
            if self._progress.status != RUNNING:  # cancelled before it was handed over
                return
            self._engine = engine
            self.submitted_at = time.monotonic()
            dead = engine.take(self)
        if dead is not None:
            self._finish(FAILED, dead)

    def engine_event(self, event: Any) -> None:
        if isinstance(event, P.Error):
            self._finish(FAILED, event.message or "the lip-sync engine failed without a message")
            return
        if isinstance(event, P.Cancelled):
            self._finish(CANCELLED, "cancelled")
            return
        done = isinstance(event, P.Done)
        with self._lock:
            if self._progress.status != RUNNING:
                return
            if isinstance(event, P.Progress) and self.first_progress_at is None:
                self.first_progress_at = time.monotonic()
            apply_event(self._progress, event)
            reported = self._progress.out
            if done:
                self._delivering = True
        if done:
            status, message, produced = deliver(Path(reported) if reported else self.work_out, self.dest)
            if status == DONE:
                with self._lock:
                    self._progress.out = str(produced)
            self._finish(status, message)

    def engine_ended(self, status: str, message: str) -> None:
        """The engine ended without a final event about the job (it died, or was stopped)."""
        self._finish(status, message)

    def engine_released(self) -> None:
        """The engine has let go of the job (its last event, or its exit): the work folder goes."""
        self._released.set()
        if self.finished:
            self.cleanup()

    def _finish(self, status: str, message: str, cleanup: bool = True) -> None:
        with self._lock:
            if not self._end(status, message):
                return
            callbacks = list(self._on_finish)
        self._ended(callbacks, cleanup)

    def _end(self, status: str, message: str) -> bool:
        """Set the final status (the caller holds _lock); False when the job has one already, or
        for a cancel once the result is being delivered (the clip counts)."""
        if self._progress.status != RUNNING or (status == CANCELLED and self._delivering):
            return False
        self._progress.status = status
        self._progress.message = message
        if status == DONE:
            self._progress.fraction = 1.0
            self._progress.stage = "done"
        return True

    def _ended(self, callbacks: List[Callable[["EngineJob"], None]], cleanup: bool) -> None:
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
    def delivering(self) -> bool:
        """The engine said done and the clip is being moved into place (a rename: milliseconds)."""
        with self._lock:
            return self._delivering and self._progress.status == RUNNING

    @property
    def finished(self) -> bool:
        return self._finished.is_set()

    def wait(self, timeout: Optional[float] = None) -> Progress:
        self._finished.wait(timeout)
        return self.poll()

    def cancel(self, grace: float = 10.0) -> None:
        """Stop the job, at once for the UI: dropped if no engine has it yet, else the engine is
        asked to stop it; the work folder goes when the engine has let go of it, and an engine
        that has not within `grace` seconds is stopped (it looks between batches of frames, but
        not while it loads a model: a warm engine is worth waiting a few seconds for). Until it
        lets go, the engine takes no new job (engine.session_engine starts another). A job whose
        result is already being delivered is not cancelled: it ends done."""
        with self._lock:
            if self._progress.status != RUNNING or self._delivering:
                return
            engine = self._engine
            dropped = engine is None and self._end(CANCELLED, "cancelled")
            callbacks = list(self._on_finish)
        if engine is None:
            if dropped:
                self._ended(callbacks, True)
            return
        engine.request_cancel(self)
        if self._released.wait(0.3):  # the usual case: the engine answers within a few checks
            self._finish(CANCELLED, "cancelled")
            return
        self._finish(CANCELLED, "cancelled", cleanup=False)
        if not self.finished:  # delivering meanwhile: the engine is done with it
            return
        threading.Thread(target=self._settle, args=(engine, grace), name="wav2lip-cancel", daemon=True).start()

    def _settle(self, engine: WarmEngine, grace: float) -> None:
        if not self._released.wait(grace):
            engine.stop(grace=0.5)
        self.cleanup()

    def cleanup(self) -> None:
        shutil.rmtree(self.workdir, ignore_errors=True)

    @property
    def pid(self) -> Optional[int]:
        return self._engine.pid if self._engine is not None else None


class JobQueue:
    """Jobs for the session's engine, one after another. `engine_for()` gives the engine for the
    next job (the session's warm one, restarted when it died)."""

    def __init__(self, jobs: Sequence[EngineJob], engine_for: Callable[[], WarmEngine]) -> None:
        self.jobs = list(jobs)
        self._engine_for = engine_for
        self._next = 0
        self._lock = threading.Lock()
        self._dropped = False
        for job in self.jobs:
            job.on_finish(self._advance)

    def start(self) -> "JobQueue":
        """Hand the first job over, in a thread: finding and starting an engine can take seconds."""
        threading.Thread(target=self._advance, args=(None,), name="wav2lip-queue-start", daemon=True).start()
        return self

    def _advance(self, _finished: Optional[EngineJob]) -> None:
        with self._lock:
            if self._dropped or self._next >= len(self.jobs):
                return
            job = self.jobs[self._next]
            self._next += 1
        if job.finished:  # cancelled meanwhile
            return
        try:
            engine = self._engine_for()
        except EngineNotFound as exc:  # says what to set
            job._finish(FAILED, str(exc))
            return
        except Exception as exc:  # noqa: BLE001 - reported on the job, never lost in a thread
            job._finish(FAILED, f"cannot start the lip-sync engine: {exc}")
            return
        job.hand_to(engine)

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
