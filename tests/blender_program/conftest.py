"""Fixtures for the tests that run the real Blender program (`blender` on PATH, 3.4 or newer:
Debian's package is 3.4.1; tools/test.sh installs it when it runs as root) and install.py's
command line.

Every test gets its own user folders (HOME, XDG_CONFIG_HOME in tmp_path), so the machine's real
Blender preferences are never read or written, and a thin engine environment layered on the
test environment, so install.py finds torch & co. without pip (a fresh engine venv takes a
minute or more of pip). One test makes a real one, as a user does
(test_install_blender.py::test_users_engine_is_a_plain_pip_install_that_the_addon_syncs_with)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
INSTALL = ROOT / "install.py"
MIN_BLENDER = (3, 4)
# The interpreter a user runs install.py with: this environment's base Python (no packages).
BASE_PYTHON = Path(os.path.realpath(getattr(sys, "_base_executable", sys.executable)))


def blender_version(exe: str) -> tuple[int, ...] | None:
    try:
        out = subprocess.run([exe, "--factory-startup", "--version"], capture_output=True, text=True, timeout=120).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.search(r"Blender (\d+)\.(\d+)\.(\d+)", out)
    return tuple(int(g) for g in m.groups()) if m else None


@pytest.fixture(scope="session")
def blender_exe() -> Path:
    """The real Blender program on PATH."""
    exe = shutil.which("blender")
    if exe is None:
        pytest.skip("no Blender program on PATH (tools/test.sh installs Debian's `blender` with apt when run as root)")
    version = blender_version(exe)
    if version is None or version[:2] < MIN_BLENDER:
        pytest.skip(f"{exe} is not a Blender 3.4+ that runs (version {version})")
    return Path(exe)


@pytest.fixture
def engine_env(tmp_path_factory) -> Path:
    """An engine venv that sees this test environment's packages (torch, PyAV, bpy, the
    editable core) through a .pth file, with its own prefix: what install.py records into it
    (detector weights!) stays out of the dev environment."""
    env = tmp_path_factory.mktemp("engine") / "venv"  # per test: cheap (no pip), and isolated
    venv.EnvBuilder(with_pip=False).create(env)
    site = Path(sysconfig.get_paths(vars={"base": str(env), "platbase": str(env)})["purelib"])
    (site / "wav2lip_test_layer.pth").write_text(f"import site; site.addsitedir({sysconfig.get_paths()['purelib']!r})\n")
    return env


def user_env(home: Path, path: str | None = None) -> dict[str, str]:
    """The environment of a user whose home is `home` (created)."""
    home.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BLENDER_USER_", "WAV2LIP_", "XDG_"))}
    env.update(HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"), XDG_DATA_HOME=str(home / ".local" / "share"),
               XDG_CACHE_HOME=str(home / ".cache"))
    if path is not None:
        env["PATH"] = path
    return env


def run_install(env: dict[str, str], *args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    """`python3 install.py ARGS` as a user types it."""
    return subprocess.run([str(BASE_PYTHON), str(INSTALL), *args], capture_output=True, text=True, env=env,
                          cwd=env["HOME"], timeout=timeout)


def run_blender(exe: Path, env: dict[str, str], code: str, *args: str) -> subprocess.CompletedProcess:
    """Blender in background with the user's preferences (no --factory-startup), running `code`."""
    res = subprocess.run([str(exe), "-b", *args, "--python-exit-code", "1", "--python-expr", code],
                         capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    return res


def python_only_path(folder: Path) -> str:
    """A PATH holding nothing but `python3` (no Blender program, no ffmpeg, no espeak)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "python3").symlink_to(BASE_PYTHON)
    return str(folder)


def fake_blender(folder: Path, version: str, scripts_run: bool = False) -> Path:
    """A `blender` that answers --version (and fails everything else unless `scripts_run`)."""
    folder.mkdir(parents=True, exist_ok=True)
    exe = folder / "blender"
    exe.write_text(f'#!/bin/sh\nif [ "$1" = --factory-startup ] && [ "$2" = --version ]; then echo "Blender {version}"; exit 0; fi\n'
                   f'echo "Segmentation fault" >&2\nexit {0 if scripts_run else 139}\n')
    exe.chmod(0o755)
    return exe
