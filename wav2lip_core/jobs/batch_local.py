"""`wav2lip batch JOBS` on this machine: N warm engines (`wav2lip serve` subprocesses), each
running one job at a time from a shared queue. An engine that dies fails its job with its last
words and is started again for the next one; Ctrl+C cancels the running jobs through the
engines' own cancel (no output is left) and stops them.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections import deque
from pathlib import Path

import wav2lip_core

from . import jobfile
from .. import protocol as P

_ENGINE_STOP_S = 20  # a quitting engine finishes cancelling within this, else it is killed


class EngineError(Exception):
    """The engine could not start or speaks another protocol."""


class Engine:
    """One `python -m wav2lip_core serve` subprocess in its own session (a terminal's Ctrl+C
    reaches only the batch, which cancels jobs in order), its stderr in a log file."""

    def __init__(self, python: str, log_path: Path, threads: int | None = None):
        self._log = open(log_path, "w+", encoding="utf-8", errors="replace")
        root = str(Path(wav2lip_core.__file__).resolve().parents[1])
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])))
        if threads is not None:  # torch and OpenVINO (runtime.compile_config) read it
            env["OMP_NUM_THREADS"] = str(threads)
        self.proc = subprocess.Popen([python, "-m", "wav2lip_core", P.SERVE_COMMAND], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self._log, text=True, bufsize=1, env=env,
                                     start_new_session=True)
        self._write_lock = threading.Lock()
        self.cancelling = False
        hello = self._next()
        if hello is None or hello.get(P.KEY_EVENT) != P.EVENT_HELLO:
            why = self.why()
            self.close()
            raise EngineError(f"the engine did not start: {why}")
        if hello.get(P.KEY_PROTOCOL) != P.PROTOCOL_VERSION:
            self.close()
            raise EngineError(P.mismatch_message(hello.get(P.KEY_PROTOCOL)))

    def alive(self) -> bool:
        return self.proc.poll() is None and not self.cancelling

    def _next(self) -> dict | None:
        while True:
            line = self.proc.stdout.readline()
            if not line:
                return None
            event = P.parse_event(line)
            if event is not None:
                return event

    def _send(self, line: str) -> None:
        with self._write_lock:
            try:
                self.proc.stdin.write(line + "\n")
                self.proc.stdin.flush()
            except (OSError, ValueError):
                pass  # it is gone: the reader sees the end of its output

    def why(self) -> str:
        try:
            code = self.proc.wait(5)
        except subprocess.TimeoutExpired:
            code = None
        self._log.flush()
        self._log.seek(0)
        lines = [line.strip() for line in self._log.read().splitlines() if line.strip()]
        return f"the engine stopped (exit code {code})" + (f": {lines[-1]}" if lines else "")

    def run(self, job_id: str, args: list[str], on_frames) -> tuple[str, float, str | None, int | None]:
        """(status, seconds, error, frames) of one job; `on_frames(n)` as sync frames get done."""
        t0 = time.perf_counter()
        self._send(P.request(P.OP_JOB, job_id, args))
        synced = 0
        while True:
            e = self._next()
            if e is None:
                if self.cancelling:
                    return P.STATUS_CANCELLED, time.perf_counter() - t0, None, None
                return P.STATUS_FAILED, time.perf_counter() - t0, self.why(), None
            if e.get(P.KEY_JOB) != job_id:
                continue
            kind = e.get(P.KEY_EVENT)
            if kind == P.EVENT_PROGRESS and e.get(P.KEY_STAGE) == P.STAGE_SYNC:
                done = int(e.get(P.KEY_DONE, 0))
                if done > synced:
                    on_frames(done - synced)
                synced = done
            elif kind == P.EVENT_DONE:
                return P.STATUS_OK, time.perf_counter() - t0, None, e.get(P.KEY_FRAMES)
            elif kind == P.EVENT_ERROR:
                return P.STATUS_FAILED, time.perf_counter() - t0, str(e.get(P.KEY_MESSAGE)), None
            elif kind == P.EVENT_CANCELLED:
                return P.STATUS_CANCELLED, time.perf_counter() - t0, None, None

    def cancel(self, job_id: str | None) -> None:
        """Stop the running job (it leaves no output) and the engine: cancel, then quit, which
        also covers a job request the engine has not read yet."""
        self.cancelling = True
        if job_id is not None:
            self._send(P.request(P.OP_CANCEL, job_id))
        self._send(P.request(P.OP_QUIT))

    def close(self) -> None:
        self._send(P.request(P.OP_QUIT))
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(_ENGINE_STOP_S)
        except subprocess.TimeoutExpired:
            self.proc.terminate()  # serve cancels on SIGTERM too
            try:
                self.proc.wait(_ENGINE_STOP_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc.stdout.close()
        self._log.close()

    def terminate(self) -> None:
        self.cancelling = True
        if self.proc.poll() is None:
            self.proc.terminate()


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
    running: dict[int, tuple[Engine, jobfile.Job]] = {}
    engines: dict[int, Engine] = {}

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
                    tally.finish(job, P.STATUS_FAILED, error=f"bad job: {exc}")
                    continue
                if engine is None or not engine.alive():
                    if engine is not None:
                        engine.close()
                    try:
                        engine = Engine(sys.executable, tmp / f"engine{k}.log", cores_each)
                    except (EngineError, OSError) as exc:
                        engine = None
                        tally.finish(job, P.STATUS_FAILED, error=str(exc))
                        continue
                with lock:
                    engines[k] = engine
                    running[k] = (engine, job)
                    stopped = stop.is_set()
                if stopped:
                    status, seconds, error, frames = P.STATUS_CANCELLED, 0.0, None, None
                else:
                    status, seconds, error, frames = engine.run(str(job.line), args, tally.add_frames)
                with lock:
                    running.pop(k, None)
                tally.finish(job, status, seconds, error, frames)
        finally:
            if engine is not None:
                engine.close()
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
                engine.terminate()
        all_done.wait(_ENGINE_STOP_S)
    for job in jobs:
        tally.finish(job, P.STATUS_CANCELLED)  # the not yet started (finish ignores finished ones)
    return True
