"""`wav2lip serve`: one long-lived engine that runs many jobs, keeping the model loaded.

The wire format (requests on stdin, events on stdout, JSON lines: protocol.py's dataclasses) is
described in protocol.py. A job's arguments are the one-shot CLI's, parsed by the same parser and
turned into the same request (request.py), so a job means exactly what the command means.

Threads: a reader thread turns stdin lines into queued jobs and cancels; the main thread runs
one job at a time (pipeline.run's callbacks stay in its thread, as run() requires). A fetch
request (protocol.FetchRequest) is a job too: it downloads, in the same queue, with the same
events; a job whose --face or --audio is a URL fetches it first (url_inputs.py). Only events
reach stdout: file descriptor 1 is pointed at stderr, so a library's stray print (Python or C)
cannot break a line the add-on parses; events go to a private copy of the original stdout.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
import traceback
from collections import deque
from dataclasses import dataclass

from .. import __version__, protocol as P
from ..errors import Cancelled, Wav2LipError
from .request import BadJob, done_event, make_request, parse_job, parse_strict

# How often the idle loop looks at the stop flag SIGTERM sets (a signal handler must not take
# the locks the reader thread uses).
_IDLE_POLL_S = 0.25


@dataclass
class _Job:
    """A job request in the queue (or running)."""

    id: str
    args: list
    protocol: object = None
    cancelled: bool = False
    op: str = P.OP_JOB  # or P.OP_FETCH (fetch_command's arguments), P.OP_METER (meter_command's), P.OP_FACES


class ServeLoop:
    """The warm engine's state: the queue, the running job, and the one writer of events."""

    def __init__(self, events, executors_keep: int = 2):
        self._events = events  # a text file: the original stdout
        self._write_lock = threading.Lock()
        self._lock = threading.Lock()  # the queue and the running job
        self._queue: deque[_Job] = deque()
        self._running: _Job | None = None
        self._wake = threading.Event()
        self._stop = False  # plain flag: set from the SIGTERM handler too
        self._executors = None  # made on the first job: importing them costs ~0.5 s
        self._restorers = None
        self._executors_keep = executors_keep

    # --- output ----------------------------------------------------------------------------
    def write(self, event: P.Message) -> None:
        line = event.to_json()
        with self._write_lock:
            try:
                self._events.write(line + "\n")
                self._events.flush()
            except (OSError, ValueError):  # the caller is gone: nobody to work for
                self.stop()

    def error(self, job_id: str | None, message: str) -> None:
        self.write(P.Error(job=job_id, message=" ".join(str(message).split())))

    # --- requests (reader thread) ----------------------------------------------------------
    def handle_line(self, line: str) -> None:
        if not line.strip():
            return
        try:
            req = P.parse_request(line)
        except P.ProtocolError as exc:
            self.error(exc.job, str(exc))
            return
        if isinstance(req, P.QuitRequest):
            self.stop()
        elif isinstance(req, tuple(P.JOB_REQUESTS.values())):
            with self._lock:
                self._queue.append(_Job(req.id, req.args, req.protocol, op=req.KIND))
            self._wake.set()
        else:
            dropped = False
            with self._lock:
                if self._running is not None and self._running.id == req.id:
                    self._running.cancelled = True  # run() sees it at its next check
                else:
                    kept = [j for j in self._queue if j.id != req.id]
                    dropped = len(kept) != len(self._queue)
                    self._queue = deque(kept)
            if dropped:
                self.write(P.Cancelled(job=req.id))
            # An unknown id is most likely a job that just finished: nothing to do.

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
            self.write(P.Cancelled(job=job.id))

    def run_job(self, job: _Job) -> None:
        """One queued request, whatever its op: its events, then exactly one of done, error or
        cancelled; a bug in one job is reported as that job's error and the engine goes on."""

        def progress(stage: str, done: int, total: int) -> None:
            self.write(P.Progress(stage=stage, done=int(done), total=int(total), job=job.id))

        def note(line: str) -> None:
            self.write(P.Note(message=line, job=job.id))

        def cancel() -> bool:
            return job.cancelled or self._stop

        runs = {P.OP_JOB: self.sync, P.OP_FETCH: self.fetch, P.OP_METER: self.meter, P.OP_FACES: self.faces}
        try:
            done = runs[job.op](job, progress, note, cancel)
        except Cancelled:
            self.write(P.Cancelled(job=job.id))
        except (BadJob, Wav2LipError) as exc:
            self.error(job.id, str(exc))
        except Exception as exc:  # a bug must not take the other jobs down with it
            traceback.print_exc(file=sys.stderr)
            self.error(job.id, f"internal error ({type(exc).__name__}: {exc}); details on the engine's stderr")
        else:
            done.job = job.id
            self.write(done)

    def sync(self, job: _Job, progress, note, cancel) -> P.Done:
        """A job request: the one-shot CLI's arguments, its URL inputs fetched first, on the models
        earlier jobs loaded."""
        t0 = time.perf_counter()
        args = parse_job(job.args, job.protocol)
        from ..sync.pipeline import run
        from .url_inputs import fetch_inputs

        fetch_inputs(args, progress, cancel, note)  # --face/--audio given as URLs: the files, first
        if self._executors is None:
            from ..quality.enhance import Restorers
            from ..model.runtime import Executors

            self._executors = Executors(keep=self._executors_keep)
            self._restorers = Restorers(keep=1)
        result = run(make_request(args), progress=progress, cancel=cancel, note=note, executors=self._executors,
                     restorers=self._restorers)
        return done_event(result, time.perf_counter() - t0, warm=result.warm)

    @staticmethod
    def fetch(job: _Job, progress, note, cancel) -> P.Done:
        """A fetch request: the download (bytes as stage "fetch" progress, from any thread: the
        writer locks) and its done event; cancel stops it and leaves nothing."""
        from .fetch_command import done_event as fetch_done, parse_fetch_job
        from .url_inputs import ByteReport
        from ..media.fetch import fetch

        args = parse_fetch_job(job.args, job.protocol)
        result = fetch(args.url, start=args.start, end=args.end, max_height=args.max_height, out_dir=args.out,
                       progress=ByteReport(progress), cancel=cancel)
        return fetch_done(result)

    @staticmethod
    def meter(job: _Job, progress, note, cancel) -> P.Done:
        """A meter request (the add-on's Measure button): progress of stage "meter", then a done
        whose `out` is the clip and whose sync_* fields are the reading (`sync_offset_measured`
        absent when no sync was found)."""
        from .meter_command import build_parser as meter_parser, measure_args

        t0 = time.perf_counter()
        args = parse_strict(meter_parser(), list(job.args), job.protocol)
        result = measure_args(args, progress=lambda done, total: progress(P.STAGE_METER, done, total), cancel=cancel)
        return P.Done(out=args.video, seconds=round(time.perf_counter() - t0, 3),
                      sync_offset_measured=result.offset_frames, sync_confidence=result.confidence,
                      sync_verdict=result.verdict)


    @staticmethod
    def faces(job: _Job, progress, note, cancel) -> P.Done:
        """A faces request (the add-on's Pick Face): the faces on one frame, in the done event."""
        from .faces_command import build_parser as faces_parser, find

        t0 = time.perf_counter()
        args = parse_strict(faces_parser(), list(job.args), job.protocol)
        found = find(args)
        return P.Done(out=found.path, seconds=round(time.perf_counter() - t0, 3), faces=[list(b) for b in found.boxes],
                      width=found.width, height=found.height, time=found.time)


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
    loop = ServeLoop(events)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, loop.on_signal)
    loop.write(P.Hello(version=__version__))
    threading.Thread(target=loop.read, args=(0,), name="wav2lip-serve-stdin", daemon=True).start()
    loop.run_forever()
    return P.EXIT_OK
