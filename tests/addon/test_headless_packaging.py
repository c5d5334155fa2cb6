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
# The user's own render settings, which --render must not leave changed in the saved file.
sc.render.filepath = "//my_frames/shot_"
if hasattr(sc.render.image_settings, "media_type"):
    sc.render.image_settings.media_type = "IMAGE"
sc.render.image_settings.file_format = "PNG"
sc.render.use_sequencer = False
sc.render.ffmpeg.codec = "H265" if "H265" in [i.identifier for i in sc.render.ffmpeg.bl_rna.properties["codec"].enum_items] else "PNG"
bpy.ops.wm.save_as_mainfile(filepath=out)
"""

READ_SETTINGS = """
import bpy, sys, json
bpy.ops.wm.open_mainfile(filepath=sys.argv[-1])
sc = bpy.context.scene
r = sc.render
print("SETTINGS " + json.dumps([r.filepath, r.image_settings.file_format, r.use_sequencer, r.ffmpeg.codec,
                                sc.frame_start, sc.frame_end]))
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


def media_seconds(path):
    """(video frames, audio seconds) of a rendered file, by decoding it."""
    import av

    with av.open(str(path)) as c:
        video = sum(1 for _ in c.decode(c.streams.video[0]))
    with av.open(str(path)) as c:
        a = c.streams.audio[0]
        samples = sum(f.samples for f in c.decode(a))
        return video, samples / a.rate


def saved_settings(blend):
    r = run_py(READ_SETTINGS, "--", str(blend))
    line = [x for x in r.stdout.splitlines() if x.startswith("SETTINGS ")]
    assert line, r.stderr[-2000:]
    return json.loads(line[0][len("SETTINGS "):])


def test_headless_sync_render_save(tmp_path, media, fake_python, dummy_checkpoint):
    pytest.importorskip("bpy")
    blend = make_scene(tmp_path, media)
    before = saved_settings(blend)
    assert before[:3] == ["//my_frames/shot_", "PNG", False] and before[4:] == [5, 34]
    out = tmp_path / "render" / "final.mp4"
    env = dict(os.environ, FAKE_ENGINE_LOG=str(tmp_path / "args.json"))
    r = run_py(str(HEADLESS), "--blend", str(blend), "--", "--video-strip", "Face", "--audio-strip", "Speech",
               "--checkpoint", dummy_checkpoint, "--engine-python", fake_python, "--device", "cpu",
               "--detector", "blazeface", "--detector-weights", dummy_checkpoint, "--mute-source",
               "--silence", "sync", "--blend-mode", "mouth", "--align", "off", "--sync-offset", "-1.25",
               "--enhance", dummy_checkpoint, "--enhance-fidelity", "0.3",
               "--render", str(out), "--save", env=env)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "headless: inserted 'Face.lipsync' channel 3 frames 5-34" in r.stdout
    video, audio_seconds = media_seconds(out)
    assert video == 30 and sorted(streams(out)) == ["audio", "video"]
    assert audio_seconds == pytest.approx(30 / 24, abs=0.05)  # the scene range's sound, 24 fps
    args = json.loads((tmp_path / "args.json").read_text())
    assert args["detector"] == "blazeface" and args["detector_weights"] == dummy_checkpoint
    assert (args["silence"], args["blend"], args["align"], args["sync_offset"]) == ("sync", "mouth", "off", -1.25)
    assert args["enhance"] == dummy_checkpoint and args["enhance_fidelity"] == pytest.approx(0.3)
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
    # ... and the user's own render settings, not the ones used for --render.
    assert saved_settings(blend) == before


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
    # Staged as install.py stages it: the add-on plus its own copy of the engine's protocol.py.
    spec = importlib.util.spec_from_file_location("_install_under_test", ROOT / "install.py")
    install = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = install  # (its dataclasses look their module up)
    spec.loader.exec_module(install)
    staged = install.stage_addon(tmp_path / "staged")
    r = subprocess.run([sys.executable, str(tool), "build", "--source-dir", str(staged),
                        "--output-dir", str(out)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    (zpath,) = out.glob("*.zip")
    assert zpath.name == "wav2lip_lipsync-0.1.0.zip"
    r = subprocess.run([sys.executable, str(tool), "validate", str(zpath)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    names = zipfile.ZipFile(zpath).namelist()
    assert "blender_manifest.toml" in names and "__init__.py" in names and "compat.py" in names
    assert "protocol.py" in names  # the installed add-on cannot reach wav2lip_core/
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


def test_headless_engine_python_by_name_on_path(tmp_path, media, fake_python, dummy_checkpoint):
    """`--engine-python python3`: a bare name is looked up on PATH (not taken as ./python3)."""
    pytest.importorskip("bpy")
    blend = make_scene(tmp_path, media)
    bindir = Path(fake_python).parent
    env = dict(os.environ, PATH=str(bindir) + os.pathsep + os.environ.get("PATH", ""))
    r = run_py(str(HEADLESS), "--blend", str(blend), "--", "--video-strip", "Face", "--audio-strip", "Speech",
               "--checkpoint", dummy_checkpoint, "--engine-python", Path(fake_python).name, env=env)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    r = run_py(str(HEADLESS), "--blend", str(blend), "--", "--video-strip", "Face", "--audio-strip", "Speech",
               "--checkpoint", dummy_checkpoint, "--engine-python", "no-such-python-9")
    assert r.returncode == 1
    assert "the engine Python 'no-such-python-9' is not on PATH" in r.stderr and "Traceback" not in r.stderr
