"""What every window script shares (runs inside a real Blender program with its window open,
under Xvfb): the run's config and results, the log, the window's areas and regions, the pointer
moved with xdotool, and the timer that steps a scenario through Blender's own event loop.

A script does `from window_kit import *` (its folder is put on sys.path first), fills `results`,
and ends with `run(scenario())`: each step yields the seconds to wait before the next one, as a
user's actions are spread over Blender's event loop. When the scenario ends (or fails: the
traceback goes into the results), the results JSON is written, the add-on disabled and Blender
quits. Nothing is asserted here. Standard library and bpy only (a user's Blender Python has
nothing else).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import traceback
from typing import Iterator

import bpy

T0 = time.monotonic()
CONFIG = json.load(open(sys.argv[sys.argv.index("--") + 1], encoding="utf-8"))
ADDON = CONFIG.get("addon", "blender_addon")  # the checkout's add-on, or an installed one's id
results: dict = {"blender": list(bpy.app.version), "events": []}


def log(what: str, **data) -> None:
    entry = {"t": round(time.monotonic() - T0, 3), "what": what, **data}
    results["events"].append(entry)
    print("window script:", json.dumps(entry), flush=True)


def window():
    return bpy.context.window_manager.windows[0]


def seq_area():
    return next(a for a in window().screen.areas if a.type == "SEQUENCE_EDITOR")


def region_of(area, kind):
    return next(r for r in area.regions if r.type == kind)


def override(area=None, region_type="WINDOW"):
    win = window()
    area = area or seq_area()
    return bpy.context.temp_override(window=win, screen=win.screen, area=area,
                                     region=region_of(area, region_type))


def rect(r) -> dict:
    return {"x": r.x, "y": r.y, "width": r.width, "height": r.height}


def xdo(*args) -> None:
    subprocess.run(["xdotool", *[str(a) for a in args]], check=True, timeout=10)


pointer: dict = {}  # where mouse_to put the pointer last


def mouse_to(x: int, y: int, sync: bool = False) -> None:
    """Move the pointer to window coordinates (Blender's: origin bottom left); sync: return once
    the X server has moved it (so Blender's next event-loop step sees the move)."""
    win = window()
    pointer["at"] = (x, y)
    xdo("mousemove", *(["--sync"] if sync else []), win.x + x, win.y + win.height - 1 - y)


# A key that copies the Python command of the button under the mouse (Blender's "Copy Python
# Command", given a key here): how a script finds a button, whose place Blender's Python does not
# tell; then it is clicked with the mouse, as a user does.
COPY_KEY = ("C", "ctrl+shift+alt+c")  # (the key map's key, the same for xdotool)
NO_BUTTON = "(no button)"


def add_copy_key() -> None:
    kc = bpy.context.window_manager.keyconfigs.addon
    km = kc.keymaps.new(name="User Interface", space_type="EMPTY", region_type="WINDOW")
    km.keymap_items.new("ui.copy_python_command_button", COPY_KEY[0], "PRESS", ctrl=True, shift=True, alt=True)


def addon_module(name: str):
    return sys.modules[f"{ADDON}.{name}"]


def open_saved_file_with_addon():
    """Save and reopen the scene in the test's folder (results go to //lipsync/ beside it, and
    opening a file closes the splash screen a factory-startup window shows), then enable the
    add-on from the checkout. A step generator (`prefs = yield from ...`): the add-on's preferences."""
    blend = os.path.join(CONFIG["work"], "scene.blend")
    bpy.ops.wm.save_as_mainfile(filepath=blend)
    bpy.ops.wm.open_mainfile(filepath=blend)
    yield 0.5
    sys.path.insert(0, CONFIG["root"])
    import addon_utils

    mod = addon_utils.enable(ADDON, default_set=True)
    log("enabled", module=getattr(mod, "__file__", None))
    return bpy.context.preferences.addons[ADDON].preferences


def sequencer_preview(sidebar: bool = False) -> Iterator[float]:
    """The biggest editor turned into the Sequencer's preview (with its sidebar: the Lip Sync
    panel); a step generator returning (area, its preview region)."""
    big = max(window().screen.areas, key=lambda a: a.width * a.height)
    big.type = "SEQUENCE_EDITOR"
    yield 0.3  # a freshly switched area has no regions to set yet
    area = seq_area()
    area.spaces.active.view_type = "PREVIEW"
    if sidebar:
        area.spaces.active.show_region_ui = True
    yield 0.5
    return area, next(r for r in area.regions if r.type == "PREVIEW" and r.width > 1)


def wait_for_faces(timeout: float, step: float = 0.3) -> Iterator[float]:
    """Until the running Pick Face has taken the engine's answer (its modal copies the faces job's
    answer on its next timer tick, and its message then stops ending in "..."), or it ended: a
    finished job is not enough, its boxes may not be in the session yet."""
    pick_face = addon_module("pick_face")
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        s = pick_face.session()
        if s is None or s.boxes or not s.message.endswith("..."):
            return
        yield step


def show_lip_sync_tab(ui) -> Iterator[float]:
    """Show the Lip Sync tab of the sidebar region `ui` (the add-on's comes last): directly where
    Blender can (4.2+), else the mouse wheel over the tab column until the panel draws (3.4 has
    no API for the tab). A step generator (`shown, attempts = yield from show_lip_sync_tab(ui)`)."""
    sidebar = addon_module("sidebar")
    if hasattr(ui, "active_panel_category"):
        ui.active_panel_category = "Lip Sync"
        ui.tag_redraw()
        yield 0.5
    mouse_to(ui.x + ui.width - 8, ui.y + ui.height - 150)  # over the tab column
    yield 0.2
    attempt = 0
    for attempt in range(24):
        if sidebar._drawn_in.get(ui.as_pointer(), -1) > time.monotonic() - 0.6:
            break
        xdo("click", "5" if attempt < 12 else "4")  # wheel down (next tab), then back up
        yield 0.4
    return sidebar._drawn_in.get(ui.as_pointer(), -1) > time.monotonic() - 1.0, attempt


def finish() -> None:
    results["seconds"] = round(time.monotonic() - T0, 2)
    with open(CONFIG["results"], "w", encoding="utf-8") as f:
        json.dump(results, f, indent=1)
    try:
        import addon_utils

        addon_utils.disable(ADDON, default_set=True)
    except Exception:  # noqa: BLE001 - quitting matters more
        traceback.print_exc()
    bpy.ops.wm.quit_blender()


def run(steps: Iterator[float]) -> None:
    """Step `steps` from a timer, a step whenever the one before asked (its yielded seconds)."""

    def tick():
        try:
            return next(steps)
        except StopIteration:
            results["completed"] = True
        except Exception:  # noqa: BLE001 - reported to the test through the results
            results["error"] = traceback.format_exc()
            print(results["error"], file=sys.stderr, flush=True)
        finish()
        return None

    bpy.app.timers.register(tick, first_interval=1.0, persistent=True)
