"""`wav2lip serve`: one long-lived engine that runs many jobs, keeping the model loaded.

The wire format (requests on stdin, events on stdout, JSON lines) is described in protocol.py.
A job's arguments are the one-shot CLI's, parsed by the same parser (cli.build_parser) and
turned into the same request (cli.make_request), so a job means exactly what the command means.

Threads: a reader thread turns stdin lines into queued jobs and cancels; the main thread runs
one job at a time (pipeline.run's callbacks stay in its thread, as run() requires). Only events
reach stdout: file descriptor 1 is pointed at stderr, so a library's stray print (Python or C)
cannot break a line the add-on parses; events go to a private copy of the original stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
import traceback
from collections import deque
from dataclasses import dataclass

from .. import __version__, protocol as P
from . import cli
from ..errors import Cancelled, Wav2LipError

# How often the idle loop looks at the stop flag SIGTERM sets (a signal handler must not take
# the locks the reader thread uses).
_IDLE_POLL_S = 0.25


class _BadJob(Exception):
    """A job request the engine refuses before running it (one line for the error event)."""


@dataclass
class _Job:
    id: str
    args: list
    protocol: object = None
    cancelled: bool = False


class Engine:
    def __init__(self, events, runners_keep: int = 2):
        self._events = events  # a text file: the original stdout
        self._write_lock = threading.Lock()
        self._lock = threading.Lock()  # the queue and the running job
        self._queue: deque[_Job] = deque()
        self._running: _Job | None = None
        self._wake = threading.Event()
        self._stop = False  # plain flag: set from the SIGTERM handler too
        self._runners = None  # made on the first job: importing them costs ~0.5 s
        self._restorers = None
        self._runners_keep = runners_keep

    # --- output ----------------------------------------------------------------------------
    def emit(self, kind: str, job_id: object, **fields: object) -> None:
        self.write(P.event(kind, **{P.KEY_JOB: job_id}, **fields))

    def write(self, line: str) -> None:
        with self._write_lock:
            try:
                self._events.write(line + "\n")
                self._events.flush()
            except (OSError, ValueError):  # the caller is gone: nobody to work for
                self.stop()

    def error(self, job_id: object, message: str) -> None:
        self.emit(P.EVENT_ERROR, job_id, **{P.KEY_MESSAGE: " ".join(str(message).split())})

    # --- requests (reader thread) ----------------------------------------------------------
    def handle_line(self, line: str) -> None:
        line = line.strip()
        if not line:
            return
        try:
            req = json.loads(line)
        except ValueError:
            self.error(None, f"not a JSON request: {line[:80]}")
            return
        if not isinstance(req, dict):
            self.error(None, "a request must be a JSON object")
            return
        op, job_id = req.get(P.KEY_OP), req.get(P.KEY_ID)
        if op == P.OP_QUIT:
            self.stop()
        elif op == P.OP_JOB:
            args = req.get(P.KEY_ARGS)
            if not isinstance(job_id, str) or not isinstance(args, list) or not all(isinstance(a, str) for a in args):
                self.error(job_id if isinstance(job_id, str) else None,
                           f'a job needs "{P.KEY_ID}" (a string) and "{P.KEY_ARGS}" (a list of strings)')
                return
            with self._lock:
                self._queue.append(_Job(job_id, args, req.get(P.KEY_PROTOCOL)))
            self._wake.set()
        elif op == P.OP_CANCEL:
            dropped = False
            with self._lock:
                if self._running is not None and self._running.id == job_id:
                    self._running.cancelled = True  # run() sees it at its next check
                else:
                    kept = [j for j in self._queue if j.id != job_id]
                    dropped = len(kept) != len(self._queue)
                    self._queue = deque(kept)
            if dropped:
                self.emit(P.EVENT_CANCELLED, job_id)
            # An unknown id is most likely a job that just finished: nothing to do.
        else:
            self.error(job_id if isinstance(job_id, str) else None,
                       f"unknown op {op!r}: use {P.OP_JOB}, {P.OP_CANCEL} or {P.OP_QUIT}")

    def read(self, fd: int) -> None:
        # os.read, not sys.stdin: a daemon thread blocked inside sys.stdin's buffer holds its lock,
        # which aborts the interpreter at exit.
        pending = b""
        try:
            while not self._stop:
                chunk = os.read(fd, 65536)
                if not chunk:
                    break
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for raw in lines:
                    self.handle_line(raw.decode("utf-8", "replace"))
            if pending.strip():
                self.handle_line(pending.decode("utf-8", "replace"))
        except OSError:
            pass
        self.stop()  # EOF: the caller is gone or done

    def stop(self) -> None:
        self._stop = True
        self._wake.set()

    def on_signal(self, signum, frame) -> None:
        self._stop = True  # flag only: the main loop and run()'s cancel check look at it

    # --- jobs (main thread) ----------------------------------------------------------------
    def run_forever(self) -> None:
        from ..sync import pipeline  # noqa: F401  the imports a first job needs, while idle

        while not self._stop:
            self._wake.clear()
            with self._lock:
                job = self._queue.popleft() if self._queue else None
                self._running = job
            if job is None:
                self._wake.wait(_IDLE_POLL_S)
                continue
            try:
                self.run_job(job)
            finally:
                with self._lock:
                    self._running = None
        with self._lock:
            dropped, self._queue = list(self._queue), deque()
        for job in dropped:
            self.emit(P.EVENT_CANCELLED, job.id)

    def run_job(self, job: _Job) -> None:
        t0 = time.perf_counter()

        tag = {P.KEY_JOB: job.id}

        def progress(stage: str, done: int, total: int) -> None:
            self.write(P.progress(stage, done, total, **tag))

        def note(line: str) -> None:
            self.write(P.note(line, **tag))

        def cancel() -> bool:
            return job.cancelled or self._stop

        try:
            args = parse_job(job)
            from ..sync.pipeline import run

            if self._runners is None:
                from ..quality.enhance import Restorers
                from ..model.runtime import Executors

                self._runners = Executors(keep=self._runners_keep)
                self._restorers = Restorers(keep=1)
            result = run(cli.make_request(args), progress=progress, cancel=cancel, note=note, executors=self._runners,
                         restorers=self._restorers)
        except Cancelled:
            self.emit(P.EVENT_CANCELLED, job.id)
        except (_BadJob, Wav2LipError) as exc:
            self.error(job.id, str(exc))
        except Exception as exc:  # a bug must not take the other jobs down with it
            traceback.print_exc(file=sys.stderr)
            self.error(job.id, f"internal error ({type(exc).__name__}: {exc}); details on the engine's stderr")
        else:
            fields = cli.done_fields(result, time.perf_counter() - t0)
            self.emit(P.EVENT_DONE, job.id, **fields, **{P.KEY_WARM: result.warm})


def parse_job(job: _Job) -> argparse.Namespace:
    """The job's arguments through the CLI's own parser; _BadJob instead of exiting."""
    parser = cli.build_parser()

    def refuse(message: str):
        raise _BadJob(f"bad job arguments: {message}")

    def no_exit(status: int = 0, message: str | None = None):
        raise _BadJob("--help and --version are not jobs")

    parser.error = refuse
    parser.exit = no_exit
    args = parser.parse_args(cli.join_negative_values(job.args))
    for caller in (job.protocol, args.protocol):
        if caller is not None and caller != P.PROTOCOL_VERSION:
            raise _BadJob(P.caller_mismatch_message(caller))
    return args


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(
        prog=f"wav2lip {P.SERVE_COMMAND}",
        description="Warm lip-sync engine: reads JSON job requests on stdin, writes JSON events on stdout "
                    "(format: wav2lip_core/protocol.py). Exits on {\"op\": \"quit\"}, end of input or SIGTERM.",
    ).parse_args(argv)
    # Events get a private copy of stdout; fd 1 and sys.stdout go to stderr for everything else.
    events = os.fdopen(os.dup(1), "w", encoding="utf-8", buffering=1)
    sys.stdout.flush()
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    engine = Engine(events)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, engine.on_signal)
    engine.write(P.hello(__version__))
    threading.Thread(target=engine.read, args=(0,), name="wav2lip-serve-stdin", daemon=True).start()
    engine.run_forever()
    return P.EXIT_OK
