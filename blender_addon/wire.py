"""The core's files the add-on shares with the engine, loaded by their path: `protocol` (stage
names, events and requests, version; with `options`: option names, choice lists), `batch_format` (JOBS files and
reports) and `serve_client` (the one client of the warm engine). They are defined once, in the
core's `wav2lip_core/` (standard library only); install.py copies them (protocol.ADDON_FILES) into
the add-on it builds, and an add-on run from a checkout loads them from the core beside it. The
add-on never imports the core as a package. No bpy here either."""

from __future__ import annotations

import importlib.util
import os
import sys
import types
from types import ModuleType
from typing import Dict


def _folder() -> str:
    here = os.path.dirname(os.path.abspath(__file__))
    for folder in (here, os.path.join(os.path.dirname(here), "wav2lip_core")):  # an installed add-on's copies; a checkout
        if os.path.isfile(os.path.join(folder, "protocol.py")):
            return folder
    raise ImportError("the add-on is incomplete (no protocol.py): re-run install.py")


def _load_all() -> Dict[str, ModuleType]:
    """Each file as a module of one package of their own, so that their relative imports
    (`from . import protocol`) find the copies loaded here, and nothing of the core."""
    folder = _folder()
    package = f"{__name__}_engine"
    pkg = types.ModuleType(package)
    pkg.__path__ = [folder]  # type: ignore[attr-defined]  # a package of that folder: `from .options import` works
    sys.modules[package] = pkg
    loaded: Dict[str, ModuleType] = {}
    for filename in _load(package, folder, "protocol.py", loaded).ADDON_FILES[1:]:
        _load(package, folder, filename, loaded)
    return loaded


def _load(package: str, folder: str, filename: str, loaded: Dict[str, ModuleType]) -> ModuleType:
    stem = filename[:-len(".py")]
    if f"{package}.{stem}" in sys.modules:  # imported already by one loaded before (protocol's options)
        loaded[stem] = sys.modules[f"{package}.{stem}"]
        return loaded[stem]
    path = os.path.join(folder, filename)
    spec = importlib.util.spec_from_file_location(f"{package}.{stem}", path)
    if not os.path.isfile(path) or spec is None or spec.loader is None:
        raise ImportError(f"the add-on is incomplete (no {filename}): re-run install.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # (dataclasses and relative imports look it up)
    spec.loader.exec_module(module)
    setattr(sys.modules[package], stem, module)
    loaded[stem] = module
    return module


_files = _load_all()
protocol = _files["protocol"]
batch_format = _files["batch_format"]
serve_client = _files["serve_client"]
files = _files["files"]  # the one atomic file write, the core's and the add-on's
