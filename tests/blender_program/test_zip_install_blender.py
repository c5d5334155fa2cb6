"""The release zip in the real Blender program (Debian's 3.4.1), as a user installs it: only the
zip is copied out of the checkout; Blender's own Install (preferences.addon_install) puts it into
a fresh user's scripts folder, it is enabled and the preferences saved; a new Blender has it
enabled with the user's own settings kept; installing it again replaces the folder (nothing left
from the old one); and the INSTALLED add-on's headless.py lip-syncs a clip with the real engine."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from .conftest import ROOT, run_blender, user_env
from .test_headless_blender import FACE, MAKE_SCENE, SPEECH, blender

ADDON = "wav2lip_lipsync"

SET_PREFS = """
import bpy
bpy.context.preferences.view.ui_scale = 1.3
bpy.context.preferences.filepaths.temporary_directory = "/tmp/my-blender-temp/"
bpy.ops.wm.save_userpref()
"""


def install_code(zip_path: Path) -> str:
    """What pressing Install... and ticking the add-on does."""
    return (
        "import bpy\n"
        f"r = bpy.ops.preferences.addon_install(filepath={str(zip_path)!r})\n"
        "assert r == {'FINISHED'}, r\n"
        f"r = bpy.ops.preferences.addon_enable(module={ADDON!r})\n"
        "assert r == {'FINISHED'}, r\n"
        "bpy.ops.wm.save_userpref()\n"
    )


SHOW = f"""
import bpy, json, sys
p = bpy.context.preferences
mod = sys.modules.get({ADDON!r})
print("STATE " + json.dumps({{
    "ui_scale": round(p.view.ui_scale, 3),
    "temp": p.filepaths.temporary_directory,
    "addons": sorted(a.module for a in p.addons),
    "operator": hasattr(bpy.types, "SEQUENCER_OT_wav2lip_sync"),
    "file": getattr(mod, "__file__", None),
}}))
"""


def state(exe: Path, env: dict) -> dict:
    out = run_blender(exe, env, SHOW).stdout
    return json.loads(next(ln for ln in out.splitlines() if ln.startswith("STATE "))[len("STATE "):])


def test_zip_installs_with_blenders_install_and_its_headless_syncs(blender_exe, checkpoint, engine_python, tmp_path):
    made = subprocess.run([engine_python, str(ROOT / "install.py"), "--package", "--out", str(tmp_path / "dist")],
                          capture_output=True, text=True, timeout=120)
    assert made.returncode == 0, made.stdout + made.stderr
    # Nothing else from the checkout: the zip alone, as downloaded.
    download = tmp_path / "Downloads"
    download.mkdir()
    zip_path = Path(shutil.copy2(made.stdout.splitlines()[-1], download))

    home = tmp_path / "home"
    env = user_env(home)
    env.update(BLENDER_USER_CONFIG=str(home / "blender" / "config"), BLENDER_USER_SCRIPTS=str(home / "blender" / "scripts"))
    run_blender(blender_exe, env, SET_PREFS)
    run_blender(blender_exe, env, install_code(zip_path))

    installed = home / "blender" / "scripts" / "addons" / ADDON
    after = state(blender_exe, env)  # a new Blender, with the saved preferences
    assert ADDON in after["addons"] and after["operator"], after
    assert after["file"] == str(installed / "__init__.py")
    assert after["ui_scale"] == 1.3 and after["temp"] == "/tmp/my-blender-temp/"
    assert (installed / "engine_src" / "pyproject.toml").is_file()

    # An update over an older install: Blender replaces the folder, so a module the new release
    # no longer has does not linger.
    (installed / "left_from_an_old_release.py").write_text("")
    run_blender(blender_exe, env, install_code(zip_path))
    assert not (installed / "left_from_an_old_release.py").exists()
    assert ADDON in state(blender_exe, env)["addons"]

    blend = tmp_path / "shot.blend"
    made = blender(blender_exe, env, "--python-exit-code", "1", "--python-expr", MAKE_SCENE, "--",
                   str(FACE), str(SPEECH), str(blend))
    assert made.returncode == 0 and blend.is_file(), made.stdout[-2000:] + made.stderr[-2000:]
    # The user's Blender (preferences loaded: the add-on enabled), the installed headless.py.
    res = subprocess.run([str(blender_exe), "-b", str(blend), "--python-exit-code", "1",
                          "--python", str(installed / "headless.py"), "--",
                          "--video-strip", "Face", "--audio-strip", "Dialogue", "--checkpoint", str(checkpoint),
                          "--detector", "haar", "--engine-python", engine_python, "--save"],
                         capture_output=True, text=True, env=env, cwd=str(home), timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "Traceback" not in res.stdout + res.stderr
    assert "headless: inserted 'Face.lipsync' channel 3 frames 1-50" in res.stdout, res.stdout[-2000:]
    import av

    synced = tmp_path / "lipsync" / "Face.lipsync.mp4"
    with av.open(str(synced)) as c:
        assert sum(1 for _ in c.decode(video=0)) == 50
