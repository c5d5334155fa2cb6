"""install.py's command line where no (usable) Blender program is involved: an old or broken
Blender gets one line and setup goes on; detector weights are checked and recorded."""

from __future__ import annotations

import json
import os
import shutil

from .conftest import BASE_PYTHON, fake_blender, run_install, user_env

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
    weights = blazeface_dir / "blazeface.pth"
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
