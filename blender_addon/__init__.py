"""Wav2Lip lip sync for Blender's Video Sequencer.

Works as an extension (blender_manifest.toml, Blender 4.2+) and as a legacy add-on folder
(bl_info, Blender 3.4+; compat.py holds the differences). The heavy lifting runs in a separate
Python process (`python -m wav2lip_core`), so torch (or even numpy) is never imported into Blender.
"""

from __future__ import annotations

bl_info = {
    "name": "Wav2Lip Lip Sync",
    "author": "wav2lip-blender contributors",
    "version": (0, 1, 0),
    "blender": (3, 4, 0),
    "location": "Sequencer > Sidebar > Lip Sync; Strip > Sync Lips; Add > Movie from URL",
    "description": "Lip-sync a movie strip to a sound strip with Wav2Lip, in the background",
    "category": "Sequencer",
    "support": "COMMUNITY",
}

if "bpy" in locals():  # reload (F3 > Reload Scripts): re-import the submodules
    import importlib

    # Lowest first: a module is reloaded after the ones it imports.
    for _name in ("wire", "compat", "snapshot", "preview", "engine_python", "setup_base",
                  "engine_config", "setup_python", "setup_pip", "engine_setup", "setup_weights", "setup_status",
                  "setup_task", "setup_cli", "job_state", "engine", "engine_jobs", "capture", "job_settings",
                  "engine_ui", "engine_draw", "preferences", "sync_batch", "insert", "sidebar", "sync_meter",
                  "operators", "jobs_export", "studio", "url_fetch", "url_operators", "pick_map", "picks", "pick_face",
                  "panel"):
        if _name in locals():
            importlib.reload(locals()[_name])

import bpy  # noqa: E402,F401

from . import (capture, compat, engine, engine_config, engine_draw, engine_jobs,  # noqa: E402,F401
               engine_python, engine_setup, engine_ui, insert, job_settings, job_state, jobs_export, operators, panel,
               pick_face, pick_map, picks, preferences, preview, setup_base, setup_cli, setup_pip, setup_python, setup_status, setup_task,
               setup_weights, sidebar, snapshot, studio, sync_batch, sync_meter, url_fetch, url_operators, wire)

_modules = (preferences, operators, sync_meter, studio, url_operators, pick_face, panel)
_registered = False


def register() -> None:
    global _registered
    if _registered:
        return
    for mod in _modules:
        mod.register()
    _registered = True


def unregister() -> None:
    global _registered
    if not _registered:
        return
    for mod in reversed(_modules):
        mod.unregister()
    _registered = False
