"""`wav2lip batch JOBS` on this machine: N warm engines (`wav2lip serve` subprocesses, each a
ServeClient), each running one job at a time from a shared queue. An engine that dies fails its
job with its last words (serve_client's rules) and is started again for the next one; Ctrl+C
cancels the running jobs through the engines' own cancel (no output is left) and stops them.
"""

from __future__ import annotations

import os
import queue
import sys
import threading
import time
from collections import deque
from pathlib import Path

import wav2lip_core

from . import jobfile
from .. import batch_format as J, protocol as P
from ..serve_client import EngineExit, ServeClient

_ENGINE_STOP_S = 20  # a quitting engine finishes cancelling within this, else it is killed


class _Engine:
    """A ServeClient whose events go to a queue, read by the one worker thread that owns it."""

    def __init__(self, threads: int | None):
        root = str(Path(wav2lip_core.__file__).resolve().parents[1])
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])))
        if threads is not None:  # torch and OpenVINO (runtime.compile_config) read it
            env["OMP_NUM_THREADS"] = str(threads)
        self.events: queue.Queue = queue.Queue()
        self.client = ServeClient(sys.executable, on_event=self.events.put, on_exit=self.events.put, env=env).start()

    def run(self, job_id: str, args: list[str], on_frames) -> tuple[str, float, str | None, int | None]:
        """(status, seconds, error, frames) of one job; `on_frames(n)` as sync frames get done."""
        t0 = time.perf_counter()
        self.client.send(P.JobRequest(id=job_id, args=args))
        synced = 0
        while True:
            e = self.events.get()
            if isinstance(e, EngineExit):
                if e.stopped:
                    return J.STATUS_CANCELLED, time.perf_counter() - t0, None, None
                return J.STATUS_FAILED, time.perf_counter() - t0, e.reason, None
            if getattr(e, "job", None) != job_id:
                continue
            if isinstance(e, P.Progress) and e.stage == P.STAGE_SYNC:
                if e.done > synced:
                    on_frames(e.done - synced)
                synced = e.done
            elif isinstance(e, P.Done):
                return J.STATUS_OK, time.perf_counter() - t0, None, e.frames
            elif isinstance(e, P.Error):
                return J.STATUS_FAILED, time.perf_counter() - t0, e.message, None
            elif isinstance(e, P.Cancelled):
                return J.STATUS_CANCELLED, time.perf_counter() - t0, None, None

    def cancel(self, job_id: str | None) -> None:
        """Stop the running job (it leaves no output) and the engine: cancel, then quit, which
        also covers a job request the engine has not read yet."""
        if job_id is not None:
            self.client.send(P.CancelRequest(id=job_id))
        self.client.stop(grace=_ENGINE_STOP_S)


def run_local(jobs: list[jobfile.Job], workers: int, tally, tmp: Path) -> bool:
    """Run `jobs` on `workers` engines; True when interrupted (Ctrl+C/SIGTERM)."""
    todo = deque(jobs)
    # Engines side by side share the cores instead of each spreading its model over all of them
    # (oversubscribed threads spin against each other); a thread count the user set is kept.
    cores_each = None
    if workers > 1 and "OMP_NUM_THREADS" not in os.environ:
        cores_each = max(1, (os.cpu_count() or 1) // workers)
    stop = threading.Event()
    all_done = threading.Event()  # set by the last worker to finish
    lock = threading.Lock()
    running: dict[int, tuple[_Engine, jobfile.Job]] = {}
    engines: dict[int, _Engine] = {}

    def work(k: int) -> None:
        engine = None
        try:
            while not stop.is_set():
                with lock:
                    job = todo.popleft() if todo else None
                if job is None:
                    return
                try:
                    args = job.args(jobfile.list_writer(tmp, job.line))
                except (ValueError, OSError) as exc:
                    tally.finish(job, J.STATUS_FAILED, error=f"bad job: {exc}")
                    continue
                if engine is None or not engine.client.alive:
                    if engine is not None:
                        engine.client.stop(_ENGINE_STOP_S, wait=True)
                    engine = _Engine(cores_each)
                    if not engine.client.wait_hello():
                        tally.finish(job, J.STATUS_FAILED, error=engine.client.unusable)
                        engine.client.stop(_ENGINE_STOP_S, wait=True)
                        engine = None
                        continue
                with lock:
                    engines[k] = engine
                    running[k] = (engine, job)
                    stopped = stop.is_set()
                if stopped:
                    status, seconds, error, frames = J.STATUS_CANCELLED, 0.0, None, None
                else:
                    status, seconds, error, frames = engine.run(str(job.line), args, tally.add_frames)
                with lock:
                    running.pop(k, None)
                tally.finish(job, status, seconds, error, frames)
        finally:
            if engine is not None:
                engine.client.stop(_ENGINE_STOP_S, wait=True)
            with lock:
                left[0] -= 1
                if left[0] == 0:
                    all_done.set()

    threads = [threading.Thread(target=work, args=(k,), name=f"wav2lip-batch-{k}", daemon=True)
               for k in range(min(workers, len(jobs)))]
    left = [len(threads)]
    if not threads:
        return False
    for t in threads:
        t.start()
    try:
        # Waiting on an Event, not Thread.join: a Ctrl+C that interrupts join() can leave a
        # running thread marked as finished (CPython's lock handling), and the batch would then
        # exit while its engine is still writing.
        while not all_done.wait(0.2):
            pass
        return False
    except KeyboardInterrupt:
        stop.set()
        with lock:
            for engine, job in running.values():
                engine.cancel(str(job.line))
            for k, engine in engines.items():
                if k not in running:
                    engine.cancel(None)
    try:
        while not all_done.wait(0.2):
            pass
    except KeyboardInterrupt:  # a second Ctrl+C: no more waiting for a clean cancel
        with lock:
            for engine in engines.values():
                engine.client.terminate()
        all_done.wait(_ENGINE_STOP_S)
    for job in jobs:
        tally.finish(job, J.STATUS_CANCELLED)  # the not yet started (finish ignores finished ones)
    return True
