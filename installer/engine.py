"""The engine environment as install.py makes it: the add-on's own set-up (engine_setup, shared
with Set Up Engine) run from this checkout, the Python version the engine will run, and the
command a message tells the user to re-run.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

from . import ROOT, addon_module, say

setup = addon_module("engine_setup")
base = addon_module("setup_base")
pip = addon_module("setup_pip")

# The one Python the pinned bpy module (pyproject's `bpy` extra, bpy 5.0) exists for: without a
# Blender program, headless runs and --demo need an engine on this version.
BPY_PYTHON = (3, 11)


def install_command(env: Path) -> str:
    """`python3 install.py`, with the --venv that reaches `env` when it is not the default: a
    suggested command must act on the engine the user set up, not on the default one."""
    if env == base.default_venv().expanduser().resolve():
        return "python3 install.py"
    return f"python3 install.py --venv {shlex.quote(str(env))}"


def engine_python_version(env: Path) -> tuple[int, int]:
    """The Python version the engine in `env` runs: an existing one's own, else this one's
    (a new environment is made with the Python running install.py)."""
    py = base.venv_python(env)
    if py.exists():
        try:
            res = base.run([py, "-c", "import sys; print(*sys.version_info[:2])"], capture_output=True, text=True,
                           timeout=60)
            major, minor = map(int, res.stdout.split())
            return major, minor
        except (OSError, subprocess.SubprocessError, ValueError):
            pass  # a broken environment: ensure_engine says so
    return sys.version_info[0], sys.version_info[1]


def torch_pin(pyproject: Path = ROOT / "pyproject.toml") -> str:
    return pip.torch_pin(pyproject)


def stage_source(dest: Path) -> Path:
    """A clean copy of this checkout's build sources (see setup_pip.stage_source)."""
    return pip.stage_source(ROOT, dest)


def ensure_engine(env: Path, *, torch_index_url: str | None, with_bpy: bool, dev: bool,
                  optional: tuple[str, ...] = ()) -> Path:
    extras = (*(["bpy"] if with_bpy else []), *optional, *(["test"] if dev else []))
    o = setup.Options(env=env, source=ROOT, extras=extras, torch_index_url=torch_index_url or "",
                      pythons=(sys.executable,), editable=dev, keep_dev_env=True)
    # pip's own lines stay out of the terminal (as with pip -q); a failure quotes its last one.
    return setup.ensure_engine(o, lambda _f, text: say(text) if text else None)
