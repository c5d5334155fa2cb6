"""`wav2lip batch JOBS`: many lip-sync jobs from a JSON-lines file, on this machine (N warm
engines, `wav2lip serve` subprocesses, one job at a time each: batch_local.py) or as tasks on a
Ray cluster (batch_ray.py). The file format and the report's keys are in batch_format.py; reading jobs, the resume rule and the report file are in jobfile.py.

One bad job never stops the others; the exit code is 0 only when every job succeeded or was
skipped as already done. Ctrl+C (or SIGTERM) cancels the running jobs, which leave no output.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

from . import jobfile
from .. import batch_format as J, protocol as P
from .console import interrupt_on_sigterm
from ..errors import Wav2LipError

RAY_HINT = 'pip install "wav2lip-blender[ray]"'  # the version pin lives in pyproject.toml only

EPILOG = f"""\
JOBS holds one job per line, a JSON object whose keys are the options of `wav2lip` without the
dashes, e.g.
  {{"id": "shot-1", "face": "shot1.mp4", "audio": "fr/shot1.wav", "checkpoint": "wav2lip_gan.pth", "out": "fr/shot1_sync.mp4"}}
  {{"face": "shot2.mp4", "audio": "fr/shot2.wav", "checkpoint": "wav2lip_gan.pth", "out": "fr/shot2_sync.mp4", "box": [40, 300, 60, 320], "no-smooth": true}}
Lists give options several values, true is a flag, "source-times" may be an inline list of
seconds; relative paths are relative to the JOBS file's folder; blank lines and lines starting
with # are ignored. A line that is not a valid job fails alone.

The report (default: JOBS's name with .report.jsonl, beside it) gets one JSON line per job: id,
line, status ({', '.join(J.JOB_STATUSES)}), seconds, out, frames, and a one-line error. Running the
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
    r = p.add_argument_group(f"Ray ({RAY_HINT})")
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
        self.counts: Counter = Counter({J.STATUS_SKIPPED: done_before})
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
            if status == J.STATUS_FAILED and self._show:
                self._bar.write(f"line {job.line} ({job.id}): failed: {' '.join(str(error).split())}", file=sys.stderr)
            self._bar.update(1)
            self._postfix()

    def _postfix(self) -> None:
        rate = self.frames / max(time.perf_counter() - self._t0, 1e-6)
        failed = self.counts[J.STATUS_FAILED]
        self._bar.set_postfix_str(f"{self.frames} frames, {rate:.1f} frames/s" + (f", {failed} failed" if failed else ""))

    def close(self) -> None:
        self._bar.close()


# --- the command --------------------------------------------------------------------------------

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
            skipped.append(jobfile.entry(job, J.STATUS_SKIPPED, frames=before.get(J.REPORT_FRAMES)))
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
        tally.finish(job, J.STATUS_FAILED, error=job.error)
    tmp = Path(tempfile.mkdtemp(prefix="wav2lip-batch-"))
    signal.signal(signal.SIGTERM, interrupt_on_sigterm)
    try:
        if not todo:
            interrupted = False
        elif args.ray is not None:
            from .batch_ray import RaySettings, run_ray

            settings = RaySettings(address=args.ray or None, fetch=args.fetch, retries=args.retries,
                                   cpus_per_task=args.cpus_per_task)
            interrupted = run_ray(todo, settings, tally)
        else:
            from .batch_local import run_local

            interrupted = run_local(todo, args.workers, tally, tmp)
    except Wav2LipError as exc:  # the cluster could not be reached: the jobs did not run
        for job in todo:
            tally.finish(job, J.STATUS_FAILED, error=str(exc))
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
    print(f"{len(jobs)} jobs: {c[J.STATUS_OK]} ok, {c[J.STATUS_SKIPPED]} skipped, {c[J.STATUS_FAILED]} failed, "
          f"{c[J.STATUS_CANCELLED]} cancelled; report: {report_path}", file=sys.stderr)
    if interrupted:
        return P.EXIT_CANCELLED
    return P.EXIT_OK if c[J.STATUS_OK] + c[J.STATUS_SKIPPED] == len(jobs) else P.EXIT_ERROR
