"""The engine protocol (stage names, event keys, option names, choice lists, version), as the
add-on sees it. It is defined once, in the core's `wav2lip_core/protocol.py` (standard library
only). install.py copies that file into the add-on it builds, as `protocol.py`; an add-on run
from a checkout loads it from the core beside it. No bpy here either."""

from __future__ import annotations

import importlib.util
import os
import sys
from types import ModuleType


def _load() -> ModuleType:
    here = os.path.dirname(os.path.abspath(__file__))
    for path in (os.path.join(here, "protocol.py"),  # an installed add-on's copy
                 os.path.join(os.path.dirname(here), "wav2lip_core", "protocol.py")):  # a checkout
        if os.path.isfile(path):
            name = f"{__package__ or 'blender_addon'}._engine_protocol"
            spec = importlib.util.spec_from_file_location(name, path)
            if spec is None or spec.loader is None:  # pragma: no cover - a readable .py always has one
                continue
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            spec.loader.exec_module(module)
            return module
    raise ImportError("the add-on is incomplete (no protocol.py): re-run install.py")


protocol = _load()
