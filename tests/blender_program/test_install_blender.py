"""install.py against the real Blender program: the add-on is installed and enabled with the
user's own preferences kept, re-installed when its files change, and the engine recorded."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from .conftest import ROOT, run_blender, run_install, user_env

sys.path.insert(0, str(ROOT))
import install  # noqa: E402

ADDON = install.ADDON_ID
OTHER_ADDON = "development_iskeyfree"  # one of Blender's bundled add-ons, standing for the user's own

# The user's own settings, made the way Blender's preferences window saves them.
SET_PREFS = f"""
import addon_utils, bpy
p = bpy.context.preferences
p.view.ui_scale = 1.3
p.themes[0].view_3d.space.gradients.high_gradient = (0.1, 0.2, 0.3)
p.filepaths.temporary_directory = "/tmp/my-blender-temp/"
assert addon_utils.enable({OTHER_ADDON!r}, default_set=True) is not None
bpy.ops.wm.save_userpref()
"""

SHOW_PREFS = """
import bpy, json
p = bpy.context.preferences
print("PREFS " + json.dumps({
    "ui_scale": round(p.view.ui_scale, 3),
    "gradient": [round(v, 2) for v in p.themes[0].view_3d.space.gradients.high_gradient],
    "temp": p.filepaths.temporary_directory,
    "addons": sorted(a.module for a in p.addons),
    "operator": hasattr(bpy.types, "SEQUENCER_OT_wav2lip_sync"),
    "config": bpy.utils.user_resource("CONFIG"),
}))
"""


def prefs(exe, env) -> dict:
    out = run_blender(exe, env, SHOW_PREFS).stdout
    line = next(ln for ln in out.splitlines() if ln.startswith("PREFS "))
    return json.loads(line[len("PREFS "):])


def assert_user_prefs_kept(p: dict) -> None:
    assert p["ui_scale"] == 1.3
    assert p["gradient"] == [0.1, 0.2, 0.3]
    assert p["temp"] == "/tmp/my-blender-temp/"
    assert OTHER_ADDON in p["addons"]


def test_install_twice_keeps_user_preferences_and_enables_addon(blender_exe, engine_env, tmp_path, monkeypatch, blazeface_dir):
    env = user_env(tmp_path / "home")
    run_blender(blender_exe, env, SET_PREFS)
    before = prefs(blender_exe, env)
    assert_user_prefs_kept(before)
    assert ADDON not in before["addons"]

    weights = blazeface_dir / "blazeface.pth"
    first = run_install(env, "--venv", str(engine_env), "--detector-weights", str(weights))
    assert first.returncode == 0, first.stdout + first.stderr
    assert "add-on installed" in first.stdout and "enabled" in first.stdout, first.stdout
    second = run_install(env, "--venv", str(engine_env))
    assert second.returncode == 0, second.stdout + second.stderr
    assert "already installed, up to date" in second.stdout, second.stdout
    check = run_install(env, "--venv", str(engine_env), "--check")
    row = next(ln for ln in check.stdout.splitlines() if "add-on installed" in ln)
    assert row.split()[2] == "ok" and f"/{ADDON}" in row, check.stdout

    after = prefs(blender_exe, env)
    assert_user_prefs_kept(after)
    assert ADDON in after["addons"] and after["operator"], after
    # The engine is recorded where the add-on reads it (Blender's own config folder).
    assert after["config"].startswith(str(tmp_path / "home"))
    recorded = json.loads((Path(after["config"]) / install.CONFIG_NAME).read_text())
    assert recorded[install.CONFIG_PYTHON] == str(engine_env / "bin" / "python")
    assert recorded[install.CONFIG_DETECTOR_WEIGHTS] == str(weights)

    # The add-on's files change (a new version of the project): the next install replaces them.
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    info = install.probe_blender(blender_exe, blender_exe_version(blender_exe))
    assert info.addon_dir.is_dir() and str(info.addon_dir).startswith(str(tmp_path / "home"))
    staged = install.stage_addon(tmp_path / "staged" / ADDON)
    assert install.install_addon(info, staged) == "up to date"
    with open(staged / "README.md", "a") as f:
        f.write("\nchanged by test_install_blender\n")
    assert install.install_addon(info, staged) == "updated"
    assert "changed by test_install_blender" in (info.addon_dir / "README.md").read_text()
    check = run_install(env, "--venv", str(engine_env), "--check")
    assert "(outdated: run python3 install.py)" in check.stdout, check.stdout
    assert install.install_addon(info, staged) == "up to date"
    again = prefs(blender_exe, env)
    assert_user_prefs_kept(again)
    assert ADDON in again["addons"] and again["operator"]
    # and the command line puts the project's own version back
    third = run_install(env, "--venv", str(engine_env))
    assert third.returncode == 0 and "add-on updated" in third.stdout, third.stdout + third.stderr
    assert "changed by test_install_blender" not in (info.addon_dir / "README.md").read_text()


def blender_exe_version(exe) -> tuple[int, int, int]:
    found = install.find_blender(str(exe))
    assert found is not None
    return found[1]
