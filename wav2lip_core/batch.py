"""`wav2lip batch JOBS`: many lip-sync jobs from a JSON-lines file, on this machine (N warm
engines, `wav2lip serve` subprocesses, one job at a time each) or as tasks on a Ray cluster
(batch_ray.py). The file format and the report's keys are in protocol.py ("JOBS files"); reading
jobs, the resume rule and the report file are in jobfile.py.

One bad job never stops the others; the exit code is 0 only when every job succeeded or was
skipped as already done. Ctrl+C (or SIGTERM) cancels the running jobs, which leave no output.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, deque
from pathlib import Path

import wav2lip_core

from . import jobfile, protocol as P
from .errors import Wav2LipError

RAY_HINT = "pip install 'wav2lip-blender[ray]' (or: pip install ray==2.60.0)"
_ENGINE_STOP_S = 20  # a quitting engine finishes cancelling within this, else it is killed

EPILOG = f"""\
JOBS holds one job per line, a JSON object whose keys are the options of `wav2lip` without the
dashes, e.g.
  {{"id": "shot-1", "face": "shot1.mp4", "audio": "fr/shot1.wav", "checkpoint": "wav2lip_gan.pth", "out": "fr/shot1_sync.mp4"}}
  {{"face": "shot2.mp4", "audio": "fr/shot2.wav", "checkpoint": "wav2lip_gan.pth", "out": "fr/shot2_sync.mp4", "box": [40, 300, 60, 320], "no-smooth": true}}
Lists give options several values, true is a flag, "source-times" may be an inline list of
seconds; relative paths are relative to the JOBS file's folder; blank lines and lines starting
with # are ignored. A line that is not a valid job fails alone.

The report (default: JOBS's name with .report.jsonl, beside it) gets one JSON line per job: id,
line, status ({', '.join(P.JOB_STATUSES)}), seconds, out, frames, and a one-line error. Running the
same command again resumes: a job is skipped when the report says it succeeded from the same
request (the same options, engine version and input files' sizes and modification times) and
its output is still the file that run wrote (same size and time). Delete the report, or pass
--no-resume, to run everything again.

Exit codes: 0 every job ok or skipped, 1 a job failed (or JOBS cannot be read), 2 bad arguments
(or --ray without Ray installed), 130 cancelled with Ctrl+C.
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f"wav2lip {P.BATCH_COMMAND}", description="Run many lip-sync jobs from a JSON-lines file.",
                                epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("jobs", metavar="JOBS", help="JSON-lines file, one job per line")
    p.add_argument("--workers", type=_positive, default=1, metavar="N",
                   help="local engines running jobs side by side (default 1; each keeps its own model loaded and uses every core)")
    p.add_argument("--report", metavar="R.jsonl", help="report file (default: JOBS.report.jsonl beside JOBS)")
    p.add_argument("--no-resume", action="store_true", help="run every job, even those the report says are done")
    p.add_argument("--progress", choices=("bar", "none"), default="bar", help="an overall tqdm bar on stderr (default) or nothing")
    r = p.add_argument_group("Ray (pip install 'wav2lip-blender[ray]')")
    r.add_argument("--ray", nargs="?", const="", metavar="ADDRESS",
                   help="run each job as a Ray task: on the cluster at ADDRESS, else at $RAY_ADDRESS, else the one "
                        "`ray start` began on this machine, else a new local one for this batch")
    r.add_argument("--fetch", action="store_true",
                   help="with --ray: return outputs through Ray and write them here (no shared file system for outputs)")
    r.add_argument("--retries", type=int, default=3, metavar="N",
                   help="with --ray: re-run a job whose worker or node died, up to N times (default 3); a job's own error is never retried")
    r.add_argument("--cpus-per-task", type=_positive, default=1, metavar="N",
                   help="with --ray: CPUs each job reserves (default 1; on a cluster with GPUs each job also takes one GPU)")
    return p


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


class Tally:
    """Where finished jobs go: the report, the counts, the overall bar (jobs, with frames synced
    and the frame rate beside it). Called from several threads."""

    def __init__(self, report: jobfile.Report, total: int, done_before: int, bar: bool):
        from tqdm import tqdm

        self._report = report
        self._lock = threading.Lock()
        self.counts: Counter = Counter({P.STATUS_SKIPPED: done_before})
        self.frames = 0
        self._t0 = time.perf_counter()
        self._bar = tqdm(total=total, initial=done_before, unit="job", desc="batch", disable=not bar,
                         dynamic_ncols=True, file=sys.stderr)
        self._show = bar
        self.finished: set[int] = set()  # lines

    def add_frames(self, n: int) -> None:
        with self._lock:
            self.frames += n
            self._postfix()

    def finish(self, job: jobfile.Job, status: str, seconds: float = 0.0, error: str | None = None,
               frames: int | None = None) -> None:
        with self._lock:
            if job.line in self.finished:
                return
            self.finished.add(job.line)
            self._report.add(jobfile.entry(job, status, seconds, error, frames))
            self.counts[status] += 1
            if status == P.STATUS_FAILED and self._show:
                self._bar.write(f"line {job.line} ({job.id}): failed: {' '.join(str(error).split())}", file=sys.stderr)
            self._bar.update(1)
            self._postfix()

    def _postfix(self) -> None:
        rate = self.frames / max(time.perf_counter() - self._t0, 1e-6)
        failed = self.counts[P.STATUS_FAILED]
        self._bar.set_postfix_str(f"{self.frames} frames, {rate:.1f} frames/s" + (f", {failed} failed" if failed else ""))

    def close(self) -> None:
        self._bar.close()


# --- local: warm engines ----------------------------------------------------------------------

class EngineError(Exception):
    """The engine could not start or speaks another protocol."""


class Engine:
    """One `python -m wav2lip_core serve` subprocess in its own session (a terminal's Ctrl+C
    reaches only the batch, which cancels jobs in order), its stderr in a log file."""

    def __init__(self, python: str, log_path: Path):
        self._log = open(log_path, "w+", encoding="utf-8", errors="replace")
        root = str(Path(wav2lip_core.__file__).resolve().parents[1])
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])))
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


def run_local(jobs: list[jobfile.Job], workers: int, tally: Tally, tmp: Path) -> bool:
    """Run `jobs` on `workers` engines; True when interrupted (Ctrl+C/SIGTERM)."""
    todo = deque(jobs)
    stop = threading.Event()
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
                        engine = Engine(sys.executable, tmp / f"engine{k}.log")
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

    threads = [threading.Thread(target=work, args=(k,), name=f"wav2lip-batch-{k}", daemon=True)
               for k in range(min(workers, len(jobs)))]
    for t in threads:
        t.start()
    try:
        for t in threads:
            while t.is_alive():
                t.join(0.2)
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
        for t in threads:
            while t.is_alive():
                t.join(0.2)
    except KeyboardInterrupt:  # a second Ctrl+C: no more waiting for a clean cancel
        with lock:
            for engine in engines.values():
                engine.terminate()
        for t in threads:
            t.join(_ENGINE_STOP_S)
    for job in jobs:
        tally.finish(job, P.STATUS_CANCELLED)  # the not yet started (finish ignores finished ones)
    return True


# --- the command --------------------------------------------------------------------------------

def _on_sigterm(signum, frame) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else list(argv))
    if args.ray is None and args.fetch:
        print("error: --fetch needs --ray: local jobs write their outputs themselves", file=sys.stderr)
        return P.EXIT_USAGE
    if args.ray is not None:
        try:
            import ray  # noqa: F401
        except ImportError:
            print(f"error: --ray needs Ray, which is not installed: {RAY_HINT}", file=sys.stderr)
            return P.EXIT_USAGE
    try:
        jobs = jobfile.read_jobs(args.jobs)
    except Wav2LipError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return P.EXIT_ERROR
    report_path = Path(args.report) if args.report else jobfile.default_report(args.jobs)
    if report_path.resolve() == Path(args.jobs).resolve():
        print(f"error: --report {report_path} is the jobs file itself; give another name", file=sys.stderr)
        return P.EXIT_USAGE
    done = {} if args.no_resume else jobfile.read_done(report_path)
    skipped, bad, todo = [], [], []
    for job in jobs:
        before = jobfile.still_done(job, done)
        if before is not None:
            skipped.append(jobfile.entry(job, P.STATUS_SKIPPED, frames=before.get(P.REPORT_FRAMES)))
        elif job.error is not None:
            bad.append(job)
        else:
            todo.append(job)
    try:
        report = jobfile.Report(report_path, skipped)
    except OSError as exc:
        print(f"error: cannot write the report {report_path}: {exc.strerror or exc}", file=sys.stderr)
        return P.EXIT_ERROR
    tally = Tally(report, len(jobs), len(skipped), bar=args.progress == "bar")
    for job in bad:
        tally.finish(job, P.STATUS_FAILED, error=job.error)
    tmp = Path(tempfile.mkdtemp(prefix="wav2lip-batch-"))
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        if not todo:
            interrupted = False
        elif args.ray is not None:
            from .batch_ray import RaySettings, run_ray

            settings = RaySettings(address=args.ray or None, fetch=args.fetch, retries=args.retries,
                                   cpus_per_task=args.cpus_per_task)
            interrupted = run_ray(todo, settings, tally)
        else:
            interrupted = run_local(todo, args.workers, tally, tmp)
    except Wav2LipError as exc:  # the cluster could not be reached: the jobs did not run
        for job in todo:
            tally.finish(job, P.STATUS_FAILED, error=str(exc))
        tally.close()
        report.close()
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return P.EXIT_ERROR
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        shutil.rmtree(tmp, ignore_errors=True)
    tally.close()
    report.close()
    c = tally.counts
    print(f"{len(jobs)} jobs: {c[P.STATUS_OK]} ok, {c[P.STATUS_SKIPPED]} skipped, {c[P.STATUS_FAILED]} failed, "
          f"{c[P.STATUS_CANCELLED]} cancelled; report: {report_path}", file=sys.stderr)
    if interrupted:
        return P.EXIT_CANCELLED
    return P.EXIT_OK if c[P.STATUS_OK] + c[P.STATUS_SKIPPED] == len(jobs) else P.EXIT_ERROR
