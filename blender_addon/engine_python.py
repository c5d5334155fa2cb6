"""Which Python runs the engine: the preference (a path, or a name looked up on PATH), else the
first candidate that can import wav2lip_core (checked without importing torch), and the
environment it runs in (no Blender Python leaking in; a checkout's core importable). No bpy.

Checking a candidate runs it (up to seconds on a cold disk), so the UI thread never does:
JobQueue looks the interpreter up in its own thread (engine.session_engine_for), and a panel
that shows the interpreter asks `found_in_background`, which answers from the cache or starts
the lookup and answers None meanwhile.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import Dict, List, Optional

_PROBE = "import importlib.util,sys; sys.exit(0 if importlib.util.find_spec('wav2lip_core') else 3)"
_probe_cache: Dict[str, bool] = {}
_lookups: Dict[str, threading.Thread] = {}  # preference -> its lookup in the background
_found: Dict[str, Optional[str]] = {}  # preference -> what the lookup found


def dev_checkout_root() -> Optional[Path]:
    """The repository root when the add-on runs from a checkout (blender_addon/ beside wav2lip_core/)."""
    root = Path(__file__).resolve().parent.parent
    return root if (root / "wav2lip_core" / "__init__.py").is_file() else None


def engine_env(base: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    """Environment for the engine: no Blender Python leaking in; a checkout's core importable."""
    env = dict(os.environ if base is None else base)
    env.pop("PYTHONHOME", None)
    root = dev_checkout_root()
    if root is not None:
        parts = [str(root)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
        env["PYTHONPATH"] = os.pathsep.join(parts)
    else:
        env.pop("PYTHONPATH", None)
    return env


def can_import_core(python: str, timeout: float = 20.0) -> bool:
    """Whether `python` can import wav2lip_core (checked without importing torch; cached)."""
    if python in _probe_cache:
        return _probe_cache[python]
    try:
        ok = subprocess.run(
            [python, "-c", _PROBE], env=engine_env(), stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=timeout,
        ).returncode == 0
    except (OSError, subprocess.SubprocessError):
        ok = False
    _probe_cache[python] = ok
    return ok


def candidate_interpreters() -> List[str]:
    """Where to look for the engine's Python when the preference is empty, best first."""
    found: List[str] = []
    env = os.environ.get("WAV2LIP_PYTHON")
    if env:
        found.append(env)
    root = dev_checkout_root()
    here = Path(__file__).resolve().parent
    for base in [p for p in (root, here, here.parent) if p is not None]:
        for venv in (".venv", "venv", ".wav2lip-env"):
            for rel in ("bin/python", "bin/python3", "Scripts/python.exe"):
                p = base / venv / rel
                if p.is_file():
                    found.append(str(p))
    exe = Path(sys.executable).name.lower()
    if exe.startswith("python"):  # bpy as a module: this interpreter may have the core too
        found.append(sys.executable)
    for name in ("python3", "python"):
        p = shutil.which(name)
        if p:
            found.append(p)
    return list(dict.fromkeys(found))  # first place wins


class EngineNotFound(Exception):
    """The engine's interpreter cannot be found; the message says what to set."""


def find_engine_python(preferred: str = "") -> Optional[str]:
    """The preference when set: a path is used as is (even if broken: the run then reports why),
    a bare name (`python3`) is looked up on PATH (EngineNotFound if it is not there); else the
    first candidate that can import wav2lip_core."""
    if preferred:
        if os.sep in preferred or (os.altsep and os.altsep in preferred):
            return preferred
        found = shutil.which(preferred)
        if not found:
            raise EngineNotFound(f"the engine Python '{preferred}' is not on PATH: give its full path "
                                 "(Engine Python in the add-on preferences, or --engine-python)")
        return found
    for cand in candidate_interpreters():
        if can_import_core(cand):
            return cand
    return None


def found_in_background(preferred: str = "") -> Optional[str]:
    """find_engine_python's answer without waiting: the result of an earlier lookup for this
    preference, else None while a lookup runs in a thread (started here). A preference not on
    PATH answers None too; the job reports why."""
    if preferred in _found:
        return _found[preferred]
    if preferred not in _lookups:
        def lookup() -> None:
            try:
                _found[preferred] = find_engine_python(preferred)
            except EngineNotFound:
                _found[preferred] = None

        _lookups[preferred] = threading.Thread(target=lookup, name="wav2lip-find-python", daemon=True)
        _lookups[preferred].start()
    return None
