"""Set Up Engine in Blender (the bpy module, background mode): the preferences' controls, the
operator's errors (one line, CANCELLED), Blender's online-access setting, and picked weight
files checked by the engine in a background process."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import pytest

from test_engine_setup import python_without_venv


@pytest.fixture
def setup_env(bpy_addon, tmp_path, monkeypatch):
    """The add-on with the engine's place and Blender's config folder in tmp_path."""
    bpy, mod = bpy_addon
    monkeypatch.setenv("WAV2LIP_ENGINE_VENV", str(tmp_path / "engine"))
    monkeypatch.setenv("BLENDER_USER_CONFIG", str(tmp_path / "config"))
    prefs = bpy.context.preferences.addons[mod.__name__].preferences
    system = bpy.context.preferences.system
    online = system.use_online_access
    yield bpy, mod, prefs
    system.use_online_access = online
    prefs.checkpoint = prefs.detector_weights = prefs.engine_python = prefs.wheels_dir = ""


def test_preferences_offer_every_optional_part_and_a_torch_index(setup_env):
    bpy, mod, prefs = setup_env
    from blender_addon import setup_base

    for name in setup_base.OPTIONAL_EXTRAS:
        assert hasattr(prefs, f"setup_{name}")
    assert hasattr(prefs, "torch_index_url") and hasattr(prefs, "wheels_dir")
    assert hasattr(bpy.types, "WAV2LIP_OT_setup_engine")


def test_no_python_that_can_make_the_engine_cancels_with_one_line(setup_env, tmp_path):
    bpy, mod, prefs = setup_env
    bpy.context.preferences.system.use_online_access = True
    bad = python_without_venv(tmp_path / "py")
    with pytest.raises(RuntimeError) as e:
        bpy.ops.wav2lip.setup_engine(python=str(bad))
    msg = str(e.value).strip()
    assert len(msg.splitlines()) == 1 and "no Python here can make the engine environment" in msg, msg
    if Path("/etc/debian_version").exists():
        assert "sudo apt install python3-venv" in msg
    assert not (tmp_path / "config" / "wav2lip_blender.json").exists()
    from blender_addon import engine_draw

    assert engine_draw.status_line()[1] == "ERROR"


def test_online_access_off_asks_for_a_wheels_folder(setup_env, tmp_path):
    bpy, mod, prefs = setup_env
    bpy.context.preferences.system.use_online_access = False
    assert bpy.app.online_access is False
    with pytest.raises(RuntimeError, match="Allow Online Access is off.*Wheels Folder"):
        bpy.ops.wav2lip.setup_engine()
    assert not (tmp_path / "engine").exists()
    with pytest.raises(RuntimeError, match="wheels folder .* does not exist"):
        bpy.ops.wav2lip.setup_engine(find_links=str(tmp_path / "nowhere"))


def test_unknown_optional_part_is_refused(setup_env):
    bpy, mod, prefs = setup_env
    bpy.context.preferences.system.use_online_access = True
    with pytest.raises(RuntimeError, match="unknown optional part gpu: choose from int8, landmarks, enhance, ray"):
        bpy.ops.wav2lip.setup_engine(extras="gpu")


def _verified(engine_ui, kind, timeout=120.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        engine_ui.poll()  # (what the preferences' draw and the timer do)
        v = engine_ui.state.verified.get(kind)
        if v is not None and v.ok is not None:
            return v
        time.sleep(0.05)
    raise AssertionError(engine_ui.state.verified)


def test_picked_checkpoint_is_checked_by_the_engine(setup_env, checkpoint, tmp_path, engine_python):
    bpy, mod, prefs = setup_env
    from blender_addon import engine_ui

    prefs.engine_python = engine_python  # the interpreter with the core and torch (also under bpy 4.5)
    prefs.checkpoint = str(checkpoint)  # picking it runs the check
    v = _verified(engine_ui, "checkpoint")
    assert v.ok and "Wav2Lip generator" in v.text, v
    assert f"sha256 {hashlib.sha256(checkpoint.read_bytes()).hexdigest()[:12]}" in v.text, v
    page = tmp_path / "wav2lip_gan.pth"
    page.write_text("<!DOCTYPE html><html>Sign in</html>")
    prefs.checkpoint = str(page)
    v = _verified(engine_ui, "checkpoint")
    assert not v.ok and "web page" in v.text and "\n" not in v.text, v


def test_picked_detector_weights_are_checked(setup_env, blazeface_dir, tmp_path, engine_python):
    bpy, mod, prefs = setup_env
    from blender_addon import engine_ui

    prefs.engine_python = engine_python
    prefs.detector_weights = str(blazeface_dir / "blazeface.pth")
    v = _verified(engine_ui, "detector")
    assert v.ok and "tensors, anchors 896x4" in v.text, v
    lone = tmp_path / "blazeface.pth"
    lone.write_bytes((blazeface_dir / "blazeface.pth").read_bytes())
    prefs.detector_weights = str(lone)
    v = _verified(engine_ui, "detector")
    assert not v.ok and "anchors.npy is missing" in v.text, v
