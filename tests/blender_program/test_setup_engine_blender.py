"""Set Up Engine in the real Blender program (Debian's 3.4.1), background mode, fresh user home:
the release zip installed with Blender's own Install (the add-on with engine_src/ inside, nothing
from the checkout), the operator makes the engine with a real, non-editable pip install into a new
environment in the default place, records it where the add-on reads it, and its check table
says the engine works."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from .conftest import ROOT, user_env
from .test_install_blender import LOCATE, user_pip_cache

import sys

sys.path.insert(0, str(ROOT))
import install  # noqa: E402

ADDON = install.ADDON_ID

def set_up_code(**kw: str) -> str:
    """Enable the installed add-on and press Set Up Engine (`kw`: the operator's properties)."""
    return f"""
import addon_utils, bpy, json, sys
assert addon_utils.enable({ADDON!r}, default_set=True) is not None
try:
    res = bpy.ops.wav2lip.setup_engine(**{kw!r})
except RuntimeError as e:  # the operator reported an error (and returned CANCELLED)
    print("ERROR " + str(e).strip()); sys.exit(3)
print("RESULT " + json.dumps(sorted(res)))
"""


def installed_addon(blender_exe: Path, env: dict, downloads: Path) -> None:
    """The release zip (install.py --package), copied out of the checkout and installed with
    Blender's own Install, as a user does: the add-on and the engine's sources, nothing else."""
    import release

    built = release.package(downloads / "build")
    zip_path = downloads / built.name
    zip_path.write_bytes(built.read_bytes())
    res = blender(blender_exe, env, f"import bpy\nr = bpy.ops.preferences.addon_install(filepath={str(zip_path)!r})\n"
                                    "assert r == {'FINISHED'}, r\n")
    assert res.returncode == 0, (res.stdout + res.stderr)[-3000:]


def blender(exe: Path, env: dict, code: str, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run([str(exe), "-b", "--python-exit-code", "1", "--python-expr", code], capture_output=True,
                          text=True, env=env, timeout=timeout)


def test_set_up_engine_in_background_mode_makes_a_working_engine(blender_exe, tmp_path):
    home = tmp_path / "home"
    env = user_env(home)
    env.update(BLENDER_USER_CONFIG=str(tmp_path / "config"), BLENDER_USER_SCRIPTS=str(tmp_path / "scripts"),
               PIP_CACHE_DIR=user_pip_cache())
    installed_addon(blender_exe, env, tmp_path / "Downloads")
    assert (tmp_path / "scripts" / "addons" / ADDON / "engine_src" / "pyproject.toml").is_file()
    res = blender(blender_exe, env, set_up_code())
    out = res.stdout + res.stderr
    assert res.returncode == 0 and 'RESULT ["FINISHED"]' in res.stdout, out[-4000:]
    assert "Traceback" not in out, out[-4000:]
    assert "Set Up Engine: 100 %" in res.stdout, out[-4000:]

    # The engine is where install.py puts it by default, and recorded where the add-on reads it.
    engine = home / ".local" / "share" / "wav2lip-blender" / "engine"
    py = engine / "bin" / "python"
    recorded = json.loads((tmp_path / "config" / install.config.CONFIG_NAME).read_text())
    assert recorded[install.config.CONFIG_PYTHON] == str(py)
    where = subprocess.run([str(py), "-c", LOCATE], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert where.returncode == 0, where.stderr
    found = json.loads(where.stdout)
    assert Path(found["core"]).is_relative_to(engine) and not Path(found["core"]).is_relative_to(ROOT), found
    assert found["installer"] == "pip" and not found["editable"], found
    # The check table (install.py --check's rows) printed by the operator: the engine works.
    for row in ("engine environment", "torch and device", "ffmpeg (PyAV)"):
        line = next(ln for ln in res.stdout.splitlines() if ln.strip().startswith(row))
        assert line.split(row, 1)[1].split()[0] == "ok", line

    # Pressed again: nothing to do, and still FINISHED.
    again = blender(blender_exe, env, set_up_code())
    assert 'RESULT ["FINISHED"]' in again.stdout and "up to date" in again.stdout, again.stdout[-3000:]


def test_set_up_engine_says_what_to_install_when_no_python_can_make_it(blender_exe, tmp_path):
    """Debian's Blender on a system without python3-venv: ensurepip refuses (here a Python whose
    ensurepip is Debian's disabled stub). One line says what to install; nothing is recorded."""
    from test_engine_setup import python_without_venv

    env = user_env(tmp_path / "home")
    env.update(BLENDER_USER_CONFIG=str(tmp_path / "config"), BLENDER_USER_SCRIPTS=str(tmp_path / "scripts"))
    installed_addon(blender_exe, env, tmp_path / "Downloads")
    assert (tmp_path / "scripts" / "addons" / ADDON / "engine_src" / "pyproject.toml").is_file()
    bad = python_without_venv(tmp_path / "py")
    code = set_up_code(python=str(bad))
    res = blender(blender_exe, env, code, timeout=300)
    errors = [ln for ln in res.stdout.splitlines() if ln.startswith("ERROR ")]
    assert res.returncode == 3 and len(errors) == 1, res.stdout[-3000:] + res.stderr[-3000:]
    assert "sudo apt install python3-venv" in errors[0], errors
    assert not (tmp_path / "config" / install.config.CONFIG_NAME).exists()
