"""Runs inside a real Blender program with its window open (Xvfb), driven by
test_panel_display_window.py:

    blender --factory-startup --python display_window_script.py -- CONFIG.json

What the Lip Sync panel shows, read in the window: every text the panel draws (its draw function
is given a layout that records each call and passes it on to Blender's own), and the values the
two progress bars of a two-strip batch show, read back from the drawn buttons the way a user can:
the mouse over a bar and Ctrl+C (Blender copies the button's value to the clipboard). Blender's
config folder holds the record install.py writes; the add-on preferences stay empty. What
happened goes to the results JSON; nothing is asserted here. Standard library and bpy only.
"""

from __future__ import annotations

import os
import sys
import time

import bpy

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from window_kit import (  # noqa: E402
    CONFIG, addon_module, log, mouse_to, open_saved_file_with_addon, override,
    region_of, results, run, seq_area, show_lip_sync_tab, window, xdo)


class Spy:
    """A layout that records what the panel draws and passes every call on to Blender's."""

    CHILDREN = ("row", "column", "box", "split", "column_flow", "grid_flow")

    def __init__(self, real, record):
        object.__setattr__(self, "_real", real)
        object.__setattr__(self, "_record", record)

    def __setattr__(self, name, value):
        setattr(self._real, name, value)

    def __getattr__(self, name):
        attr = getattr(self._real, name)
        record = self._record
        if name in self.CHILDREN:
            return lambda *a, **k: Spy(attr(*a, **k), record)
        if name == "label":
            def label(*a, **k):
                record.append(["label", k.get("text", a[0] if a else ""), k.get("icon", "NONE")])
                return attr(*a, **k)
            return label
        if name == "prop":
            def prop(data, prop_name, *a, **k):
                record.append(["prop", prop_name, k.get("text")])
                return attr(data, prop_name, *a, **k)
            return prop
        if name == "operator":
            def operator(idname, *a, **k):
                record.append(["operator", idname, k.get("text"), bool(self._real.enabled)])
                return attr(idname, *a, **k)
            return operator
        return attr


_last_drawn: list = [-1.0, []]  # when the panel was last drawn, and what it drew


def watch_panel() -> None:
    panel = addon_module("panel")
    real = panel.draw_panel

    def draw_panel(layout, context):
        record: list = []
        try:
            return real(Spy(layout, record), context)
        finally:
            _last_drawn[:] = [time.monotonic(), record]

    panel.draw_panel = draw_panel


def read_panel(label: str):
    """Redraw the sidebar, wait until the panel has drawn again, keep what it drew as `label`."""
    t = time.monotonic()
    region_of(seq_area(), "UI").tag_redraw()
    end = t + 5.0
    while _last_drawn[0] <= t + 0.05 and time.monotonic() < end:
        yield 0.1
    results.setdefault("shown", {})[label] = _last_drawn[1] if _last_drawn[0] > t else []


def select_only(*names: str) -> None:
    ed = bpy.context.scene.sequence_editor
    coll = ed.strips if hasattr(ed, "strips") else ed.sequences
    for s in coll:
        s.select = s.name in names
    movies = [s for s in coll if s.name in names and s.type == "MOVIE"]
    ed.active_strip = movies[0] if movies else coll[names[0]]


def copy_bars(batch, job):
    """Ctrl+C with the mouse at each height of the panel's top: the drawn slider under the mouse
    copies its value. Records (height, clipboard, the batch's and the job's fraction then)."""
    ui = region_of(seq_area(), "UI")
    top = ui.y + ui.height
    scale = bpy.context.preferences.system.ui_scale
    x = ui.x + ui.width // 2 - int(20 * scale)  # left of the tab column
    copies = results["copies"] = []
    for dy in range(int(20 * scale), int(200 * scale), max(1, int(5 * scale))):
        mouse_to(x, top - dy)
        yield 0.15
        bpy.context.window_manager.clipboard = "-"
        xdo("key", "ctrl+c")
        yield 0.25
        p = job.engine_job.poll()
        copies.append([dy, bpy.context.window_manager.clipboard, batch.fraction(), p.fraction])


def scenario():
    prefs = yield from open_saved_file_with_addon()
    results["prefs"] = {"checkpoint": prefs.checkpoint, "engine_python": prefs.engine_python,
                        "detector_weights": prefs.detector_weights}
    bpy.context.preferences.view.ui_scale = CONFIG.get("ui_scale", 1.0)
    os.environ["FAKE_ENGINE_PACE"] = str(CONFIG.get("pace", 0.08))
    results["progress_widget"] = bool(addon_module("compat").HAS_PROGRESS_WIDGET)
    watch_panel()

    scene = bpy.context.scene
    scene.render.fps, scene.render.fps_base = 25, 1.0
    ed = scene.sequence_editor_create()
    coll = ed.strips if hasattr(ed, "strips") else ed.sequences
    face = coll.new_movie(name="Face", filepath=CONFIG["clip"], channel=1, frame_start=1)
    coll.new_sound(name="Dialogue", filepath=CONFIG["sound"], channel=2, frame_start=1)
    face2 = coll.new_movie(name="Face2", filepath=CONFIG["clip"], channel=1, frame_start=face.frame_final_end + 10)
    coll.new_sound(name="Dialogue2", filepath=CONFIG["sound"], channel=2, frame_start=face2.frame_final_start)
    far = coll.new_sound(name="Far", filepath=CONFIG["sound"], channel=3, frame_start=face2.frame_final_end + 100)
    scene.frame_start, scene.frame_end = 1, far.frame_final_end
    select_only("Face", "Dialogue")

    big = max(window().screen.areas, key=lambda a: a.width * a.height)
    big.type = "SEQUENCE_EDITOR"
    yield 0.3
    seq_area().spaces.active.show_region_ui = True
    bpy.ops.wm.save_mainfile()
    yield 1.0

    ui = region_of(seq_area(), "UI")
    results["sidebar"] = {"x": ui.x, "y": ui.y, "width": ui.width, "height": ui.height}
    results["tab_shown"], attempt = yield from show_lip_sync_tab(ui)
    log("lip sync tab", shown=results["tab_shown"], attempts=attempt)

    # 1. What the idle panel shows: settings with their names, the values a job will use.
    yield from read_panel("movie and sound")
    if os.environ.get("WAV2LIP_DISPLAY_SCREENSHOT"):  # a picture to look at (not judged)
        with override():
            bpy.ops.screen.screenshot(filepath=os.environ["WAV2LIP_DISPLAY_SCREENSHOT"])
    # 2. The sound strip alone.
    select_only("Dialogue")
    yield from read_panel("sound only")
    # 3. A movie and a sound strip that plays after it.
    select_only("Face", "Far")
    yield from read_panel("no overlap")

    # 4. Two strips at once: each bar shows its own value.
    select_only("Face", "Face2")
    yield from read_panel("two strips")
    os.environ["FAKE_ENGINE_MODE"] = "slow"
    with override():
        res = bpy.ops.sequencer.wav2lip_sync("INVOKE_DEFAULT")
    operators = addon_module("operators")
    batch, job = operators.active_batch(), operators.active_job()
    log("invoke", result=sorted(res), jobs=len(batch.jobs) if batch is not None else 0)
    end = time.monotonic() + 30
    while job is not None and job.engine_job.poll().fraction < 0.05 and time.monotonic() < end:
        yield 0.2
    if batch is not None and job is not None:
        yield from read_panel("running")
        yield from copy_bars(batch, job)
        with override(region_type="UI"):
            if bpy.ops.sequencer.wav2lip_cancel.poll():
                bpy.ops.sequencer.wav2lip_cancel()
        yield 1.0


run(scenario())
