"""JOBS files for `wav2lip batch` as the add-on writes them, and batch reports as it reads them
back (the studio round trip, studio.py). No bpy here: tests load it without Blender. The keys
and statuses are batch_format.py's.

A job's "id" names its source strip and the scene range it was made for, e.g.
`Scene/Face@9+30` (scene `Scene`, strip `Face`, frames 9 to 38): enough to find the strip
again and to tell whether it moved or changed since. `/`, `@` and `%` inside names are
%-escaped, so any name reads back exactly.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence
from urllib.parse import unquote

from .wire import batch_format, files, protocol

P = protocol
J = batch_format

# How the one-shot CLI prints progress: no part of the result, and batch runs jobs on its own
# engines, so a JOBS line leaves it out. Every other argument is the add-on's own.
LEFT_OUT: tuple = (P.OPT_PROGRESS,)
_TIMES_KEY = P.OPT_SOURCE_TIMES[2:]
_ID_TAIL = re.compile(r"@(-?\d+)\+(\d+)$")


class ReportError(Exception):
    """The report cannot be read; the message says why."""


@dataclass(frozen=True)
class StripRef:
    """What a job's id says: the source strip and the scene frames the clip was made for."""

    scene: str
    strip: str
    frame: int  # first scene frame (where the clip goes)
    frames: int  # how many

    @property
    def label(self) -> str:
        return f"'{self.strip}'"


def _escape(name: str) -> str:
    return name.replace("%", "%25").replace("/", "%2F").replace("@", "%40")


def job_id(ref: StripRef) -> str:
    return f"{_escape(ref.scene)}/{_escape(ref.strip)}@{int(ref.frame)}+{int(ref.frames)}"


def parse_job_id(text: object) -> Optional[StripRef]:
    """The StripRef a job id names, or None for an id this add-on did not write."""
    if not isinstance(text, str):
        return None
    m = _ID_TAIL.search(text)
    if m is None:
        return None
    names = text[:m.start()].split("/")
    if len(names) != 2 or not all(names):
        return None
    return StripRef(unquote(names[0]), unquote(names[1]), int(m.group(1)), int(m.group(2)))


def job_line(ref: StripRef, engine_args: Sequence[str], source_times: Optional[Sequence[float]]) -> dict:
    """A JOBS line for the arguments the add-on sends its engine: the same options and values
    (numbers as numbers), the source times inline instead of in a temporary file."""
    args: List[str] = []
    skip = 0
    for a in engine_args:
        if skip:
            skip -= 1
        elif a in LEFT_OUT:
            skip = 1  # the option and its value
        else:
            args.append(str(a))
    job: dict = {J.JOB_ID: job_id(ref)}
    job.update(J.job_from_args(args))  # each --speaker its own list (batch_format.JOB_REPEATED)
    if source_times is not None:
        job[_TIMES_KEY] = [float(t) for t in source_times]
    elif _TIMES_KEY in job:
        raise ValueError("job_line: the arguments name a source-times file; give the times themselves")
    return job


def write_jobs(path: str, jobs: Sequence[dict]) -> None:
    """One JSON line per job, written whole or not at all (files.write_atomic): never half a JOBS file,
    with the user's normal permissions (the farm's other users read it)."""
    files.write_atomic(path, "".join(json.dumps(job) + "\n" for job in jobs).encode("utf-8"))


@dataclass(frozen=True)
class ReportEntry:
    id: str
    status: str
    out: str  # absolute ("" when the report has none)
    error: str = ""
    line: Optional[int] = None  # the job's line in JOBS

    @property
    def ref(self) -> Optional[StripRef]:
        return parse_job_id(self.id)

    @property
    def label(self) -> str:
        ref = self.ref
        return ref.label if ref is not None else f"job {self.id}"


def read_report(path: str) -> List[ReportEntry]:
    """The jobs of a batch report (`--report R.jsonl`), one per id (a later line wins, as when
    reports are concatenated). ReportError when the file cannot be read or holds no job."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError as exc:
        raise ReportError(f"cannot read the report {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ReportError(f"{path} is not a text file: choose the .jsonl report `wav2lip batch` wrote") from None
    by_id: Dict[str, ReportEntry] = {}
    for raw in lines:
        try:
            obj = json.loads(raw) if raw.strip() else None
        except ValueError:
            obj = None
        if not isinstance(obj, dict) or not isinstance(obj.get(J.REPORT_STATUS), str):
            continue  # not a report line: the report is read for what it says about jobs
        line = obj.get(J.REPORT_LINE)
        entry = ReportEntry(
            id=str(obj.get(J.REPORT_ID, line)),
            status=str(obj[J.REPORT_STATUS]),
            out=str(obj.get(J.REPORT_OUT) or ""),
            error=" ".join(str(obj.get(J.REPORT_ERROR) or "").split()),
            line=line if isinstance(line, int) else None,
        )
        by_id.pop(entry.id, None)
        by_id[entry.id] = entry
    if not by_id:
        raise ReportError(f"{path} holds no batch jobs: choose the report `wav2lip batch --report` wrote")
    return list(by_id.values())


def problem(entry: ReportEntry) -> str:
    """One line for a job whose clip is not to be inserted, '' for an ok or skipped one."""
    if entry.status in (J.STATUS_OK, J.STATUS_SKIPPED):
        return ""
    if entry.status == J.STATUS_FAILED:
        return f"{entry.label}: the batch job failed: {entry.error or 'no message'}"
    if entry.status == J.STATUS_CANCELLED:
        return f"{entry.label}: the batch job was cancelled; run the batch again to finish it"
    return f"{entry.label}: unknown status '{entry.status}' in the report; nothing inserted"
