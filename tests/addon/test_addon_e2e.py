"""The add-on end to end with the real engine (`python -m wav2lip_core`), inside real Blender.

Kept short (30-60 frames at 512x512) for CI on two cores."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from .conftest import add_movie, add_sound, deselect_all, strips
from .test_timing_blender import numbered, write_clicks  # noqa: F401 - numbered is a fixture

ROOT = Path(__file__).resolve().parents[2]
KATIE = "sadtalker_WDA_KatieHill_000.mp4"  # 512x512, 25 fps, 200 frames
SPEECH = "vretalk_audio1.wav"
KATIE_BOX = (150, 460, 130, 410)  # top, bottom, left, right of her face

pytestmark = pytest.mark.skipif(
    not ((ROOT / "wav2lip_core" / "__main__.py").is_file() or (ROOT / "wav2lip_core" / "cli.py").is_file()),
    reason="the core's command line (wav2lip_core/cli.py) is not there yet",
)


def frames_of(path):
    import av

    with av.open(str(path)) as c:
        s = c.streams.video[0]
        rate = float(s.average_rate)
        return [f.to_ndarray(format="rgb24") for f in c.decode(s)], rate


def test_e2e_operator_real_engine(fresh, media, checkpoint, blazeface_dir, engine_python, tmp_path):
    bpy, scene = fresh
    face = add_movie(scene, "Face", media / KATIE, 2, 1)
    face.frame_offset_start = 8   # used scene frames 9 .. 38 = clip frames 8 .. 37
    face.frame_offset_end = 162
    speech = add_sound(scene, "Speech", media / SPEECH, 1, 4)
    deselect_all(scene)
    face.select = speech.select = True
    scene.sequence_editor.active_strip = face
    blend = tmp_path / "proj" / "e2e.blend"
    blend.parent.mkdir()
    bpy.ops.wm.save_as_mainfile(filepath=str(blend))
    scene = bpy.context.scene
    before = {s.name for s in strips(scene)}

    res = bpy.ops.sequencer.wav2lip_sync(
        checkpoint=str(checkpoint), engine_python=engine_python, device="cpu",
        detector="blazeface", detector_weights=str(blazeface_dir / "blazeface.pth"))
    assert res == {"FINISHED"}
    new = [s for s in strips(scene) if s.name not in before]
    assert len(new) == 1
    out = new[0]
    assert (out.name, out.channel, out.frame_final_start, out.frame_final_duration) == ("Face.lipsync", 3, 9, 30)
    path = bpy.path.abspath(out.filepath)
    assert out.filepath.startswith("//lipsync/") and os.path.isfile(path)
    frames, rate = frames_of(path)
    assert len(frames) == 30 and rate == pytest.approx(24)
    assert frames[0].shape == (512, 512, 3)

    bpy.ops.wm.save_mainfile()
    bpy.ops.wm.open_mainfile(filepath=str(blend))
    again = bpy.context.scene.sequence_editor.active_strip or bpy.context.scene.sequence_editor.strips["Face.lipsync"]
    assert again.name == "Face.lipsync" and os.path.isfile(bpy.path.abspath(again.filepath))


def _mel_window_loud(i, fps, bursts_out, burst_len=0.04):
    """Whether frame i's mel window (reference rule: 16 columns from int(i*80/fps), each column a
    50 ms STFT frame centred at col/80 s) hears a burst starting at one of `bursts_out`."""
    m = int(i * 80 / fps)
    lo, hi = m / 80 - 0.025, (m + 15) / 80 + 0.025
    return any(b < hi and b + burst_len > lo for b in bursts_out)


def test_e2e_timing_click_train(fresh, media, loud_checkpoint, engine_python, tmp_path):
    """Frames whose mel window holds a click show the mouth change at the scene frames where the
    click plays: the best lag between predicted and observed is 0 (+-1 frame)."""
    bpy, scene = fresh
    from blender_addon import capture, compat
    from blender_addon.scene_time import plan

    bursts = [0.3, 0.7, 1.2, 1.55, 2.05, 2.4]  # irregular: no lag matches by periodicity
    clicks = write_clicks(tmp_path / "clicks.wav", bursts=bursts)
    face = add_movie(scene, "Face", media / KATIE, 2, 1)  # 25 fps clip, 24 fps scene
    face.frame_offset_start = 10  # used scene frames 11 .. 70 (60 frames)
    face.frame_offset_end = 130
    snd = add_sound(scene, "Clicks", clicks, 1, 5)  # starts 6 frames before the video
    if hasattr(snd, "sound_offset"):
        snd.sound_offset = 0.1
    deselect_all(scene)
    face.select = snd.select = True
    req = plan(capture.strip_info(scene, face), capture.strip_info(scene, snd), compat.scene_fps(scene))

    # The model drives every frame (--silence sync): short clicks between silences are what this
    # measures, and holding the source mouth in silence is not what is tested here.
    prefs = bpy.context.preferences.addons["blender_addon"].preferences
    prefs.silence = "sync"
    try:
        res = bpy.ops.sequencer.wav2lip_sync(
            checkpoint=str(loud_checkpoint), engine_python=engine_python, device="cpu",
            detector="box", box=KATIE_BOX, output_dir=str(tmp_path / "out"))
    finally:
        prefs.silence = "hold"
    assert res == {"FINISHED"}
    out = scene.sequence_editor.active_strip
    assert (out.frame_final_start, out.frame_final_duration) == (11, 60)
    got, _ = frames_of(bpy.path.abspath(out.filepath))
    assert len(got) == 60

    # Baseline: the same job with silence. The difference isolates what the audio does (the
    # face moves too, so the click run alone is noisy).
    silence = write_clicks(tmp_path / "silence.wav", bursts=[])
    times = tmp_path / "times.json"
    times.write_text(req.source_times_json())
    args = req.engine_args(checkpoint=str(loud_checkpoint), out=str(tmp_path / "silent.mp4"),
                           source_times_path=str(times), box=KATIE_BOX, device="cpu", extra=("--silence", "sync"))
    args[args.index("--audio") + 1] = str(silence)
    r = subprocess.run([engine_python, "-m", "wav2lip_core", *args], capture_output=True, text=True,
                       cwd=str(ROOT), timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    base, _ = frames_of(tmp_path / "silent.mp4")
    assert len(base) == 60

    top, bottom, left, right = KATIE_BOX
    mouth = (slice(top + (bottom - top) // 2, bottom), slice(left + (right - left) // 5, right - (right - left) // 5))
    e = np.array([np.abs(g[mouth].astype(float) - b[mouth].astype(float)).mean() for g, b in zip(got, base)])

    fps = compat.scene_fps(scene)
    bursts_out = [b - req.audio_start for b in bursts]  # output seconds where the clicks play
    n = len(e)

    def score(lag):
        """How much more the mouth changes in frames predicted loud (shifted by `lag`)."""
        pred = np.array([_mel_window_loud(i - lag, fps, bursts_out) for i in range(n)])
        if pred.all() or not pred.any():
            return 0.0
        return (e[pred].mean() - e[~pred].mean()) / (e.std() + 1e-9)

    scores = {lag: round(score(lag), 2) for lag in range(-8, 9)}
    best = max(scores, key=lambda k: scores[k])
    assert abs(best) <= 1, scores
    assert scores[0] > 1.0, scores  # a clear separation, not noise
    assert all(v < 0.5 * scores[0] for k, v in scores.items() if abs(k) >= 3), scores


def test_e2e_headless_render(tmp_path, media, checkpoint, engine_python):
    from .test_headless_packaging import HEADLESS, make_scene, run_py, streams

    blend = make_scene(tmp_path, media)  # 24 fps; Face used 5..34; Speech from 1; render 5..34
    out = tmp_path / "final.mp4"
    r = run_py(str(HEADLESS), "--blend", str(blend), "--", "--video-strip", "Face", "--audio-strip", "Speech",
               "--checkpoint", str(checkpoint), "--engine-python", engine_python, "--device", "cpu",
               "--box", *map(str, KATIE_BOX), "--render", str(out), "--save")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    s = streams(out)
    assert s.get("video") == 30 and s.get("audio", 0) > 0
    assert (tmp_path / "lipsync" / "Face.lipsync.mp4").is_file()


@pytest.mark.parametrize("clip, adjust", [("cfr30", True), ("vfr", True)])
def test_e2e_picture_matches_blender_render(clip, adjust, fresh, numbered, checkpoint, engine_python, tmp_path):
    """The synced clip shows, at each output frame, the clip frame Blender renders at that scene
    frame: numbered clips (a 30 fps clip with "adjust playback rate" in a 25 fps scene, a
    variable-rate clip), the real engine, the face box on the bottom rows so the numbers above
    are untouched."""
    from .numbered_clip import SIZE, read_number, render_sequencer
    from .test_timing_blender import add_movie_as_ui

    bpy, scene = fresh
    scene.render.fps, scene.render.fps_base = 25, 1.0
    scene.render.resolution_x = scene.render.resolution_y = SIZE
    face = add_movie_as_ui(bpy, scene, numbered[clip], 2, 1, adjust)
    face.frame_offset_start = 3
    face.frame_offset_end = max(0, face.frame_duration - 33)  # scene frames 4..33
    snd = add_sound(scene, "S", write_clicks(tmp_path / "c.wav"), 1, 1)
    deselect_all(scene)
    face.select = snd.select = True
    scene.sequence_editor.active_strip = face
    used = list(range(face.frame_final_start, face.frame_final_end))
    res = bpy.ops.sequencer.wav2lip_sync(
        checkpoint=str(checkpoint), engine_python=engine_python, device="cpu",
        detector="box", box=(SIZE - 16, SIZE, 0, SIZE), output_dir=str(tmp_path / "out"))
    assert res == {"FINISHED"}
    out = scene.sequence_editor.active_strip
    assert (out.frame_final_start, out.frame_final_duration) == (used[0], len(used))
    got, _ = frames_of(bpy.path.abspath(out.filepath))
    engine = [read_number(f, rows=slice(4, SIZE // 2)) for f in got]
    out.mute = True  # render the source strip, not the result above it
    blender = [read_number(img, rows=slice(4, SIZE // 2)) for img in render_sequencer(bpy, scene, used, tmp_path / "r")]
    assert engine == blender
    assert len(set(blender)) < len(blender) or clip == "cfr30"
