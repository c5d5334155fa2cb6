"""headless.py in its own process (a Python with bpy), and the extension package built by
Blender's own `extension build`; both with the stand-in engine, so they are fast."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HEADLESS = ROOT / "blender_addon" / "headless.py"
KATIE = "sadtalker_WDA_KatieHill_000.mp4"
SPEECH = "vretalk_audio1.wav"

MAKE_SCENE = """
import bpy, sys
out, face, speech = sys.argv[-3:]
sc = bpy.context.scene
ed = sc.sequence_editor_create()
sc.render.fps, sc.render.fps_base = 24, 1.0
sc.render.resolution_x = sc.render.resolution_y = 128
coll = ed.strips if hasattr(ed, "strips") else ed.sequences
m = coll.new_movie(name="Face", filepath=face, channel=2, frame_start=1)
m.frame_offset_start = 4
m.frame_offset_end = 166
coll.new_sound(name="Speech", filepath=speech, channel=1, frame_start=1)
sc.frame_start, sc.frame_end = 5, 34
bpy.ops.wm.save_as_mainfile(filepath=out)
"""


def run_py(code_or_file, *args, env=None, timeout=600):
    cmd = [sys.executable] + (["-c", code_or_file] if "\n" in code_or_file else [code_or_file]) + list(args)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=str(ROOT))


def make_scene(tmp_path, media) -> Path:
    blend = tmp_path / "scene.blend"
    r = run_py(MAKE_SCENE, "--", str(blend), str(media / KATIE), str(media / SPEECH))
    assert r.returncode == 0 and blend.is_file(), r.stderr[-2000:]
    return blend


def streams(path):
    import av

    with av.open(str(path)) as c:
        return {s.type: s.frames for s in c.streams}


def test_headless_sync_render_save(tmp_path, media, fake_python, dummy_checkpoint):
    pytest.importorskip("bpy")
    blend = make_scene(tmp_path, media)
    out = tmp_path / "render" / "final.mp4"
    env = dict(os.environ, FAKE_ENGINE_LOG=str(tmp_path / "args.json"))
    r = run_py(str(HEADLESS), "--blend", str(blend), "--", "--video-strip", "Face", "--audio-strip", "Speech",
               "--checkpoint", dummy_checkpoint, "--engine-python", fake_python, "--device", "cpu",
               "--detector", "blazeface", "--detector-weights", dummy_checkpoint, "--mute-source",
               "--render", str(out), "--save", env=env)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "headless: inserted 'Face.lipsync' channel 3 frames 5-34" in r.stdout
    assert streams(out) == {"video": 30, "audio": streams(out)["audio"]} and streams(out)["audio"] > 0
    args = json.loads((tmp_path / "args.json").read_text())
    assert args["detector"] == "blazeface" and args["detector_weights"] == dummy_checkpoint
    assert args["source_times_list"] == pytest.approx([(4 + k) / 25 for k in range(30)])
    assert (tmp_path / "lipsync" / "Face.lipsync.mp4").is_file()
    # The saved file has the strip (relative path) and the muted source.
    check = run_py(
        "import bpy, sys, os\n"
        f"bpy.ops.wm.open_mainfile(filepath={str(blend)!r})\n"
        "ed = bpy.context.scene.sequence_editor\n"
        "coll = ed.strips if hasattr(ed, 'strips') else ed.sequences\n"
        "s = coll['Face.lipsync']\n"
        "print('RESULT', s.filepath, os.path.isfile(bpy.path.abspath(s.filepath)), coll['Face'].mute)\n")
    assert "RESULT //lipsync/Face.lipsync.mp4 True True" in check.stdout, check.stderr[-2000:]


def test_headless_failure_exit_code(tmp_path, media, dummy_checkpoint):
    pytest.importorskip("bpy")
    blend = make_scene(tmp_path, media)
    r = run_py(str(HEADLESS), "--blend", str(blend), "--", "--video-strip", "Face",
               "--checkpoint", dummy_checkpoint, "--engine-python", str(tmp_path / "nope" / "python"),
               "--render", str(tmp_path / "x.mp4"), "--save")
    assert r.returncode == 1
    assert "error: Lip sync failed: cannot start the lip-sync engine" in r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "x.mp4").exists()
    r = run_py(str(HEADLESS), "--blend", str(blend), "--", "--video-strip", "Nope", "--checkpoint", dummy_checkpoint)
    assert r.returncode == 1 and "no strip named 'Nope'" in r.stderr
    r = run_py(str(HEADLESS), "--blend", str(blend), "--")
    assert r.returncode == 2 and "--video-strip" in r.stderr


def _blender_ext_tool() -> Path:
    spec = importlib.util.find_spec("bpy")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("bpy is not installed")
    base = Path(list(spec.submodule_search_locations)[0])
    found = sorted(base.glob("*/scripts/addons_core/bl_pkg/cli/blender_ext.py"))
    if not found:
        pytest.skip("Blender's extension tool is not in this bpy")
    return found[-1]


def test_extension_build_and_install_as_other_package(tmp_path):
    tool = _blender_ext_tool()
    out = tmp_path / "dist"
    out.mkdir()
    r = subprocess.run([sys.executable, str(tool), "build", "--source-dir", str(ROOT / "blender_addon"),
                        "--output-dir", str(out)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    (zpath,) = out.glob("*.zip")
    assert zpath.name == "wav2lip_lipsync-0.1.0.zip"
    r = subprocess.run([sys.executable, str(tool), "validate", str(zpath)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    names = zipfile.ZipFile(zpath).namelist()
    assert "blender_manifest.toml" in names and "__init__.py" in names and "compat.py" in names
    assert not any("__pycache__" in n or n.endswith(".pyc") for n in names)
    # Installed, an extension lives under another package name (bl_ext.<repo>.<id>): enable it
    # under a different name and check registration, preferences id and a second cycle.
    pkg = tmp_path / "ext" / "wav2lip_lipsync"
    zipfile.ZipFile(zpath).extractall(pkg)
    code = (
        "import sys, bpy, addon_utils\n"
        f"sys.path.insert(0, {str(pkg.parent)!r})\n"
        "for _ in range(2):\n"
        "    m = addon_utils.enable('wav2lip_lipsync', default_set=True, handle_error=None)\n"
        "    assert m is not None and hasattr(bpy.types, 'SEQUENCER_OT_wav2lip_sync')\n"
        "    p = bpy.context.preferences.addons['wav2lip_lipsync'].preferences\n"
        "    assert p.output_dir == '//lipsync/', p\n"
        "    addon_utils.disable('wav2lip_lipsync', default_set=True, handle_error=None)\n"
        "    assert not hasattr(bpy.types, 'SEQUENCER_OT_wav2lip_sync')\n"
        "print('EXT OK')\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                       env=dict(os.environ, PYTHONPATH=""))
    assert "EXT OK" in r.stdout, r.stdout[-2000:] + r.stderr[-3000:]
