"""Runs inside a real Blender program with its window open (Xvfb), driven by
test_two_speakers_window.py:

    blender --factory-startup --python two_speakers_window_script.py -- CONFIG.json

Two people, two voices, one Sync, as a user does it: the two-shot clip (two_shot.py) with two
sound strips under it; the sidebar dragged wider; the movie and the first sound selected, Pick
Face over the preview, a click on the left face; the movie and the second sound selected, Pick
Face again, a click on the right face; Pick Face once more for the picture (a screenshot of the
window: both faces outlined, the hovered one highlighted, the panel listing both picks), Esc;
then the panel's Sync button clicked with the mouse (found by hovering it and copying its Python
command) and the result strip waited for. What
happened goes into the results JSON; nothing is asserted here.
"""

from __future__ import annotations

import os
import sys
import time

import bpy

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from window_kit import (  # noqa: E402
    COPY_KEY, CONFIG, NO_BUTTON, add_copy_key, addon_module, log, mouse_to, open_saved_file_with_addon, override,
    rect, region_of, results, run, sequencer_preview, show_lip_sync_tab, wait_for_faces, window, xdo)

SYNC_OP = "bpy.ops.sequencer.wav2lip_sync("


def clip_to_window(region, x, y):
    """Clip pixel (y down) to window coordinates: the clip fills the frame (same size, no
    transform) and the preview's view is centred on the frame (View2D's view_to_region)."""
    w, h = CONFIG["clip_size"]
    rx, ry = region.view2d.view_to_region(x - w / 2, h / 2 - y, clip=False)
    return int(round(region.x + rx)), int(round(region.y + ry))


def select(face, sound) -> None:
    ed = bpy.context.scene.sequence_editor
    for s in (ed.strips_all if hasattr(ed, "strips_all") else ed.sequences_all):
        s.select = s in (face, sound)
    ed.active_strip = face


def pick(area, region, which: int):
    """Pick Face, then a click on face `which` (left to right) of those found; the faces found."""
    pick_face = addon_module("pick_face")
    mouse_to(region.x + region.width // 2, region.y + region.height // 2, sync=True)
    yield 0.2
    with bpy.context.temp_override(window=window(), screen=window().screen, area=area, region=region):
        results.setdefault("invoke", []).append(sorted(bpy.ops.sequencer.wav2lip_pick_face("INVOKE_DEFAULT")))
    yield from wait_for_faces(60)
    s = pick_face.session()
    boxes = sorted(s.boxes, key=lambda b: b[0]) if s is not None else []
    log("faces", boxes=boxes, message=s.message if s is not None else None)
    if len(boxes) <= which:
        return boxes
    x1, y1, x2, y2 = boxes[which]
    mouse_to(*clip_to_window(region, (x1 + x2) // 2 + 3, (y1 + y2) // 2 + 2), sync=True)
    yield 0.6
    hovered = pick_face.session().hover
    results.setdefault("hover", []).append(s.boxes[hovered] if hovered is not None else None)
    xdo("click", "1")
    yield 0.6
    return boxes


def screenshot_while_picking(area, region, which: int, name: str):
    pick_face = addon_module("pick_face")
    with bpy.context.temp_override(window=window(), screen=window().screen, area=area, region=region):
        results["invoke"].append(sorted(bpy.ops.sequencer.wav2lip_pick_face("INVOKE_DEFAULT")))
    yield from wait_for_faces(60)
    s = pick_face.session()
    boxes = sorted(s.boxes, key=lambda b: b[0]) if s is not None else []
    if len(boxes) > which:
        x1, y1, x2, y2 = boxes[which]
        mouse_to(*clip_to_window(region, (x1 + x2) // 2 - 4, (y1 + y2) // 2 + 3), sync=True)
        yield 0.6
        results["screenshot_hover"] = s.boxes[s.hover] if s.hover is not None else None
        path = os.path.join(CONFIG["work"], name)
        with override(area=area, region_type="PREVIEW"):
            bpy.ops.screen.screenshot(filepath=path)  # the whole window
        results["screenshot"] = path
        w, h = CONFIG["clip_size"]
        (l, b), (r, t) = clip_to_window(region, 0, h), clip_to_window(region, w, 0)
        results["clip_on_screen"] = [l, b, r, t]
    xdo("key", "Escape")
    yield 0.5
    results["session_after_escape"] = pick_face.session() is not None


def find_sync_button(ui):
    """(x, y) of the sidebar's Sync button: the pointer moved down the panel, the button under it
    copied (COPY_KEY) until it is Sync; None when there is none."""
    wm = bpy.context.window_manager
    x = ui.x + int(ui.width * 0.3)
    for y in range(ui.y + ui.height - 12, max(ui.y, ui.y + ui.height - 700), -16):
        wm.clipboard = NO_BUTTON
        mouse_to(x, y, sync=True)
        yield 0.05
        xdo("key", COPY_KEY[1])
        yield 0.15
        cmd = wm.clipboard
        if cmd.startswith(SYNC_OP) and "preview=True" not in cmd:
            return x, y
    return None


def widen_sidebar(area, extra: int):
    """Drag the sidebar's left edge `extra` px to the left, as a user does (the picks' lines fit)."""
    ui = region_of(area, "UI")
    if extra <= 0:
        return
    y = ui.y + ui.height // 3
    mouse_to(ui.x + 1, y, sync=True)
    yield 0.2
    xdo("mousedown", "1")
    for step in range(1, 6):
        yield 0.05
        mouse_to(ui.x + 1 - extra * step // 5, y, sync=True)
    yield 0.1
    xdo("mouseup", "1")
    yield 0.3


def scenario():
    prefs = yield from open_saved_file_with_addon()
    prefs.engine_python = CONFIG["engine_python"]
    prefs.checkpoint = CONFIG["checkpoint"]
    prefs.detector, prefs.detector_weights = "blazeface-back", CONFIG["detector_weights"]
    prefs.device = "cpu"
    add_copy_key()
    scene = bpy.context.scene
    w, h = CONFIG["clip_size"]
    scene.render.resolution_x, scene.render.resolution_y, scene.render.resolution_percentage = w, h, 100
    scene.render.fps, scene.render.fps_base = CONFIG["fps"], 1.0
    ed = scene.sequence_editor_create()
    coll = ed.strips if hasattr(ed, "strips") else ed.sequences
    face = coll.new_movie(name="Face", filepath=CONFIG["clip"], channel=3, frame_start=1)
    sounds = [coll.new_sound(name=s["name"], filepath=s["path"], channel=1 + i, frame_start=s["frame"])
              for i, s in enumerate(CONFIG["sounds"])]
    scene.frame_start, scene.frame_end = 1, face.frame_final_end - 1
    scene.frame_current = 1

    # The biggest editor becomes the Sequencer's preview with its sidebar (the Lip Sync panel).
    area, region = yield from sequencer_preview(sidebar=True)
    ui = region_of(area, "UI")
    select(face, sounds[0])
    results["tab_shown"], _ = yield from show_lip_sync_tab(ui)
    yield from widen_sidebar(area, CONFIG.get("widen_sidebar", 0))
    region = next(r for r in area.regions if r.type == "PREVIEW" and r.width > 1)
    ui = region_of(area, "UI")
    with bpy.context.temp_override(window=window(), screen=window().screen, area=area, region=region):
        bpy.ops.sequencer.view_all_preview()
    yield 0.5
    results["area"], results["preview"], results["sidebar"] = rect(area), rect(region), rect(ui)
    results["window"] = rect(window())

    # Face 1: the left one, bound to the first sound (selected with the movie).
    boxes = yield from pick(area, region, 0)
    results["faces"] = boxes
    # Face 2: the right one, bound to the second sound.
    select(face, sounds[1])
    yield 0.3
    boxes2 = yield from pick(area, region, 1)
    results["faces2"] = boxes2
    # The picture: Pick Face once more with both picks in the panel, the pointer on the right
    # face; the screenshot, then Esc (nothing picked).
    yield from screenshot_while_picking(area, region, 1, "pick_face_window.png")
    picks = addon_module("picks")
    results["picks"] = [{"x": p.x, "y": p.y, "time": picks.face_time(p), "sound": p.sound, "label": picks.label(i, p)}
                        for i, p in enumerate(picks.picks_of(face))]
    log("picked", picks=results["picks"])
    if len(results["picks"]) != 2:
        return

    # Sync, clicked in the panel.
    ui = region_of(area, "UI")
    pos = yield from find_sync_button(ui)
    results["sync_button"] = pos
    results["sidebar"] = rect(ui)
    if pos is None:
        return
    xdo("click", "1")  # (the pointer is on it: where the scan stopped)
    yield 1.0
    operators = addon_module("operators")
    t0 = time.monotonic()
    while time.monotonic() - t0 < CONFIG.get("sync_timeout", 120) and operators.active_job() is not None:
        yield 0.5
    yield 0.5
    coll = ed.strips_all if hasattr(ed, "strips_all") else ed.sequences_all
    out = coll.get("Face.lipsync")
    results["result"] = None if out is None else {
        "filepath": bpy.path.abspath(out.filepath), "start": out.frame_final_start,
        "frames": out.frame_final_duration, "channel": out.channel}
    log("synced", result=results["result"], seconds=round(time.monotonic() - t0, 1))


run(scenario())
