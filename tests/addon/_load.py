"""Load the add-on's bpy-free modules (runner, snapshot) without importing the package (whose
__init__ needs bpy)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ADDON = Path(__file__).resolve().parents[2] / "blender_addon"


def load(name: str):
    modname = f"_w2l_addon_{name}"
    if modname in sys.modules:
        return sys.modules[modname]
    spec = importlib.util.spec_from_file_location(modname, ADDON / f"{name}.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules[modname] = mod
    spec.loader.exec_module(mod)
    return mod
