"""install.py's parts, one job each: the engine environment (engine.py), finding and asking a
Blender program (blender.py), the add-on staged and installed into it (addon.py), and the status
table of --check (status.py); install.py reads the command line and runs them in order, and
release.py writes the release zip from the same staged add-on.

Standard library only (Python >= 3.10). The engine's set-up itself is the add-on's (its Set Up
Engine button runs the same code): `addon_module` loads those standard-library modules from
blender_addon/ without the add-on's __init__, which needs Blender.
"""

from __future__ import annotations

import importlib
import sys
import types
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]
ADDON_DIR = ROOT / "blender_addon"
ADDON_ID = "wav2lip_lipsync"  # blender_manifest.toml `id`
# The name blender_addon/'s standard-library modules get here (setup_task.py's child process
# loads them the same way, under the same name).
PACKAGE = "wav2lip_setup"


def addon_module(name: str) -> ModuleType:
    """blender_addon/<name>.py (standard library only), imported as a module of a package made
    of that folder, so that its relative imports (engine_setup's of setup_pip, ...) work."""
    if PACKAGE not in sys.modules:
        package = types.ModuleType(PACKAGE)
        package.__path__ = [str(ADDON_DIR)]
        sys.modules[PACKAGE] = package
    return importlib.import_module(f"{PACKAGE}.{name}")


def say(msg: str = "") -> None:
    print(msg, flush=True)
