"""install.py's command line where no (usable) Blender program is involved: an old or broken
Blender gets one line and setup goes on; detector weights are checked and recorded."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from .conftest import BASE_PYTHON, INSTALL, fake_blender, python_only_path, run_install, user_env

CONFIG = "wav2lip_lipsync.json"


def engine_config(engine_env) -> dict:
    return json.loads((engine_env / CONFIG).read_text())


def test_blender_too_old_gets_one_line_and_setup_goes_on(engine_env, tmp_path):
    exe = fake_blender(tmp_path / "bin", "3.0.1")
    env = user_env(tmp_path / "home", path=f"{exe.parent}{os.pathsep}{BASE_PYTHON.parent}")
    res = run_install(env, "--venv", str(engine_env))
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"Blender 3.0.1 at {exe} is too old for the add-on (it needs 3.4.0 or newer)" in res.stdout
    assert "headless runs use the bpy module" in res.stdout
    assert "Traceback" not in res.stdout + res.stderr
    assert engine_config(engine_env)["python"] == str(engine_env / "bin" / "python")
    assert not (tmp_path / "home" / ".config" / "blender").exists()  # nothing written for that Blender


def test_blender_that_cannot_run_scripts_gets_one_line(engine_env, tmp_path):
    exe = fake_blender(tmp_path / "bin", "4.2.3")
    env = user_env(tmp_path / "home", path=f"{exe.parent}{os.pathsep}{BASE_PYTHON.parent}")
    res = run_install(env, "--venv", str(engine_env))
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"Blender 4.2.3 at {exe} cannot run a Python script in background mode (exit 139: Segmentation fault)" in res.stdout
    assert "the add-on is not installed there" in res.stdout
    assert "Traceback" not in res.stdout + res.stderr


def test_detector_weights_checked_and_recorded(engine_env, tmp_path, blazeface_dir):
    env = user_env(tmp_path / "home")
    weights = (blazeface_dir / "blazeface.pth").resolve()  # install.py records the real path
    res = run_install(env, "--venv", str(engine_env), "--no-blender", "--detector-weights", str(weights))
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"detector weights ok: {weights}" in res.stdout and "anchors 896x4" in res.stdout, res.stdout
    assert engine_config(engine_env)["detector_weights"] == str(weights)

    # A folder: the BlazeFace file in it; the back-camera model with its own anchors.
    res = run_install(env, "--venv", str(engine_env), "--no-blender", "--detector-weights", str(blazeface_dir / "blazefaceback.pth"))
    assert res.returncode == 0 and engine_config(engine_env)["detector_weights"] == str(blazeface_dir / "blazefaceback.pth")
    res = run_install(env, "--venv", str(engine_env), "--no-blender", "--detector-weights", str(blazeface_dir))
    assert res.returncode == 0 and engine_config(engine_env)["detector_weights"] == str(weights), res.stdout + res.stderr

    # The .pth without its anchors, a missing file, a web page saved as weights: one line each,
    # and the recorded value stays.
    alone = tmp_path / "dl" / "blazeface.pth"
    alone.parent.mkdir()
    shutil.copy(weights, alone)
    page = tmp_path / "page" / "blazeface.pth"
    page.parent.mkdir()
    page.write_text("<!DOCTYPE html><html>Google Drive</html>")
    shutil.copy(blazeface_dir / "anchors.npy", page.parent / "anchors.npy")
    cases = [(alone, f"error: BlazeFace anchors not found: {alone.parent / 'anchors.npy'} is missing"),
             (tmp_path / "nope.pth", f"error: detector weights not found: {tmp_path / 'nope.pth'}"),
             (page, f"error: the engine could not load the detector weights {page}:")]
    for path, message in cases:
        res = run_install(env, "--venv", str(engine_env), "--no-blender", "--detector-weights", str(path))
        assert res.returncode == 1, res.stdout + res.stderr
        assert res.stderr.startswith(message) and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert engine_config(engine_env)["detector_weights"] == str(weights)


def other_python() -> Path | None:
    """A real interpreter that is not Python 3.11 (on PATH, or one of pyenv's), resolved past shims."""
    pyenv = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv") / "versions"
    names = ("python3.12", "python3.13", "python3.10", "python3.14")
    found = [shutil.which(n) for n in names] + [str(p) for v in ("3.12", "3.13", "3.10") for p in sorted(pyenv.glob(f"{v}.*/bin/python3"))]
    for exe in found:
        if not exe:
            continue
        res = subprocess.run([exe, "-c", "import sys; print(sys.executable); print(sys.version_info[:2] != (3, 11))"],
                             capture_output=True, text=True)
        lines = res.stdout.split()
        if res.returncode == 0 and len(lines) == 2 and lines[1] == "True":
            return Path(lines[0])
    return None


def test_demo_without_blender_on_another_python_fails_first_in_one_line(tmp_path):
    """No Blender program, and a Python for which no bpy module exists: --demo can only fail,
    so it fails before it creates anything, in one line saying what to do."""
    py = other_python()
    if py is None:
        pytest.skip("no Python other than 3.11 on PATH (e.g. pyenv's python3.12)")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python3").symlink_to(py)
    # No package index: were install.py to go on and install, it fails in seconds instead of
    # downloading torch for this Python.
    env = {**user_env(tmp_path / "home", path=str(bin_dir)), "PIP_NO_INDEX": "1"}
    engine = tmp_path / "engine"
    res = subprocess.run([str(py), str(INSTALL), "--demo", "--venv", str(engine)], capture_output=True, text=True,
                         env=env, cwd=env["HOME"], timeout=600)
    out = res.stdout + res.stderr
    assert res.returncode == 1, out
    assert "Traceback" not in out
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    assert "Python 3.11" in lines[0] and "--blender" in lines[0] and "install Blender" in lines[0], lines[0]
    assert not engine.exists()  # nothing created
    assert not (tmp_path / "home" / "wav2lip-demo").exists()


def test_suggested_check_checks_the_engine_just_set_up(engine_env, tmp_path):
    """`install.py --venv X` ends with the command that checks it; that command finds X's engine."""
    env = user_env(tmp_path / "home", path=python_only_path(tmp_path / "bin"))
    res = run_install(env, "--venv", str(engine_env))
    assert res.returncode == 0, res.stdout + res.stderr
    line = next(ln for ln in res.stdout.splitlines() if ln.startswith("done. Check with: "))
    cmd = shlex.split(line[len("done. Check with: "):])
    assert cmd[:2] == ["python3", "install.py"] and "--check" in cmd, line
    check = run_install(env, *cmd[2:])
    rows = {ln.split()[0] + " " + ln.split()[1]: ln for ln in check.stdout.splitlines() if ln.startswith("  ")}
    engine_row, torch_row = rows["engine environment"], rows["torch and"]
    assert engine_row.split()[2] == "ok" and str(engine_env) in engine_row, check.stdout
    assert torch_row.split()[3] == "ok" and "torch 2.13.0" in torch_row, check.stdout
    assert "MISSING" not in engine_row + torch_row
