"""What the add-on shows of the engine: the Engine box of the add-on preferences (Set Up Engine,
its progress and Cancel, the status table), the check under a picked weights file, and the Lip
Sync panel's engine line. Drawing only: the state and the background work are engine_ui.py's.
"""

from __future__ import annotations

import os
import textwrap
from typing import Any, Tuple

import bpy
from bpy.types import Context

from . import compat, setup_base
from .engine_ui import (WAV2LIP_OT_engine_status, WAV2LIP_OT_setup_engine, WAV2LIP_OT_setup_engine_cancel, engine_python,
                        extra_prop, poll, setting_up, setup_fraction, start_check, state, verify_picked)


def _wrapped(layout: Any, context: Context, text: str, icon: str = "NONE") -> None:
    region = getattr(context, "region", None)
    width = float(getattr(region, "width", 0) or 600)
    chars = max(20, int((width - 60) / (7.0 * compat.ui_scale(context))))
    for k, line in enumerate(textwrap.wrap(text, chars, break_long_words=False) or [""]):
        layout.label(text=line, icon=icon if k == 0 else "BLANK1")


def draw_preferences(layout: Any, context: Context, prefs: Any) -> None:
    """The Engine box of the add-on preferences."""
    poll()
    box = layout.box()
    box.label(text="Engine", icon="SETTINGS")
    if setting_up():
        f, text, log = setup_fraction()
        compat.progress_bar(box, f, f"Setting up… {f * 100:.0f} %", context, bar="setup")
        _wrapped(box, context, text, "INFO")
        if log:
            _wrapped(box, context, log[:300])
        box.operator(WAV2LIP_OT_setup_engine_cancel.bl_idname, text="Cancel", icon="CANCEL")
        return
    row = box.row(align=True)
    for name in setup_base.OPTIONAL_EXTRAS:
        row.prop(prefs, extra_prop(name))
    box.prop(prefs, "torch_index_url")
    offline = compat.online_access() is False
    if offline:
        _wrapped(box, context, "Online access is off (Preferences > System > Network): the engine is set up "
                 "from a local folder of wheels", "ERROR")
    box.prop(prefs, "wheels_dir")
    row = box.row()
    row.scale_y = 1.3
    row.operator(WAV2LIP_OT_setup_engine.bl_idname,
                 text="Set Up Engine from Wheels Folder" if offline else "Set Up Engine", icon="IMPORT")
    row.operator(WAV2LIP_OT_engine_status.bl_idname, text="Refresh", icon="FILE_REFRESH")
    if state.message:
        _wrapped(box, context, state.message, "ERROR" if state.failed else "CHECKMARK")
    if state.rows is None and state.check is None:
        start_check()  # once; afterwards only after a set-up and on Refresh
    if state.rows is None:
        box.label(text="Checking the engine…", icon="TIME")
        return
    col = box.column(align=True)
    for item, ok, detail, needed in state.rows:
        mark = "ok" if ok else ("MISSING" if needed else "missing")
        _wrapped(col, context, f"{item}: {mark}: {detail}", "CHECKMARK" if ok else ("ERROR" if needed else "DOT"))


def draw_verified(layout: Any, kind: str, value: str) -> None:
    """The check of the file in a field, under it (only for the file the field holds now)."""
    v = state.verified.get(kind)
    path = os.path.normpath(bpy.path.abspath(value)) if value else ""
    if path and (v is None or v.path != path) and kind not in state.verify:
        verify_picked(kind, value)  # a value from saved preferences: checked once, in the background
        v = state.verified.get(kind)
    if v is None or v.path != path:
        return
    icon = "TIME" if v.ok is None else ("CHECKMARK" if v.ok else "ERROR")
    layout.label(text=v.text, icon=icon)


def status_line() -> Tuple[str, str]:
    """(text, icon) for the Lip Sync panel: set-up progress, else whether there is an engine."""
    if setting_up():
        f, _text, _log = setup_fraction()
        return f"Engine: setting up… {f * 100:.0f} %", "TIME"
    if state.failed and state.message:
        return f"Engine: {state.message[0].lower()}{state.message[1:]}", "ERROR"
    if engine_python():
        torch = next((d for item, ok, d, _n in (state.rows or []) if item == "torch and device" and ok), "")
        return "Engine: ready" + (f" ({torch})" if torch else ""), "CHECKMARK"
    return "Engine: not set up (Preferences > Add-ons > Wav2Lip Lip Sync > Set Up Engine)", "ERROR"
