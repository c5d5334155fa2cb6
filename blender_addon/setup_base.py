"""What every step of the engine's set-up shares: its error, how it runs a program, where the
engine environment is, the optional parts, and the stamp that says a set-up finished.

Standard library only, no bpy. The set-up is these modules: setup_base (this), setup_python
(which Python makes the environment), setup_pip (the build sources and pip), engine_config (the
record the add-on and the core read), engine_setup (the set-up itself, in order), setup_weights
(checkpoint and detector weights checks), setup_status (the status table), setup_task and
setup_cli (the add-on's background process and its command line). install.py loads them by
their paths as one package (the add-on's __init__ needs bpy); the add-on imports them.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, Optional, Sequence

# Optional parts a user may add to the engine (pyproject's extras) and a module each installs.
OPTIONAL_EXTRAS = {"int8": "nncf", "landmarks": "dlib", "enhance": "spandrel", "ray": "ray",
                   "url": "yt_dlp", "identity": "face_recognition_models"}
# What each does, for the add-on's checkboxes and the status table.
EXTRA_HELP = {
    "int8": "NNCF: Precision int8, about twice as fast on a CPU",
    "landmarks": "dlib: Blend mouth and Align Face (its model is non-commercial)",
    "enhance": "spandrel: Enhance face (HD) restorers",
    "ray": "Ray: wav2lip batch --ray across machines",
    "url": "yt-dlp, deno and ffmpeg: video from a URL (Add > Movie from URL, --face URL)",
    "identity": "dlib's face recognition: a picked face followed across cuts (Pick Face, --face-at, --speaker)",
}
# Written into the environment last, when a set-up finished (what a later run trusts).
STAMP_FILE = "wav2lip-installed.txt"


class SetupError(Exception):
    """A step failed; the message (one line) says what to do."""


def run(cmd: Sequence, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], **kw)


def last_line(text: Optional[str]) -> str:
    lines = [ln.strip() for ln in (text or "").splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def clean_env() -> Dict[str, str]:
    """This process's environment without what would make another Python use Blender's (or
    this one's) modules."""
    env = dict(os.environ)
    for key in ("PYTHONHOME", "PYTHONPATH", "PYTHONSTARTUP", "__PYVENV_LAUNCHER__"):
        env.pop(key, None)
    return env


# --- where things are -----------------------------------------------------------------------

def default_venv() -> Path:
    if os.environ.get("WAV2LIP_ENGINE_VENV"):
        return Path(os.environ["WAV2LIP_ENGINE_VENV"]).expanduser()
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    else:
        base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return base / "wav2lip-blender" / "engine"


def venv_python(env: Path) -> Path:
    return env / ("Scripts/python.exe" if sys.platform == "win32" else "bin/python")


def installed(env: Path) -> bool:
    """Whether a set-up of `env` finished (its stamp is written last)."""
    return venv_python(env).exists() and (env / STAMP_FILE).is_file()
