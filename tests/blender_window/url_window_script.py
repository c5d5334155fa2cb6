"""Runs inside a real Blender program with its window open (Xvfb), driven by test_url_window.py:

    blender --factory-startup --python url_window_script.py -- CONFIG.json

Movie from URL as a user meets it (issue 20): the add-on enabled from the checkout in a saved
file, then (1) the Lip Sync panel's fields filled and its Add button's call (EXEC, no dialog) with
the real engine downloading a 2 s range of a throttled clip from the test's server on 127.0.0.1,
while this script's own 0.1 s timer keeps ticking (the UI answers) and the panel's progress text
is sampled; (2) the Add menu's entry (INVOKE: the dialog) confirmed with Return, as a user does,
for the whole clip. What happened is written to the results JSON; nothing is asserted here.
Standard library and bpy only.
"""

from __future__ import annotations

import os
import sys
import time

import bpy

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from window_kit import (  # noqa: E402
    CONFIG, T0, addon_module, log, mouse_to, open_saved_file_with_addon, override, results, run, seq_area, window, xdo)

results.update({"ticks": [], "progress": [], "runs": []})


def tick_probe():
    results["ticks"].append(round(time.monotonic() - T0, 3))
    return 0.1


def strips_now() -> list:
    ed = bpy.context.scene.sequence_editor
    coll = (ed.strips_all if hasattr(ed, "strips_all") else ed.sequences_all) if ed is not None else []
    return [{"name": s.name, "type": s.type, "channel": s.channel, "start": s.frame_final_start,
             "length": s.frame_final_duration, "select": s.select,
             "path": s.filepath if s.type == "MOVIE" else s.sound.filepath} for s in coll]


def wait_for_strips(count: int, label: str, limit: float = 90.0):
    url_fetch = addon_module("url_fetch")
    t_start = time.monotonic()
    while len(strips_now()) < count and time.monotonic() - t_start < limit:
        fetch = url_fetch.active_fetch()
        if fetch is not None:
            results["progress"].append([round(time.monotonic() - T0, 3), label, *url_fetch.progress_text(fetch)])
        yield 0.2
    results["runs"].append({"label": label, "seconds": round(time.monotonic() - t_start, 2),
                            "active_after": url_fetch.active_fetch() is not None})
    log("strips", label=label, strips=strips_now())


def scenario():
    prefs = yield from open_saved_file_with_addon()
    prefs.engine_python = CONFIG["engine_python"]
    bpy.app.timers.register(tick_probe, first_interval=0.1)
    scene = bpy.context.scene
    scene.sequence_editor_create()
    big = max(window().screen.areas, key=lambda a: a.width * a.height)
    big.type = "SEQUENCE_EDITOR"
    yield 0.5
    scene.frame_current = 12
    results["fps_before"] = [scene.render.fps, scene.render.fps_base]
    results["add_menu"] = addon_module("url_operators").menu_func in bpy.types.SEQUENCER_MT_add._dyn_ui_initialize()

    # (1) The panel's fields and its Add button (the button runs the operator with them, no dialog).
    s = scene.wav2lip
    s.fetch_url, s.fetch_from, s.fetch_to, s.fetch_channel = CONFIG["slow_url"], 1.0, 3.0, 2
    t_call = time.monotonic()
    with override():
        res = bpy.ops.sequencer.wav2lip_movie_from_url("EXEC_DEFAULT", url=s.fetch_url, start=s.fetch_from,
                                                       end=s.fetch_to, channel=s.fetch_channel)
    results["panel_call"] = {"result": sorted(res), "returned_after": round(time.monotonic() - t_call, 3)}
    log("panel add", result=sorted(res))
    yield from wait_for_strips(2, "panel")
    results["after_panel"] = strips_now()
    results["fps_after"] = [scene.render.fps, scene.render.fps_base]

    # (2) The Add menu's entry: its dialog, confirmed with Return with the pointer over it.
    area = seq_area()
    mouse_to(area.x + area.width // 2, area.y + area.height // 2, sync=True)
    yield 0.3
    scene.frame_current = 100
    with override():
        res = bpy.ops.sequencer.wav2lip_movie_from_url("INVOKE_DEFAULT", url=CONFIG["url"], channel=1)
    results["dialog_invoke"] = sorted(res)
    log("dialog", result=sorted(res))
    yield 1.0
    xdo("key", "Return")
    yield from wait_for_strips(4, "dialog")
    results["after_dialog"] = strips_now()
    media = os.path.join(CONFIG["work"], "media")
    results["media"] = sorted(os.listdir(media)) if os.path.isdir(media) else None


run(scenario())
