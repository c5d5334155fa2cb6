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
    "location": "Sequencer > Sidebar > Lip Sync; Strip > Sync Lips",
    "description": "Lip-sync a movie strip to a sound strip with Wav2Lip, in the background",
    "category": "Sequencer",
    "support": "COMMUNITY",
}

if "bpy" in locals():  # reload (F3 > Reload Scripts): re-import the submodules
    import importlib

    for _name in ("wire", "compat", "snapshot", "preview", "engine_python", "engine_setup", "job_state", "engine",
                  "engine_jobs", "capture", "preferences", "engine_ui", "jobs", "insert", "operators", "jobs_file",
                  "studio", "panel"):
        if _name in locals():
            importlib.reload(locals()[_name])

import bpy  # noqa: E402,F401

from . import (capture, compat, engine, engine_jobs, engine_python, engine_setup, engine_ui, insert,  # noqa: E402,F401
               job_state, jobs, jobs_file, operators, panel, preferences, preview, snapshot, studio, wire)

_modules = (preferences, operators, studio, panel)
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
