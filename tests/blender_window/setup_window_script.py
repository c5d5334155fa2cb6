"""Runs inside a real Blender program with its window open (Xvfb), driven by
test_setup_window.py:

    blender --factory-startup --python setup_window_script.py -- CONFIG.json

From bpy.app.timers while Blender's event loop runs: the add-on installed in the user's scripts/addons (as the release zip holds it) is enabled, the
big area becomes the Preferences editor showing the add-on's preferences, and Set Up Engine is
pressed there with the mouse (a real pip install into a new environment). First it is cancelled
(its Cancel button) once pip is at work, then run to the end. A timer of this script's own ticks all along (does the UI answer?),
and every progress bar the preferences draw is recorded (does the bar move?). What happened goes
to the results JSON; the test judges it. Standard library and bpy only.
"""

from __future__ import annotations

import os
import sys
import time
import traceback

import bpy

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from window_kit import (  # noqa: E402
    ADDON, COPY_KEY, CONFIG, NO_BUTTON, T0, add_copy_key, log, mouse_to, pointer, results, run, window, xdo)

results.update({"ticks": [], "bars": [], "status": []})


def now() -> float:
    return round(time.monotonic() - T0, 3)


def prefs_area():
    win = window()
    return win, next(a for a in win.screen.areas if a.type == "PREFERENCES")


def button_command(x: int, y: int):
    """The Python command of the button at window position (x, y) (origin bottom left)."""
    wm = bpy.context.window_manager
    wm.clipboard = NO_BUTTON
    if pointer.get("at") != (x, y):  # (--sync to where the pointer is already waits forever)
        mouse_to(x, y, sync=True)
    yield 0.1
    xdo("key", COPY_KEY[1])
    end = time.monotonic() + 0.5
    while wm.clipboard == NO_BUTTON and time.monotonic() < end:
        yield 0.05
    return wm.clipboard


_found: list = []


def click(op: str):
    """Find the Preferences area's button running `op` (bpy.ops.OP(...)) and click it."""
    win, area = prefs_area()
    region = next(r for r in area.regions if r.type == "WINDOW")
    top = region.y + region.height - 1
    x = region.x + int(region.width * 0.25)
    ys = list(range(top - 10, region.y, -14))
    if _found:  # the last button's place first (Cancel takes Set Up Engine's)
        ys = sorted(ys, key=lambda y: abs(y - _found[-1]))
    for y in ys:
        cmd = yield from button_command(x, y)
        if cmd.startswith(f"bpy.ops.{op}("):
            xdo("click", 1)
            _found.append(y)
            log("clicked", op=op, at=[x, y])
            yield 0.3
            return
    raise RuntimeError(f"no {op} button in the preferences")


def heartbeat():
    results["ticks"].append(now())
    return 0.1


def scenario():
    import addon_utils

    # Opening a saved file closes the splash screen a factory-startup window shows.
    blend = os.path.join(CONFIG["work"], "scene.blend")
    bpy.ops.wm.save_as_mainfile(filepath=blend)
    bpy.ops.wm.open_mainfile(filepath=blend)
    yield 0.5
    # The add-on as the release zip installs it (the test put it in the user's scripts/addons).
    addon_utils.modules_refresh()
    mod = addon_utils.enable(ADDON, default_set=True)
    import importlib

    compat, engine_config, engine_draw, engine_ui, setup_base = (
        importlib.import_module(f"{ADDON}.{m}") for m in ("compat", "engine_config", "engine_draw", "engine_ui", "setup_base"))

    log("enabled", module=mod.__file__)
    real_bar = compat.progress_bar

    def spy(layout, factor, text, *args, **kwargs):
        if kwargs.get("bar") == "setup":
            results["bars"].append([now(), round(float(factor), 4), text])
        return real_bar(layout, factor, text, *args, **kwargs)

    compat.progress_bar = spy
    # The biggest area shows the add-on's preferences, expanded, as a user opens them.
    win = bpy.context.window_manager.windows[0]
    area = max(win.screen.areas, key=lambda a: a.width * a.height)
    area.type = "PREFERENCES"
    bpy.context.preferences.active_section = "ADDONS"
    bpy.context.window_manager.addon_search = "Lip Sync"
    for m in addon_utils.modules():  # (the module objects the Add-ons list draws from)
        if m.__name__ == ADDON:
            addon_utils.module_bl_info(m)["show_expanded"] = True
    add_copy_key()
    bpy.app.timers.register(heartbeat, first_interval=0.1)
    yield 1.0
    env, cfg = engine_ui.engine_env(), engine_ui.config_dir()

    # 1. Pressed, then cancelled once pip is at work.
    yield from click("wav2lip.setup_engine")
    log("press", running=engine_ui.setting_up())
    while not any("log" in e for e in engine_ui.state.task.events):
        results["status"].append([now(), engine_draw.status_line()[0]])
        yield 0.2
    for _ in range(5):
        results["status"].append([now(), engine_draw.status_line()[0]])
        yield 0.2
    yield from click("wav2lip.setup_engine_cancel")
    log("cancel")
    results["after_cancel"] = {
        "installed": setup_base.installed(env), "stamp": (env / setup_base.STAMP_FILE).exists(),
        "config": engine_config.read_config(cfg), "message": engine_ui.state.message,
        "status": engine_draw.status_line()[0], "running": engine_ui.setting_up()}
    yield 1.0

    # 2. Pressed again and left to finish.
    yield from click("wav2lip.setup_engine")
    start = now()
    log("press", running=engine_ui.setting_up())
    while engine_ui.setting_up() or engine_ui.state.task is not None:
        results["status"].append([now(), engine_draw.status_line()[0]])
        if now() - start > CONFIG["limit"]:
            raise RuntimeError("the set-up did not finish in time")
        yield 0.25
    log("finished", seconds=round(now() - start, 1), message=engine_ui.state.message)
    while engine_ui.state.rows is None or engine_ui.state.check is not None:
        yield 0.25
    results["after_setup"] = {
        "installed": setup_base.installed(env), "config": engine_config.read_config(cfg),
        "message": engine_ui.state.message, "failed": engine_ui.state.failed, "rows": engine_ui.state.rows,
        "status": engine_draw.status_line()[0], "python": str(setup_base.venv_python(env))}
    yield 0.5
    try:
        with bpy.context.temp_override(window=win, screen=win.screen, area=area):
            bpy.ops.screen.screenshot(filepath=os.path.join(CONFIG["work"], "preferences.png"))
    except Exception:  # noqa: BLE001 - a picture is a bonus
        traceback.print_exc()


run(scenario())
