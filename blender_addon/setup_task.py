"""Set Up Engine's background process, the add-on's side: setup_cli.py's command line run in a
process of its own (JSON lines on stdout, one per progress step or pip line, the last one the
result), read by a thread and polled by the UI, so that Blender stays responsive; and Cancel,
which stops it with everything it started. Standard library only, no bpy.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Tuple

from .engine_setup import Options
from .setup_base import clean_env, run

HERE = Path(__file__).resolve().parent
PACKAGE = "wav2lip_setup"
# The child's first lines: this folder's standard-library modules as one package (their relative
# imports need one, and the add-on's own __init__ needs bpy), then setup_cli's command line.
# install.py loads them the same way (its `addon_module`).
CHILD = (
    "import importlib, sys, types\n"
    f"pkg = types.ModuleType({PACKAGE!r})\n"
    "pkg.__path__ = [sys.argv.pop(1)]\n"
    f"sys.modules[{PACKAGE!r}] = pkg\n"
    f"sys.exit(importlib.import_module({PACKAGE!r} + '.setup_cli').main(sys.argv[1:]))\n"
)


@dataclass
class Task:
    """setup_cli's command line run in a process group of its own, its JSON lines collected by a
    thread; the UI polls it (nothing here blocks)."""

    args: List[str]
    python: str = sys.executable
    events: List[dict] = field(default_factory=list)
    proc: Optional[subprocess.Popen] = None
    cancelled: bool = False

    def start(self) -> "Task":
        kw: dict = {"start_new_session": True} if os.name == "posix" else {
            "creationflags": getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0)}
        self.proc = subprocess.Popen([self.python, "-I", "-c", CHILD, str(HERE), *self.args],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, env=clean_env(), **kw)
        threading.Thread(target=self._read, name="wav2lip-setup-reader", daemon=True).start()
        return self

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                event = json.loads(line)
            except ValueError:
                event = {"log": line.rstrip()}  # a Python crash's traceback, say
            self.events.append(event if isinstance(event, dict) else {"log": str(event)})

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def result(self) -> Optional[dict]:
        """The last event once the process has ended (with 'ok'), else None."""
        if self.running() or self.proc is None:
            return None
        self.proc.wait()
        final = next((e for e in reversed(self.events) if "ok" in e), None)
        if final is None:
            logs = [e["log"] for e in self.events if e.get("log")]
            why = "cancelled" if self.cancelled else (logs[-1] if logs else f"exit code {self.proc.returncode}")
            final = {"ok": False, "error": why}
        return final

    def progress(self) -> Tuple[float, str, str]:
        """(fraction, step text, last log line)."""
        f, text, log = 0.0, "starting", ""
        for e in self.events:
            if "progress" in e:
                f, text = float(e["progress"]), str(e.get("text") or text)
            if e.get("log"):
                log = str(e["log"])
        return f, text, log

    def cancel(self) -> None:
        """Stop the script and everything it started (pip, its builds)."""
        self.cancelled = True
        if not self.running():
            return
        assert self.proc is not None
        try:
            if os.name == "posix":
                os.killpg(self.proc.pid, signal.SIGKILL)
            else:
                run(["taskkill", "/F", "/T", "/PID", self.proc.pid], capture_output=True)
        except OSError:
            pass
        self.proc.wait()


def setup_args(o: Options) -> List[str]:
    args = ["setup", "--venv", str(o.env), "--source", str(o.source)]
    for x in o.extras:
        args += ["--with", x]
    if o.torch_index_url:
        args += ["--torch-index-url", o.torch_index_url]
    if o.find_links:
        args += ["--find-links", o.find_links]
    for p in o.pythons:
        args += ["--python", p]
    for d in o.config_dirs:
        args += ["--config-dir", str(d)]
    return args
