"""`blender -b scene.blend --python blender_addon/headless.py -- ... --render OUT --save` in the
real Blender program with the real engine: the synced strip is inserted, the sequencer is
rendered, and the saved .blend keeps the user's own render settings (output path, format, frame
range, resolution), which the render had to change."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from .conftest import ROOT, user_env

MEDIA = ROOT.parent / "shared" / "media"
FACE = MEDIA / "sadtalker_WDA_KatieHill_000.mp4"  # 512x512, 25 fps, 200 frames
SPEECH = MEDIA / "vretalk_audio1.wav"

# Runs inside Blender (its own Python: bpy only). Settings a user might have chosen.
MAKE_SCENE = """
import bpy, sys
face, speech, blend = sys.argv[-3:]
bpy.ops.wm.read_factory_settings(use_empty=True)
sc = bpy.context.scene
sc.render.fps, sc.render.fps_base = 25, 1.0
sc.render.resolution_x, sc.render.resolution_y, sc.render.resolution_percentage = 512, 512, 100
sc.render.image_settings.file_format = "PNG"
sc.render.filepath = "//frames/shot_"
sc.render.use_file_extension = True
sc.frame_start, sc.frame_end = 5, 40
ed = sc.sequence_editor_create()
coll = ed.strips if hasattr(ed, "strips") else ed.sequences
coll.new_sound(name="Dialogue", filepath=speech, channel=1, frame_start=1)
face_strip = coll.new_movie(name="Face", filepath=face, channel=2, frame_start=1)
face_strip.frame_offset_end = 150  # used frames 1..50 (2 s)
bpy.ops.wm.save_as_mainfile(filepath=blend)
"""

READ_BACK = """
import bpy, json, sys
bpy.ops.wm.open_mainfile(filepath=sys.argv[-1])
sc = bpy.context.scene
ed = sc.sequence_editor
coll = ed.strips_all if hasattr(ed, "strips_all") else ed.sequences_all
print("STATE " + json.dumps({
    "filepath": sc.render.filepath, "format": sc.render.image_settings.file_format,
    "extension": sc.render.use_file_extension, "range": [sc.frame_start, sc.frame_end],
    "size": [sc.render.resolution_x, sc.render.resolution_y],
    "strips": {s.name: [s.channel, s.frame_final_start, s.frame_final_duration] for s in coll}}))
"""


def blender(exe: Path, env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(exe), "-b", "--factory-startup", *args], capture_output=True, text=True, env=env,
                          timeout=600)


def state(exe: Path, env: dict, blend: Path) -> dict:
    res = blender(exe, env, "--python-exit-code", "1", "--python-expr", READ_BACK, "--", str(blend))
    line = next((ln for ln in res.stdout.splitlines() if ln.startswith("STATE ")), None)
    assert line, res.stdout[-2000:] + res.stderr[-2000:]
    return json.loads(line[len("STATE "):])


def test_headless_sync_render_save_keeps_the_users_render_settings(blender_exe, checkpoint, tmp_path):
    env = user_env(tmp_path / "home")
    blend = tmp_path / "shot.blend"
    made = blender(blender_exe, env, "--python-exit-code", "1", "--python-expr", MAKE_SCENE, "--",
                   str(FACE), str(SPEECH), str(blend))
    assert made.returncode == 0 and blend.is_file(), made.stdout[-2000:] + made.stderr[-2000:]
    before = state(blender_exe, env, blend)

    out = tmp_path / "render.mp4"
    res = blender(blender_exe, env, str(blend), "--python-exit-code", "1",
                  "--python", str(ROOT / "blender_addon" / "headless.py"), "--",
                  "--video-strip", "Face", "--audio-strip", "Dialogue", "--checkpoint", str(checkpoint),
                  "--detector", "haar", "--engine-python", sys.executable, "--render", str(out),
                  "--frame-range", "1", "50", "--save")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "Traceback" not in res.stdout + res.stderr

    import av

    with av.open(str(out)) as c:
        assert sum(1 for _ in c.decode(video=0)) == 50  # the range asked for, not the user's 5..40
    after = state(blender_exe, env, blend)
    for key in ("filepath", "format", "extension", "range", "size"):
        assert after[key] == before[key], (key, before[key], after[key])
    assert after["strips"]["Face.lipsync"] == [3, 1, 50]  # above Face (2), its used frames
    synced = tmp_path / "lipsync" / "Face.lipsync.mp4"
    assert synced.is_file() and not [p for p in synced.parent.iterdir() if p.name.startswith(".")]
