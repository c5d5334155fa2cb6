"""install.py against the real Blender program: the add-on is installed and enabled with the
user's own preferences kept, re-installed when its files change, and the engine recorded in the
folders Blender reads; and a user's engine made from scratch by pip syncs in that Blender."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import ROOT, blender_version, run_blender, run_install, user_env

sys.path.insert(0, str(ROOT))
import install  # noqa: E402
from installer import blender as installer_blender  # noqa: E402

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

    weights = (blazeface_dir / "blazeface.pth").resolve()  # install.py records the real path
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
    recorded = json.loads((Path(after["config"]) / install.config.CONFIG_NAME).read_text())
    assert recorded[install.config.CONFIG_PYTHON] == str(engine_env / "bin" / "python")
    assert recorded[install.config.CONFIG_DETECTOR_WEIGHTS] == str(weights)

    # The add-on's files change (a new version of the project): the next install replaces them.
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    info = installer_blender.probe_blender(blender_exe, blender_exe_version(blender_exe))
    assert info.addon_dir.is_dir() and str(info.addon_dir).startswith(str(tmp_path / "home"))
    staged = install.stage_addon(tmp_path / "staged" / ADDON)
    assert install.install_addon(info, staged) == "up to date"
    with open(staged / "README.md", "a") as f:
        f.write("\nchanged by test_install_blender\n")
    assert install.install_addon(info, staged) == "updated"
    assert "changed by test_install_blender" in (info.addon_dir / "README.md").read_text()
    check = run_install(env, "--venv", str(engine_env), "--check")
    # and says how to update it for this engine (a plain install.py would record the default one)
    assert f"(outdated: run python3 install.py --venv {engine_env})" in check.stdout, check.stdout
    assert install.install_addon(info, staged) == "up to date"
    again = prefs(blender_exe, env)
    assert_user_prefs_kept(again)
    assert ADDON in again["addons"] and again["operator"]
    # and the command line puts the project's own version back
    third = run_install(env, "--venv", str(engine_env))
    assert third.returncode == 0 and "add-on updated" in third.stdout, third.stdout + third.stderr
    assert "changed by test_install_blender" not in (info.addon_dir / "README.md").read_text()


def blender_exe_version(exe) -> tuple[int, int, int]:
    found = installer_blender.find_blender(str(exe))
    assert found is not None
    return found[1]


@pytest.mark.parametrize("folders", ["default", "BLENDER_USER_* variables"])
def test_addon_and_preferences_go_where_blender_reads_them(blender_exe, engine_env, tmp_path, folders):
    """Which user folders get the add-on and install.py's record, in Blender's own layout
    (install.py asks Blender; these are the paths Blender documents), the user's preferences kept."""
    home = tmp_path / "home"
    env = user_env(home)
    major, minor = blender_version(str(blender_exe))[:2]
    if folders == "default":
        config = home / ".config" / "blender" / f"{major}.{minor}" / "config"
        addons = home / ".config" / "blender" / f"{major}.{minor}" / "scripts" / "addons"
    else:
        env.update(BLENDER_USER_CONFIG=str(tmp_path / "my-config"), BLENDER_USER_SCRIPTS=str(tmp_path / "my-scripts"))
        config, addons = tmp_path / "my-config", tmp_path / "my-scripts" / "addons"
    run_blender(blender_exe, env, SET_PREFS)
    assert (config / "userpref.blend").is_file()

    res = run_install(env, "--venv", str(engine_env))
    assert res.returncode == 0, res.stdout + res.stderr
    if (major, minor) < (4, 2):  # a legacy add-on: a folder in the user's scripts/addons
        assert (addons / ADDON / "__init__.py").is_file() and (addons / ADDON / "protocol.py").is_file()
        assert f"add-on installed as a legacy add-on and enabled: {addons / ADDON}" in res.stdout, res.stdout
    assert json.loads((config / install.config.CONFIG_NAME).read_text()) == {install.config.CONFIG_PYTHON: str(engine_env / "bin" / "python")}
    assert f"preferences recorded in {config / install.config.CONFIG_NAME}" in res.stdout
    if folders != "default":
        assert not (home / ".config" / "blender").exists()  # nothing in the default folders
    after = prefs(blender_exe, env)
    assert_user_prefs_kept(after)
    assert ADDON in after["addons"] and after["operator"] and after["config"] == str(config)


def user_pip_cache() -> str:
    """This machine's pip cache (the tests' users have their own HOME): downloads are reused."""
    if os.environ.get("PIP_CACHE_DIR"):
        return os.environ["PIP_CACHE_DIR"]
    return str(Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "pip")


def test_users_engine_is_a_plain_pip_install_that_the_addon_syncs_with(blender_exe, checkpoint, tmp_path):
    """`python3 install.py` as a user runs it: a new engine environment with the project
    installed by pip as a copy (not editable), the add-on in the real Blender, and a sync in that
    Blender with nothing but what install.py recorded (no engine or checkpoint given)."""
    home = tmp_path / "home"
    env = user_env(home, path=f"{blender_exe.parent}{os.pathsep}/usr/bin{os.pathsep}/bin")
    env["PIP_CACHE_DIR"] = user_pip_cache()
    engine = home / "engine"
    res = run_install(env, "--venv", str(engine), "--checkpoint", str(checkpoint))
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert f"creating the engine environment in {engine}" in res.stdout and "add-on installed" in res.stdout, res.stdout

    # The core is a copy in the engine's site-packages, installed by pip, not a link to this checkout.
    where = subprocess.run([str(engine / "bin" / "python"), "-c", LOCATE], capture_output=True, text=True,
                           cwd=tmp_path, env=env)
    assert where.returncode == 0, where.stderr
    found = json.loads(where.stdout)
    assert Path(found["core"]).is_relative_to(engine) and not Path(found["core"]).is_relative_to(ROOT), found
    assert found["installer"] == "pip" and not found["editable"], found
    # exactly this checkout's modules: none left over from an earlier build in the clone's build/
    installed, ours = package_files(Path(found["core"]).parent), package_files(ROOT / "wav2lip_core")
    assert installed == ours, (sorted(installed - ours), sorted(ours - installed))

    from .test_headless_blender import FACE, MAKE_SCENE, SPEECH, blender

    blend = tmp_path / "shot.blend"
    made = blender(blender_exe, env, "--python-exit-code", "1", "--python-expr", MAKE_SCENE, "--",
                   str(FACE), str(SPEECH), str(blend))
    assert made.returncode == 0 and blend.is_file(), made.stdout[-2000:] + made.stderr[-2000:]
    info = installer_blender.probe_blender(blender_exe, blender_exe_version(blender_exe))
    headless = home / ".config" / "blender" / vstr(info.version[:2]) / "scripts" / "addons" / ADDON / "headless.py"
    sync = subprocess.run([str(blender_exe), "-b", str(blend), "--python-exit-code", "1", "--python", str(headless), "--",
                           "--video-strip", "Face", "--audio-strip", "Dialogue", "--detector", "haar", "--save"],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert sync.returncode == 0, sync.stdout[-3000:] + sync.stderr[-3000:]
    assert "Traceback" not in sync.stdout + sync.stderr
    synced = tmp_path / "lipsync" / "Face.lipsync.mp4"
    import av

    with av.open(str(synced)) as c:
        assert sum(1 for _ in c.decode(video=0)) == 50  # the face strip's used frames


# Run by the engine's Python: where wav2lip_core comes from, and how pip recorded the install.
LOCATE = """
import json, importlib.metadata as m, wav2lip_core
d = m.distribution("wav2lip-blender")
direct = json.loads(d.read_text("direct_url.json") or "{}")
print(json.dumps({"core": wav2lip_core.__file__, "installer": (d.read_text("INSTALLER") or "").strip(),
                  "editable": bool(direct.get("dir_info", {}).get("editable"))}))
"""


def package_files(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() and "__pycache__" not in p.parts}


def vstr(version) -> str:
    return ".".join(map(str, version))


def test_unwritable_blender_folder_gets_one_line(blender_exe, engine_env, tmp_path):
    """Blender's user folder cannot be made (here: a file stands where it goes): one line naming
    it, no traceback."""
    env = user_env(tmp_path / "home")
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    env.update(BLENDER_USER_SCRIPTS=str(blocker / "scripts"), BLENDER_USER_CONFIG=str(tmp_path / "cfg"))
    res = run_install(env, "--venv", str(engine_env))
    assert res.returncode == 1, res.stdout + res.stderr
    assert "Traceback" not in res.stdout + res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and str(blocker) in lines[0], res.stderr
