"""Runs inside a real Blender program with its window open (Xvfb), driven by test_pick_window.py:

    blender --factory-startup --python pick_window_script.py -- CONFIG.json

Pick Face as a user meets it (issue 22): a movie strip, moved and scaled, with its sound strip in
the Sequencer's preview; Pick Face invoked over the preview, the real engine's faces request
answers, the outlines are drawn (a screenshot while picking), then the pointer is moved with
xdotool onto a clip pixel (mapped to the screen from the strip's properties here, independently
of pick_map) and clicked. What happened goes into the results JSON; nothing is asserted here.
"""

from __future__ import annotations

import math
import os
import sys

import bpy

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from window_kit import (  # noqa: E402
    CONFIG, addon_module, log, mouse_to, open_saved_file_with_addon, override, results, run,
    sequencer_preview, wait_for_faces, window, xdo)

CLIP = 700  # vretalk_face1: 700 x 700
FRAME = (960, 540)
OFFSET, SCALE = (-120.0, 30.0), 0.6


def clip_to_window(region, x, y):
    """Clip pixel (y down) to window coordinates: centred, scaled about the centre, moved (the
    strip's own numbers), then View2D's view_to_region."""
    vx = (x - CLIP / 2) * SCALE + OFFSET[0]
    vy = (CLIP / 2 - y) * SCALE + OFFSET[1]
    rx, ry = region.view2d.view_to_region(vx, vy, clip=False)
    return region.x + rx, region.y + ry


def scenario():
    prefs = yield from open_saved_file_with_addon()
    prefs.engine_python = CONFIG["engine_python"]
    if CONFIG.get("detector_weights"):
        prefs.detector, prefs.detector_weights = "blazeface", CONFIG["detector_weights"]
    scene = bpy.context.scene
    scene.render.resolution_x, scene.render.resolution_y, scene.render.resolution_percentage = *FRAME, 100
    scene.render.fps = 25
    ed = scene.sequence_editor_create()
    coll = ed.strips if hasattr(ed, "strips") else ed.sequences
    face = coll.new_movie(name="Face", filepath=CONFIG["clip"], channel=2, frame_start=1)
    sound = coll.new_sound(name="Dialogue_A", filepath=CONFIG["audio"], channel=1, frame_start=1)
    face.transform.offset_x, face.transform.offset_y = OFFSET
    face.transform.scale_x = face.transform.scale_y = SCALE
    for s in (face, sound):
        s.select = True
    ed.active_strip = face
    scene.frame_current = 25
    area, region = yield from sequencer_preview()
    results["regions"] = {r.type: [r.x, r.y, r.width, r.height] for r in area.regions}
    with bpy.context.temp_override(window=window(), screen=window().screen, area=area, region=region):
        bpy.ops.sequencer.view_all_preview()
    yield 0.5
    # The pointer over the preview, then Pick Face as from the panel's button (INVOKE).
    cx, cy = region.x + region.width // 2, region.y + region.height // 2
    mouse_to(cx, cy, sync=True)
    yield 0.3
    with bpy.context.temp_override(window=window(), screen=window().screen, area=area, region=region):
        results["invoke"] = sorted(bpy.ops.sequencer.wav2lip_pick_face("INVOKE_DEFAULT"))
    pick_face = addon_module("pick_face")
    yield from wait_for_faces(120, 0.5)
    s = pick_face.session()
    results["faces"] = s.boxes if s is not None else None
    results["message"] = s.message if s is not None else None
    results["face_time"] = s.face_time if s is not None else None
    if not results["faces"]:
        results["completed"] = True
        return
    # Hover the largest face: its outline turns yellow; the screenshot shows it.
    x1, y1, x2, y2 = results["faces"][0]
    target = ((x1 + x2) // 2 + 7, (y1 + y2) // 2 - 5)  # inside the box, off its centre
    wx, wy = clip_to_window(region, *target)
    mouse_to(int(round(wx)), int(round(wy)), sync=True)
    yield 0.6
    results["hover"] = pick_face.session().hover
    shot = os.path.join(CONFIG["work"], "pick_face.png")
    with override(area=area, region_type="PREVIEW"):
        bpy.ops.screen.screenshot(filepath=shot)
    results["screenshot"] = shot
    results["preview_on_screen"] = [region.x, region.y, region.width, region.height]
    xdo("click", "1")
    yield 0.8
    picks = addon_module("picks")
    results["picks"] = [{"x": p.x, "y": p.y, "time": picks.face_time(p), "sound": p.sound, "label": picks.label(i, p)}
                        for i, p in enumerate(picks.picks_of(face))]
    results["session_after"] = pick_face.session() is not None
    # A second pick off any box: the clicked pixel itself.
    with bpy.context.temp_override(window=window(), screen=window().screen, area=area, region=region):
        bpy.ops.sequencer.wav2lip_pick_face("INVOKE_DEFAULT")
    yield 0.3
    target2 = (40, 660)  # bottom left corner of the clip: no face there
    wx, wy = clip_to_window(region, *target2)
    mouse_to(int(math.floor(wx)), int(math.floor(wy)), sync=True)
    yield 0.4
    xdo("click", "1")
    yield 0.8
    results["picks2"] = [{"x": p.x, "y": p.y} for p in picks.picks_of(face)]
    results["target"], results["target2"] = list(target), list(target2)
    log("picked", picks=results["picks2"])
    results["completed"] = True


run(scenario())
