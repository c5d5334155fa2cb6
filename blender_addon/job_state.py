"""The state of one lip-sync job of the add-on, whatever runs it (engine.py's warm engine): its
progress as the UI shows it, the engine's events folded into it, and the work folder rule. No bpy
here. (Why an engine stopped, in one line, is serve_client.py's, shared with `wav2lip batch`.)

A job owns a work folder: a hidden folder inside the destination's folder (same file system),
where the engine writes; only a finished result is renamed to its destination, never over an
existing file. On failure or cancel the folder is removed, so nothing partial is left.

Work folders are named by host and process (`.wav2lip-job-HOST-PID-xxxx`): the folder may be on
a project drive that several machines share, and a process id means something only on its own
machine. Leftovers of a Blender that was killed are removed by the next job in the same folder:
this host's at once when their process is gone; another host's, and those of older add-ons
(named by process id alone, so of any host), only when nothing in them changed for a day (no
job runs that long without writing), so a job running on another machine is never touched.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

from .wire import protocol

RUNNING = "running"
DONE = "done"
FAILED = "failed"
CANCELLED = "cancelled"

WORK_PREFIX = ".wav2lip-job-"  # hidden work folders inside the output folder: + HOST-PID-random
FOREIGN_STALE_AFTER = 24 * 3600.0  # seconds without a write before another host's folder counts as left over


@dataclass
class Progress:
    """What the UI shows. Updated by the reader thread; read by the UI (copy via `poll`)."""

    status: str = RUNNING
    stage: str = "starting"
    done: int = 0
    total: int = 0
    fraction: float = 0.0
    message: str = ""
    out: Optional[str] = None
    frames: Optional[int] = None
    seconds: Optional[float] = None
    detector: Optional[str] = None
    notes: List[str] = field(default_factory=list)  # the engine's `note` events, in order
    warm: Optional[bool] = None  # serve's done: the model was already loaded
    info: Dict[str, Any] = field(default_factory=dict)  # the done event's other keys (a fetch's title, sidecar)
    # The sync meter's reading in the done event (sync_meter.py shows it); None: none measured.
    sync_offset_measured: Optional[float] = None
    sync_confidence: Optional[float] = None
    sync_verdict: Optional[str] = None

    @property
    def text(self) -> str:
        if self.status == DONE:
            return "Done"
        if self.status in (FAILED, CANCELLED):
            return self.message or self.status.capitalize()
        label = protocol.STAGE_LABELS.get(self.stage, self.stage.replace("_", " ").capitalize())
        if self.stage == protocol.STAGE_FETCH:  # bytes, the total unknown during a range cut
            of = f" of {self.total / 1e6:.1f}" if self.total > 0 else ""
            return f"{label} {self.done / 1e6:.1f}{of} MB"
        if self.total > 0:
            return f"{label} {self.done}/{self.total}"
        return label + "..."


def _overall_fraction(stage: str, done: int, total: int) -> float:
    """Progress in 0..1 over all stages: the stages before the current one count fully (even if
    they never reported), the current one partly."""
    part = (min(max(done, 0), total) / total) if total > 0 else 0.0
    weights = protocol.STAGE_WEIGHTS
    if stage not in weights:
        return part
    order = list(protocol.STAGES)
    finished = sum(weights.get(s, 0.0) for s in order[: order.index(stage)])
    return min(1.0, finished + weights[stage] * part)


def _host_tag() -> str:
    """This machine's name as it goes into a folder name (no '-': that separates the parts)."""
    return re.sub(r"[^A-Za-z0-9_.]", "_", socket.gethostname() or "")[:63] or "host"


def make_workdir(dest: Optional[Path]) -> Path:
    """A new hidden work folder beside `dest` (same file system: the final rename never copies),
    or a temp folder without one. Its name carries this host and process id, so work folders
    that a Blender which was killed could not remove are removed here, next time."""
    if dest is not None:
        dest.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_workdirs(dest.parent)
        prefix = f"{WORK_PREFIX}{_host_tag()}-{os.getpid()}-"
        return Path(tempfile.mkdtemp(prefix=prefix, dir=str(dest.parent)))
    return Path(tempfile.mkdtemp(prefix="wav2lip_job_"))


def remove_stale_workdirs(folder: Path) -> None:
    """Remove the work folders in `folder` that no running job owns: this host's whose process
    is gone (POSIX: Windows' os.kill has no harmless probe), and any other (another host's, an
    older add-on's) that nothing wrote to for FOREIGN_STALE_AFTER."""
    try:
        names = [n for n in os.listdir(folder) if n.startswith(WORK_PREFIX)]
    except OSError:
        return
    here = _host_tag()
    for name in names:
        parts = name[len(WORK_PREFIX):].split("-")
        if len(parts) == 3 and parts[0] == here and parts[1].isdigit():
            pid = int(parts[1])
            if pid == os.getpid() or os.name != "posix":
                continue
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                shutil.rmtree(folder / name, ignore_errors=True)
            except OSError:
                pass  # alive (someone else's): leave it
        elif _untouched_for(folder / name, FOREIGN_STALE_AFTER):
            shutil.rmtree(folder / name, ignore_errors=True)


def _untouched_for(path: Path, seconds: float) -> bool:
    """Whether nothing in `path` (the folder, its files) was modified for `seconds`."""
    limit = time.time() - seconds
    try:
        if os.stat(path).st_mtime > limit:
            return False
        for root, dirs, files in os.walk(path):
            for n in dirs + files:
                if os.lstat(os.path.join(root, n)).st_mtime > limit:
                    return False
    except OSError:
        return False
    return True


def apply_event(p: Progress, event: Any) -> None:
    """Fold one engine event (protocol.Note, Progress, Done) into `p` (the caller holds its lock)."""
    P = protocol
    if isinstance(event, P.Note):
        message = event.message.strip()
        if message:
            p.notes.append(message)
    elif isinstance(event, P.Done):
        p.out = event.out or None
        p.frames = event.frames
        p.seconds = float(event.seconds)
        p.detector = event.detector or None
        p.warm = event.warm
        p.info = dict(event.extra)
        p.sync_offset_measured, p.sync_confidence = event.sync_offset_measured, event.sync_confidence
        p.sync_verdict = event.sync_verdict
    elif isinstance(event, P.Progress):
        if p.stage == P.STAGE_FETCH and event.stage != P.STAGE_FETCH:
            p.fraction = 0.0  # a URL input was fetched: the sync's own stages start the bar again
        p.stage = event.stage
        p.done = event.done
        p.total = event.total
        p.fraction = max(p.fraction, _overall_fraction(event.stage, p.done, p.total))


def deliver(produced: Path, dest: Optional[Path]) -> "tuple[str, str, Path]":
    """(status, message, final path) for an engine run that reported success: the file must be
    there, and is renamed to `dest` (when given) without replacing anything."""
    if not produced.is_file():
        return FAILED, f"the lip-sync engine finished but wrote no file ({produced})", produced
    if dest is None:
        return DONE, "", produced
    try:
        move_into_place(produced, dest)
    except FileExistsError:
        return FAILED, (f"cannot save the result as {dest}: a file or folder of that name "
                        "appeared meanwhile; nothing was overwritten, run Sync Lips again"), produced
    except OSError as exc:
        return FAILED, f"cannot save the result as {dest}: {exc.strerror or exc}", produced
    return DONE, "", dest


def move_into_place(src: Path, dest: Path) -> None:
    """Rename `src` to `dest` in one step, never replacing an existing `dest` (FileExistsError).
    A hard link claims the name atomically where the file system has them; elsewhere (FAT,
    some network shares) a rename after a check, which Windows' rename refuses to overwrite anyway."""
    try:
        os.link(src, dest)
    except FileExistsError:
        raise
    except OSError:
        if os.path.lexists(dest):
            raise FileExistsError(str(dest)) from None
        os.replace(src, dest)
        return
    try:
        os.unlink(src)
    except OSError:
        pass  # the work folder goes anyway
