"""Which Python makes the engine environment: one in the versions torch supports, with venv and
ensurepip; and the one line saying what to install when none here can. Standard library only.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple

from .setup_base import SetupError, clean_env, last_line, run, venv_python

# Pythons the engine can run on (torch wheels, the core's own floor).
PYTHON_RANGE = ((3, 10), (3, 12))

PROBE_PYTHON = "import sys, venv, ensurepip; print(*sys.version_info[:2])"


def python_candidates(first: Sequence[str] = ()) -> List[str]:
    """`first` (e.g. Blender's own Python), then the Pythons on PATH, newest first."""
    found = [p for p in first if p]
    for name in ("python3.12", "python3.11", "python3.10", "python3"):
        p = shutil.which(name)
        if p:
            found.append(p)
    return list(dict.fromkeys(found))  # first place wins


def python_version(python: str) -> Optional[Tuple[int, int]]:
    """The version of a Python that has venv and ensurepip, else None."""
    try:
        res = run([python, "-I", "-c", PROBE_PYTHON], capture_output=True, text=True, timeout=60,
                  env=clean_env())
        major, minor = map(int, res.stdout.split())
    except (OSError, subprocess.SubprocessError, ValueError):
        return None
    return (major, minor) if res.returncode == 0 else None


def what_to_install() -> str:
    """The one thing a user installs when no Python here can make the environment."""
    if sys.platform.startswith("linux") and Path("/etc/debian_version").exists():
        return "install Python's venv module: sudo apt install python3-venv"
    if sys.platform.startswith("linux"):
        return "install Python 3.11 with its venv module from your distribution (e.g. python3.11 and python3-venv)"
    return "install Python 3.11 from python.org"



def create_env(env: Path, pythons: Sequence[str], say: Callable[[str], None]) -> str:
    """Make the environment at `env` with the first of `pythons` that can (right version, venv
    with pip); returns that Python. SetupError, one line, when none can."""
    tried: List[str] = []
    for python in pythons:
        version = python_version(python)
        if version is None:
            tried.append(f"{python} (no venv/ensurepip)")
            continue
        if not PYTHON_RANGE[0] <= version <= PYTHON_RANGE[1]:
            tried.append(f"{python} ({version[0]}.{version[1]})")
            continue
        say(f"creating the engine environment in {env} with Python {version[0]}.{version[1]} ({python})")
        res = run([python, "-I", "-m", "venv", env], capture_output=True, text=True, env=clean_env())
        if res.returncode == 0 and venv_python(env).exists():
            return python
        tried.append(f"{python} ({last_line(res.stderr) or last_line(res.stdout) or 'venv failed'})")
        shutil.rmtree(env, ignore_errors=True)
    raise SetupError(f"no Python here can make the engine environment ({'; '.join(tried) or 'none found'}): "
                     f"{what_to_install()}, then set up the engine again")
