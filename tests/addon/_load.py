"""Load the add-on's bpy-free modules (job_state, engine_python, snapshot, wire) without running the package's
__init__ (which needs bpy): a stand-in package over the same folder, so their relative imports
(`from .wire import protocol`) work as inside Blender."""

from __future__ import annotations

import importlib
import sys
import types
from pathlib import Path

ADDON = Path(__file__).resolve().parents[2] / "blender_addon"
PACKAGE = "_w2l_addon"


def load(name: str):
    if PACKAGE not in sys.modules:
        pkg = types.ModuleType(PACKAGE)
        pkg.__path__ = [str(ADDON)]  # type: ignore[attr-defined]
        sys.modules[PACKAGE] = pkg
    return importlib.import_module(f"{PACKAGE}.{name}")
