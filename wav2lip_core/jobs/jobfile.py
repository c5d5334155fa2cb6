"""JOBS files and batch reports: reading jobs, what makes two runs "the same request", and the
report that lets `wav2lip batch` resume. Standard library only (the batch driver never needs
torch; the key names are in batch_format.py).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from .. import __version__, batch_format as J, protocol as P
from ..errors import Wav2LipError
from ..files import write_atomic
from ..media.fetch import is_url


@dataclass
class Job:
    line: int  # 1-based line number in JOBS
    id: str
    options: dict = field(default_factory=dict)  # keys as CLI options ("--face"), paths absolute
    error: str | None = None  # a line that is not a job: failed without running
    fingerprint: str = ""

    @property
    def out(self) -> str | None:
        out = self.options.get(P.OPT_OUT)
        return out if isinstance(out, str) else None

    def args(self, list_file=None) -> list[str]:
        """The CLI arguments; `list_file` as batch_format.job_args takes it (inline source times)."""
        return J.job_args({k[2:]: v for k, v in self.options.items()}, list_file)


def read_jobs(path: str | os.PathLike) -> list[Job]:
    """Every job in a JOBS file; a line that cannot be a job comes back with `error` set.
    Wav2LipError when the file cannot be read."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise Wav2LipError(f"cannot read the jobs file {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise Wav2LipError(f"{path} is not a text file: give a JSON-lines file, one job per line") from None
    base = path.resolve().parent
    jobs = []
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        jobs.append(parse_job(n, line, base))
    outs: dict[str, int] = {}
    for job in jobs:  # two jobs writing one file would race and overwrite each other
        if job.error is None and job.out is not None:
            if job.out in outs:
                job.error = f"{P.OPT_OUT} {job.out} is also the output of line {outs[job.out]}"
            else:
                outs[job.out] = job.line
    return jobs


def parse_job(line_no: int, line: str, base: Path) -> Job:
    try:
        obj = json.loads(line)
    except ValueError as exc:
        return Job(line_no, str(line_no), error=f"not a JSON object ({exc.msg} at column {exc.colno})")
    if not isinstance(obj, dict):
        return Job(line_no, str(line_no), error="a job must be a JSON object of options, e.g. {\"face\": ..., \"out\": ...}")
    job_id = obj.get(J.JOB_ID)
    job = Job(line_no, str(job_id) if job_id not in (None, "") else str(line_no))
    try:
        J.job_args(obj, lambda opt, values: "-")  # the values' types, before anything runs
    except ValueError as exc:
        job.error = str(exc)
        return job
    for key, value in obj.items():
        if key == J.JOB_ID:
            continue
        opt = J.job_option(key)
        if opt in J.JOB_PATHS and isinstance(value, str) and value and not is_url(value):  # (a URL is fetched)
            value = str(base / os.path.expanduser(value))  # an absolute value stays as it is
            value = os.path.normpath(value)
        if opt == P.OPT_SPEAKER:  # [X, Y, "AUDIO@SEC", T]: the audio against the JOBS folder too
            value = [[*v[:2], _speaker_audio(base, v[2]), *v[3:]] if len(v) > 2 and isinstance(v[2], str) else v
                     for v in value]
        job.options[opt] = value
    job.fingerprint = fingerprint(job.options)
    return job


def _speaker_audio(base, text: str) -> str:
    """A speaker's "AUDIO[@SEC]" with AUDIO made absolute against the JOBS file's folder."""
    audio, at = P.split_speaker_audio(text)
    return os.path.normpath(str(base / os.path.expanduser(audio))) + at


def fingerprint(options: dict) -> str:
    """What makes a request the same: the engine's version, the options (sorted) and each input
    file's size and modification time (not its content: hashing every clip on each resume would
    cost as much as reading it)."""
    inputs = {}
    files = [(opt, options.get(opt)) for opt in J.JOB_INPUTS]
    for k, speaker in enumerate(options.get(P.OPT_SPEAKER) or []):  # [X, Y, "AUDIO@SEC", T]
        if isinstance(speaker, list) and len(speaker) > 2 and isinstance(speaker[2], str):
            files.append((f"{P.OPT_SPEAKER}-{k}", P.split_speaker_audio(speaker[2])[0]))
    for opt, value in files:
        if isinstance(value, str):
            try:
                st = os.stat(value)
                inputs[opt] = [st.st_size, st.st_mtime_ns]
            except OSError:
                inputs[opt] = None
    blob = json.dumps({"version": __version__, "options": sorted(options.items()), "inputs": inputs},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def default_report(jobs_path: str | os.PathLike) -> Path:
    """shots.jsonl -> shots.report.jsonl, beside it: a second run finds it without flags."""
    p = Path(jobs_path)
    return p.with_name(f"{p.stem if p.suffix else p.name}.report.jsonl")


def out_state(path: str | None) -> tuple[int, int] | None:
    try:
        st = os.stat(path) if path else None
    except OSError:
        return None
    return (st.st_size, st.st_mtime_ns) if st else None


def read_done(report: str | os.PathLike) -> dict[str, dict]:
    """Earlier successes in a report, by fingerprint (the last entry wins); {} if there is none.
    A line that is not a report entry is ignored: the report is only a cache of finished work."""
    done: dict[str, dict] = {}
    try:
        with open(report, encoding="utf-8") as f:
            lines = f.readlines()
    except (OSError, UnicodeDecodeError):
        return done
    for line in lines:
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and entry.get(J.REPORT_STATUS) in (J.STATUS_OK, J.STATUS_SKIPPED):
            done[str(entry.get(J.REPORT_FINGERPRINT))] = entry
    return done


def still_done(job: Job, done: dict[str, dict]) -> dict | None:
    """The earlier entry when `job` was done from the same request and its output is the file
    that run wrote (same size and time); else None."""
    entry = done.get(job.fingerprint) if job.error is None else None
    if entry is None or entry.get(J.REPORT_OUT) != job.out:
        return None
    state = out_state(job.out)
    if state is None or [entry.get(J.REPORT_OUT_SIZE), entry.get(J.REPORT_OUT_MTIME_NS)] != list(state):
        return None
    return entry


class Report:
    """The report file, rewritten each run: the skipped jobs first (written at once, so an
    interrupted run still remembers them), then each job as it ends, flushed line by line."""

    def __init__(self, path: str | os.PathLike, first: list[dict]):
        self.path = Path(path)
        write_atomic(str(self.path), "".join(json.dumps(e) + "\n" for e in first).encode("utf-8"))
        self._file = open(self.path, "a", encoding="utf-8")

    def add(self, entry: dict) -> None:
        self._file.write(json.dumps(entry) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def entry(job: Job, status: str, seconds: float = 0.0, error: str | None = None,
          frames: int | None = None) -> dict:
    """One report line; an ok job's line records its output's size and time for resume."""
    e = {J.REPORT_ID: job.id, J.REPORT_LINE: job.line, J.REPORT_STATUS: status,
         J.REPORT_SECONDS: round(seconds, 3), J.REPORT_OUT: job.out}
    if frames is not None:
        e[J.REPORT_FRAMES] = frames
    if error:
        e[J.REPORT_ERROR] = " ".join(str(error).split())
    if status in (J.STATUS_OK, J.STATUS_SKIPPED):
        state = out_state(job.out)
        e[J.REPORT_FINGERPRINT] = job.fingerprint
        if state is not None:
            e[J.REPORT_OUT_SIZE], e[J.REPORT_OUT_MTIME_NS] = state
    return e


def check_out(job: Job) -> str | None:
    """Why `job` cannot write its output here (fetched results are written by the batch itself),
    or None: no --out, its folder missing, or it is one of the job's inputs."""
    out = job.out
    if out is None:
        return f"the job has no \"{P.OPT_OUT[2:]}\""
    if not os.path.isdir(os.path.dirname(out)):
        return f"{os.path.dirname(out)}: output folder does not exist; create it or choose another {P.OPT_OUT}"
    for opt in J.JOB_INPUTS:
        src = job.options.get(opt)
        if isinstance(src, str) and os.path.exists(out) and os.path.exists(src) and os.path.samefile(src, out):
            return f"{out}: refusing to overwrite the input {src}; choose another {P.OPT_OUT}"
    return None


def list_writer(folder: str | os.PathLike, line: int):
    """batch_format.job_args' list_file: an inline list (source times) as a JSON file in `folder`."""

    def write(opt: str, values: list) -> str:
        path = Path(folder) / f"line{line}{opt.replace('-', '_')}.json"
        path.write_text(json.dumps(values), encoding="utf-8")
        return str(path)

    return write
