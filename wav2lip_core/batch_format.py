"""The JOBS files of `wav2lip batch` and its report: their keys, and a job as CLI arguments and back.

Standard library only; it imports protocol.py (the option names) and nothing else of the core. The
add-on loads it by path, as it loads protocol.py (protocol.ADDON_FILES): it writes JOBS files
and reads reports. Reading jobs, resume and the report file are in jobs/jobfile.py.
"""

from __future__ import annotations

import json
from typing import Tuple

from . import protocol as P

# `wav2lip batch JOBS` reads one job per line: a JSON object whose keys are the one-shot CLI's long
# options without the dashes ("audio-start" and "audio_start" both work). A value is a string or a
# number; a list for an option taking several values (box, pads, face-at, audible); true for a
# flag (no-smooth, no-cache); false or null: not given. "source-times" may be an inline list of
# seconds instead of a file. "id" names the job in the report (default: its line number).
# Relative paths are relative to the JOBS file's folder; "face" and "audio" may be http(s) URLs
# instead (fetched by the engine first, through its cache). The add-on writes and reads these files.
JOB_ID = "id"
# Options that may hold an inline JSON list in a job; the CLI wants a file, so the runner writes one.
JOB_INLINE_LISTS: Tuple[str, ...] = (P.OPT_SOURCE_TIMES,)
# Options given several times: a list of lists in a job, one inner list per use
# ("speaker": [[X, Y, "a.wav@0", T], [X, Y, "b.wav@2.5"]]).
JOB_REPEATED: Tuple[str, ...] = (P.OPT_SPEAKER,)
# Options naming files or folders (resolved against the JOBS file's folder).
JOB_PATHS: Tuple[str, ...] = (P.OPT_FACE, P.OPT_AUDIO, P.OPT_CHECKPOINT, P.OPT_OUT, P.OPT_DETECTOR_WEIGHTS,
                              P.OPT_SOURCE_TIMES, P.OPT_ENHANCE, P.OPT_OUT_AUDIO, "--cache-dir")
# Of those, the files a result is made from (resume re-runs a job when one of them changed).
JOB_INPUTS: Tuple[str, ...] = (P.OPT_FACE, P.OPT_AUDIO, P.OPT_CHECKPOINT, P.OPT_DETECTOR_WEIGHTS, P.OPT_SOURCE_TIMES,
                               P.OPT_ENHANCE, P.OPT_OUT_AUDIO)  # (and each --speaker's audio: jobfile.fingerprint)

# The report (`--report R.jsonl`): one JSON object per job.
REPORT_ID = "id"
REPORT_LINE = "line"  # the job's line number in JOBS (1-based)
REPORT_STATUS = "status"
REPORT_SECONDS = "seconds"
REPORT_OUT = "out"  # absolute path of the output
REPORT_FRAMES = "frames"
REPORT_ERROR = "error"  # one line, for failed jobs
REPORT_FINGERPRINT = "fingerprint"  # the request (options and its inputs' size/mtime): resume's key
REPORT_OUT_SIZE = "out_size"
REPORT_OUT_MTIME_NS = "out_mtime_ns"
STATUS_OK = "ok"
STATUS_FAILED = "failed"
STATUS_SKIPPED = "skipped"  # done by an earlier run from the same request, output unchanged
STATUS_CANCELLED = "cancelled"
JOB_STATUSES: Tuple[str, ...] = (STATUS_OK, STATUS_FAILED, STATUS_SKIPPED, STATUS_CANCELLED)


def job_option(key: str) -> str:
    """A job key as the CLI's option: "audio_start" -> "--audio-start"."""
    return "--" + str(key).strip().lstrip("-").replace("_", "-")


def job_args(job: dict, list_file=None) -> list:
    """The CLI arguments for a job (its "id" left out). `list_file(option, values) -> path` writes
    an inline list (JOB_INLINE_LISTS) to a file; without it such a list is refused. ValueError
    with a one-line message for a value that cannot be an argument."""
    args: list = []
    for key, value in job.items():
        if key == JOB_ID or value is None or value is False:
            continue
        opt = job_option(key)
        if value is True:
            args.append(opt)
        elif isinstance(value, list) and opt in JOB_INLINE_LISTS:
            if list_file is None:
                raise ValueError(f'"{key}": give a file name here, not a list')
            args += [opt, str(list_file(opt, value))]
        elif isinstance(value, list) and opt in JOB_REPEATED:
            if not value or not all(isinstance(v, list) and v and all(_scalar(x) for x in v) for v in value):
                raise ValueError(f'"{key}": give a list of lists, one per {opt}')
            for values in value:
                args += [opt, *(_arg(v) for v in values)]
        elif isinstance(value, list):
            if not all(_scalar(v) for v in value):
                raise ValueError(f'"{key}": a list may hold only strings and numbers')
            args += [opt, *(_arg(v) for v in value)]
        elif _scalar(value):
            args += [opt, _arg(value)]
        else:
            raise ValueError(f'"{key}": give a string, a number, a list or true, not {type(value).__name__}')
    return args


def job_from_args(args: list, inline_lists: bool = False) -> dict:
    """A job for CLI arguments (job_args' inverse): numbers as numbers where they read back the
    same, several values as a list, a flag as true. `inline_lists`: read the files named by
    JOB_INLINE_LISTS options into the job, so it does not depend on a temporary file."""
    job: dict = {}
    key = None
    for token in [str(a) for a in args]:
        if token.startswith("--") and len(token) > 2:
            key = token[2:]
            if token in JOB_REPEATED:
                job.setdefault(key, []).append([])
            else:
                job[key] = True
        elif key is None:
            raise ValueError(f"{token!r} is not an option's value: options start with --")
        elif "--" + key in JOB_REPEATED:
            job[key][-1].append(_number(token))
        elif key is None:
            raise ValueError(f"{token!r} is not an option's value: options start with --")
        else:
            value = _number(token)
            held = job[key]
            job[key] = value if held is True else (held + [value] if isinstance(held, list) else [held, value])
    if inline_lists:
        for opt in JOB_INLINE_LISTS:
            path = job.get(opt[2:])
            if isinstance(path, str):
                with open(path, encoding="utf-8") as f:
                    job[opt[2:]] = json.load(f)
    return job


def _scalar(value: object) -> bool:
    return isinstance(value, (str, int, float)) and not isinstance(value, bool)


def _arg(value: object) -> str:
    if isinstance(value, float):
        return P.plain_number(value)
    return value if isinstance(value, str) else json.dumps(value)


def _number(token: str):
    for kind in (int, float):
        try:
            value = kind(token)
        except ValueError:
            continue
        return value if _arg(value) == token else token
    return token
