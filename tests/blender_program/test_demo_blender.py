"""`python3 install.py --demo`, the README's first command, end to end: with the real Blender
program on PATH (the add-on inside Blender 3.4+), and with no Blender program at all (the bpy
module in the engine environment). Each leaves a synced clip, a render and a .blend."""

from __future__ import annotations

import json
import subprocess
import sys
import wave
from pathlib import Path

from .conftest import python_only_path, run_install, user_env

FPS = 25  # the demo scene's rate

READ_BLEND = """
import bpy, json, sys
bpy.ops.wm.open_mainfile(filepath=sys.argv[-1])
sc = bpy.context.scene
ed = sc.sequence_editor
coll = ed.strips_all if hasattr(ed, "strips_all") else ed.sequences_all
print("BLEND " + json.dumps({s.name: [s.channel, s.frame_final_start, s.frame_final_duration,
                                       bpy.path.abspath(getattr(s, "filepath", "") or "")] for s in coll}))
"""


def video_frames(path: Path) -> int:
    import av

    with av.open(str(path)) as c:
        return sum(1 for _ in c.decode(video=0))


def check_demo(out: Path, stdout: str) -> None:
    blend, render = out / "demo.blend", out / "demo_render.mp4"
    synced = out / "lipsync" / "Face.lipsync.mp4"
    for p in (blend, render, synced):
        assert p.is_file(), f"{p} missing\n{stdout[-3000:]}"
        assert str(p) in stdout  # and the user is told where
    with wave.open(str(out / "speech.wav")) as w:
        seconds = w.getnframes() / w.getframerate()
    frames = video_frames(render)
    assert abs(frames - seconds * FPS) <= 1, (frames, seconds)
    assert video_frames(synced) == frames
    # The .blend holds the synced strip above the face, as long as the scene (read with bpy).
    res = subprocess.run([sys.executable, "-c", READ_BLEND, str(blend)], capture_output=True, text=True, timeout=300)
    line = next((ln for ln in res.stdout.splitlines() if ln.startswith("BLEND ")), None)
    assert line, res.stdout[-2000:] + res.stderr[-2000:]
    strips = json.loads(line[len("BLEND "):])
    channel, start, duration, path = strips["Face.lipsync"]
    assert channel > strips["Face"][0] and start == 1 and duration == frames and Path(path) == synced


def test_demo_with_blender_program(blender_exe, engine_env, tmp_path):
    env = user_env(tmp_path / "home")  # PATH as it is: Blender on it
    res = run_install(env, "--demo", "--venv", str(engine_env))
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]
    assert f"lip-syncing through headless Blender (Blender {blender_exe})" in res.stdout
    assert "Traceback" not in res.stdout + res.stderr, res.stderr[-4000:]
    check_demo(tmp_path / "home" / "wav2lip-demo", res.stdout)


def test_demo_without_blender_program(engine_env, tmp_path):
    env = user_env(tmp_path / "home", path=python_only_path(tmp_path / "bin"))
    res = run_install(env, "--demo", "--venv", str(engine_env))
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]
    assert "Blender: not found" in res.stdout and "lip-syncing through headless Blender (the bpy module)" in res.stdout
    # The way on names the engine just used, not the default one (which does not exist).
    assert f"then: python3 install.py --venv {engine_env} --checkpoint PATH --demo" in res.stdout, res.stdout[-3000:]
    assert "Traceback" not in res.stdout + res.stderr, res.stderr[-4000:]
    check_demo(tmp_path / "home" / "wav2lip-demo", res.stdout)
