"""install.py --check: one row per thing a working set-up needs (the installer's Python, the
engine, Blender and the add-on in it, the weights, the optional parts), and the table printed.
The engine's rows are the add-on's own (setup_status), so both tables say the same.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from . import ADDON_ID, addon_module, say
from .addon import addon_hash, installed_stamp, stage_addon
from .blender import usable_blender, vstr
from .engine import install_command

base = addon_module("setup_base")
config = addon_module("engine_config")
rows_of = addon_module("setup_status")

Row = tuple[str, bool, str, bool]  # (item, ok, detail, needed)


def status_rows(env: Path, blender: str | None, checkpoint: str | None) -> list[Row]:
    """(item, ok, detail, needed) for --check."""
    rows: list[Row] = []
    again = install_command(env)
    rows.append(("Python (installer)", sys.version_info >= (3, 10), sys.version.split()[0], True))
    engine, engine_ok = rows_of.engine_rows(env, f"run {again}")
    rows += engine
    try:
        info, why = usable_blender(blender)
    except base.SetupError as e:
        info, why = None, str(e)
    cfg: dict = {}
    if info:
        rows.append(("Blender", True, f"{vstr(info.version)} at {info.exe}", False))
        with tempfile.TemporaryDirectory() as tmp:
            digest = addon_hash(stage_addon(Path(tmp) / ADDON_ID))
        stamp = installed_stamp(info)
        state = "" if stamp == digest else (f" (outdated: run {again})" if stamp else f" (not installed: run {again})")
        rows.append(("add-on installed", stamp == digest, f"{info.addon_dir}{state}", False))
        cfg = config.read_config(info.config_dir)
    else:
        rows.append(("Blender", False, f"{why}; headless runs can use the bpy module", False))
        rows.append(("add-on installed", False, "no Blender", False))
    engine_cfg = config.read_config(env)
    ckpt = checkpoint or cfg.get(config.CONFIG_CHECKPOINT) or engine_cfg.get(config.CONFIG_CHECKPOINT)
    detector = cfg.get(config.CONFIG_DETECTOR_WEIGHTS) or engine_cfg.get(config.CONFIG_DETECTOR_WEIGHTS)
    rows += rows_of.weights_rows(env, engine_ok, ckpt, detector, again)
    rows.append(rows_of.optional_row(env, engine_ok))
    return rows


def print_status(rows: list[Row]) -> bool:
    """The table; whether everything needed is there."""
    width = max(len(r[0]) for r in rows)
    all_needed = True
    for item, ok, detail, needed in rows:
        mark = "ok" if ok else ("MISSING" if needed else "missing")
        all_needed &= ok or not needed
        say(f"  {item:<{width}}  {mark:<7}  {detail}")
    return all_needed
