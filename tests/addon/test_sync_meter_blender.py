"""The sync meter in the add-on (bpy): the panel's "Sync: ..." line after a sync (the real warm
engine's done event), the Measure button (the real engine measuring a real clip with its own
sound), and the Auto toggle reaching the engine's arguments (the stand-in engine, which parses
them with the engine's own parser)."""

from __future__ import annotations

import json
import time

from .conftest import add_movie, add_sound, deselect_all
from .test_panel_blender import draw

KATIE = "sadtalker_WDA_KatieHill_000.mp4"  # 512x512, 25 fps
FACE1 = "vretalk_face1.mp4"  # its own speech; the meter reads +1.26 frames
SPEECH = "vretalk_audio1.wav"
KATIE_BOX = (150, 460, 130, 410)


def _labels(log):
    return [e[1] for e in log if e[0] == "label"]


def test_the_reading_line_texts():
    from blender_addon import sync_meter
    from blender_addon.job_state import Progress

    p = Progress(sync_offset_measured=0.3, sync_confidence=0.7, sync_verdict="in sync")
    assert sync_meter.text(sync_meter.reading_of(p, "Face")) == "Sync: +0.3 frames (good)"
    p = Progress(sync_offset_measured=-1.84, sync_confidence=0.6, sync_verdict="mouth 1.8 frames early")
    assert sync_meter.text(sync_meter.reading_of(p, "Face")) == "Sync: -1.8 frames (mouth early)"
    p = Progress(sync_offset_measured=None, sync_confidence=0.1, sync_verdict="no sync found")
    assert sync_meter.text(sync_meter.reading_of(p, "Face")) == "Sync: no sync found"
    assert sync_meter.reading_of(Progress(), "Face") is None  # --no-meter: nothing to show


def test_the_panel_shows_the_last_syncs_reading(fresh, media, checkpoint, engine_python, tmp_path):
    bpy, scene = fresh
    from blender_addon import sync_meter

    movie = add_movie(scene, "Shot", media / KATIE, 2, 1)
    movie.frame_offset_end = movie.frame_duration - 60  # 2.5 s: a verdict, not "too short"
    add_sound(scene, "Speech", media / SPEECH, 1, 1)
    deselect_all(scene)
    movie.select = True
    scene.sequence_editor.active_strip = movie
    res = bpy.ops.sequencer.wav2lip_sync(checkpoint=str(checkpoint), engine_python=engine_python, device="cpu",
                                         detector="box", box=KATIE_BOX, output_dir=str(tmp_path / "out"))
    assert res == {"FINISHED"}
    reading = sync_meter.last()
    assert reading is not None and reading.source == "Shot"
    # The random-weight checkpoint's mouths are not mouths: whatever it reads is shown as read.
    expected = sync_meter.text(reading)
    assert expected.startswith("Sync: ")
    assert expected in _labels(draw(bpy))


def test_measure_runs_the_meter_on_the_warm_engine(fresh, media, engine_python, blazeface_dir, tmp_path):
    bpy, scene = fresh
    from blender_addon import sync_meter

    prefs = bpy.context.preferences.addons["blender_addon"].preferences
    saved = (prefs.engine_python, prefs.detector, prefs.detector_weights)
    prefs.engine_python, prefs.detector = engine_python, "blazeface"
    prefs.detector_weights = str(blazeface_dir / "blazeface.pth")
    try:
        movie = add_movie(scene, "Talk", media / FACE1, 2, 1)
        deselect_all(scene)
        movie.select = True
        scene.sequence_editor.active_strip = movie
        assert ("operator", "sequencer.wav2lip_measure", "Measure", True) in draw(bpy)
        assert bpy.ops.sequencer.wav2lip_measure() == {"FINISHED"}
        # The panel follows it by a main-thread timer (timers do not run in the bpy module's
        # background mode: the window tests see them run); it keeps going while the measure runs.
        assert bpy.app.timers.is_registered(sync_meter._redraw_while_measuring)
        end = time.monotonic() + 300
        while sync_meter.measuring() is not None and time.monotonic() < end:
            time.sleep(0.1)
        assert sync_meter._redraw_while_measuring() is None  # done: the last redraw, then it stops
        bpy.app.timers.unregister(sync_meter._redraw_while_measuring)
        reading = sync_meter.last()
        assert reading is not None and reading.source == "Talk", reading
        assert reading.offset is not None and abs(reading.offset - 1.26) < 0.3, reading
        assert sync_meter.text(reading) == f"Sync: {reading.offset:+.1f} frames (mouth late)"
        assert sync_meter.text(reading) in _labels(draw(bpy))
    finally:
        prefs.engine_python, prefs.detector, prefs.detector_weights = saved


def test_the_auto_toggle_reaches_the_engine(fresh, media, fake_python, dummy_checkpoint, engine_log, tmp_path):
    bpy, scene = fresh
    movie = add_movie(scene, "Shot", media / KATIE, 2, 1)
    movie.frame_offset_end = movie.frame_duration - 12
    add_sound(scene, "Speech", media / SPEECH, 1, 1)
    deselect_all(scene)
    movie.select = True
    scene.sequence_editor.active_strip = movie
    scene.wav2lip.sync_offset = 1.5
    scene.wav2lip.sync_offset_auto = True
    assert ("prop", scene.wav2lip, "sync_offset_auto", "Auto") in [e[:4] for e in draw(bpy)]
    kw = dict(checkpoint=dummy_checkpoint, engine_python=fake_python, device="cpu", detector="box", box=KATIE_BOX,
              output_dir=str(tmp_path / "out"))
    assert bpy.ops.sequencer.wav2lip_sync(**kw) == {"FINISHED"}
    argv = json.loads(engine_log.read_text())["argv"]
    assert argv[argv.index("--sync-offset") + 1] == "auto"
    scene.wav2lip.sync_offset_auto = False
    assert bpy.ops.sequencer.wav2lip_sync(**kw) == {"FINISHED"}
    argv = json.loads(engine_log.read_text())["argv"]
    assert argv[argv.index("--sync-offset") + 1] == "1.5"
