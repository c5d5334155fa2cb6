"""The release zip (install.py --package) through Blender's own extension code, from the bpy
wheel (5.0.1 in the dev venv, 4.5 under tools/test.sh's second run): bl_pkg's `validate` accepts
it (and rejects a broken manifest), its `build` from the zip's folder ships the same files, and
`extension install-file --repo user_default --enable` installs it into a user config that has
the user's own preferences, keeps them, enables `bl_ext.user_default.wav2lip_lipsync` and
registers the Lip Sync operator. Each Blender step runs in its own process (bpy's state must not
leak into other tests; each process unregisters everything before it exits)."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ADDON_ID = "wav2lip_lipsync"
PACKAGE = f"bl_ext.user_default.{ADDON_ID}"
OTHER_ADDON = "node_wrangler"  # bundled with Blender, off by default: stands for the user's own


def bpy_scripts() -> Path:
    spec = importlib.util.find_spec("bpy")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("bpy is not installed")
    found = sorted(Path(list(spec.submodule_search_locations)[0]).glob("*/scripts/addons_core/bl_pkg/cli/blender_ext.py"))
    if not found:
        pytest.skip("Blender's extension tool (bl_pkg) is not in this bpy")
    return found[-1].parents[3]


def blender_ext(*args: str) -> subprocess.CompletedProcess:
    """bl_pkg's command line, with the valid tags Blender's `--command extension` passes it."""
    scripts = bpy_scripts()
    tool = scripts / "addons_core" / "bl_pkg" / "cli" / "blender_ext.py"
    tags = scripts / "modules" / "_bpy_internal" / "extensions" / "tags.py"
    cmd, rest = args[0], args[1:]
    return subprocess.run([sys.executable, str(tool), cmd, "--valid-tags", str(tags) if tags.is_file() else "", *rest],
                          capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def release_zip(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    res = subprocess.run([sys.executable, str(ROOT / "install.py"), "--package", "--out", str(out)],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    return Path(res.stdout.splitlines()[-1])


def test_blenders_extension_tool_validates_and_builds_the_zip(release_zip, tmp_path):
    res = blender_ext("validate", str(release_zip))
    assert res.returncode == 0 and "Success" in res.stdout, res.stdout + res.stderr

    # The check bites: the same zip with a manifest Blender refuses (punctuation ending a
    # permission) fails validation.
    broken = tmp_path / "broken" / release_zip.name
    broken.parent.mkdir()
    with zipfile.ZipFile(release_zip) as src, zipfile.ZipFile(broken, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename.endswith("blender_manifest.toml"):
                data = re.sub(rb'network = "[^"]*"', b'network = "Downloads packages."', data)
            dst.writestr(info, data)
    res = blender_ext("validate", str(broken))
    assert res.returncode != 0 and "network" in res.stdout + res.stderr, res.stdout + res.stderr

    # Blender's builder, given the zip's folder, leaves nothing out and adds nothing: the zip
    # ships exactly what an extension built by Blender would.
    zipfile.ZipFile(release_zip).extractall(tmp_path / "src")
    (tmp_path / "built").mkdir()
    res = blender_ext("build", "--source-dir", str(tmp_path / "src" / ADDON_ID), "--output-dir", str(tmp_path / "built"))
    assert res.returncode == 0, res.stdout + res.stderr
    (built,) = (tmp_path / "built").glob("*.zip")
    assert built.name == release_zip.name
    ours = {n[len(ADDON_ID) + 1:] for n in zipfile.ZipFile(release_zip).namelist() if not n.endswith("/")}
    assert {n for n in zipfile.ZipFile(built).namelist() if not n.endswith("/")} == ours


# Run with Blender as a module: it starts with factory preferences, so each step reads the
# user's (as the program does at start-up), and disables every add-on before exiting (without
# saving that), so nothing stays registered.
PRELUDE = """
import bpy  # first: it puts addon_utils on the path
import addon_utils, json, sys
bpy.ops.wm.read_userpref()
p = bpy.context.preferences
def finish():
    for a in list(p.addons):
        addon_utils.disable(a.module, default_set=False)
"""

SET_PREFS = PRELUDE + f"""
p.view.ui_scale = 1.3
p.filepaths.temporary_directory = "/tmp/my-blender-temp/"
p.themes[0].view_3d.space.gradients.high_gradient = (0.1, 0.2, 0.3)
assert addon_utils.enable({OTHER_ADDON!r}, default_set=True) is not None
assert bpy.ops.wm.save_userpref() == {{"FINISHED"}}
finish()
"""

# `blender --command extension install-file --repo user_default --enable ZIP`, as Blender runs it.
INSTALL = PRELUDE + """
from bl_pkg import bl_extension_cli
rc = bl_extension_cli.cli_extension_handler(["install-file", "--repo", "user_default", "--enable", sys.argv[-1]])
print("INSTALL-RC", rc)
finish()
sys.exit(rc)
"""

SHOW = PRELUDE + f"""
mod = sys.modules.get({PACKAGE!r})
try:
    bpy.ops.sequencer.wav2lip_sync.get_rna_type()
    operator = True
except KeyError:
    operator = False
print("STATE " + json.dumps({{
    "ui_scale": round(p.view.ui_scale, 3),
    "temp": p.filepaths.temporary_directory,
    "gradient": [round(v, 2) for v in p.themes[0].view_3d.space.gradients.high_gradient],
    "addons": sorted(a.module for a in p.addons),
    "operator": operator,
    "panel": hasattr(bpy.types, "SEQUENCER_PT_wav2lip"),
    "file": getattr(mod, "__file__", None),
}}))
finish()
"""


def run_bpy(code: str, env: dict, *args: str) -> subprocess.CompletedProcess:
    res = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env,
                         timeout=300, cwd=env["HOME"])
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return res


def state(env: dict) -> dict:
    out = run_bpy(SHOW, env).stdout
    return json.loads(next(ln for ln in out.splitlines() if ln.startswith("STATE "))[len("STATE "):])


def test_extension_install_keeps_the_users_preferences_enables_and_registers(release_zip, tmp_path):
    bpy_scripts()
    user = tmp_path / "user"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BLENDER_", "XDG_"))}
    env.update(HOME=str(user / "home"), BLENDER_USER_CONFIG=str(user / "config"),
               BLENDER_USER_SCRIPTS=str(user / "scripts"), BLENDER_USER_EXTENSIONS=str(user / "extensions"),
               PYTHONPATH="")
    (user / "home").mkdir(parents=True)
    run_bpy(SET_PREFS, env)
    before = state(env)
    assert before["ui_scale"] == 1.3 and OTHER_ADDON in before["addons"]
    assert PACKAGE not in before["addons"] and not before["operator"]

    res = run_bpy(INSTALL, env, str(release_zip))
    assert "INSTALL-RC 0" in res.stdout, res.stdout[-3000:] + res.stderr[-3000:]

    after = state(env)  # a new Blender: what the saved preferences hold
    for key in ("ui_scale", "temp", "gradient"):
        assert after[key] == before[key], (key, before[key], after[key])
    assert set(after["addons"]) == set(before["addons"]) | {PACKAGE}
    assert after["operator"] and after["panel"]
    installed = user / "extensions" / "user_default" / ADDON_ID
    assert after["file"] == str(installed / "__init__.py")
    # The engine's sources came along (Set Up Engine builds from them), the manifest at the top.
    assert (installed / "engine_src" / "pyproject.toml").is_file() and (installed / "blender_manifest.toml").is_file()
