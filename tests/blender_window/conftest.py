"""Running a window script (window_kit.py and the scripts that use it) in the Blender program on
PATH with its full UI under Xvfb: what every window test shares. Blender's config, scripts and
temp files stay in the test's folder, so the user's own preferences are never read or written."""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
PACED_ENGINE = HERE / "paced_engine.py"
SCREEN = (1600, 900)
MIN_BLENDER = (3, 4)

BLENDER = shutil.which("blender")
XVFB_RUN = shutil.which("xvfb-run")
XDOTOOL = shutil.which("xdotool")

needs_window = pytest.mark.skipif(
    not (BLENDER and XVFB_RUN and XDOTOOL),
    reason="needs the Blender program, xvfb-run and xdotool on PATH (apt-get install blender xvfb xdotool)",
)


def require_blender() -> None:
    """Skip when the Blender on PATH is older than the add-on supports."""
    out = subprocess.run([BLENDER, "--factory-startup", "--version"], capture_output=True, text=True,
                         timeout=60).stdout
    m = re.search(r"Blender (\d+)\.(\d+)", out)
    version = (int(m.group(1)), int(m.group(2))) if m else (0, 0)
    if version < MIN_BLENDER:
        pytest.skip(f"Blender {version} on PATH is older than the add-on's minimum {MIN_BLENDER}")


def paced_engine_python(path: Path) -> Path:
    """An executable at `path` that runs the paced stand-in engine for `<python> -m wav2lip_core ARGS`."""
    path.write_text(f'#!/bin/sh\nshift 2\nexec "{sys.executable}" "{PACED_ENGINE}" "$@"\n')
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


def run_window_script(script: Path, work: Path, settings: dict, env: dict | None = None,
                      timeout: float = 240) -> "tuple[dict, subprocess.CompletedProcess]":
    """Run `script` in a real Blender window with `settings` (plus "root" and "results") as its
    config; the results it wrote, checked to be complete and without error."""
    results = work / "results.json"
    config = work / "window_config.json"
    config.write_text(json.dumps({"root": str(ROOT), "results": str(results), **settings}))
    full_env = dict(os.environ, TMPDIR=str(work), BLENDER_USER_CONFIG=str(work / "config"),
                    BLENDER_USER_SCRIPTS=str(work / "scripts"), **(env or {}))
    cmd = [XVFB_RUN, "-a", "-s", f"-screen 0 {SCREEN[0]}x{SCREEN[1]}x24", BLENDER, "--factory-startup",
           "--python", str(script), "--", str(config)]
    proc = subprocess.run(cmd, env=full_env, capture_output=True, text=True, timeout=timeout)
    log = proc.stdout[-4000:] + proc.stderr[-4000:]
    assert results.is_file(), f"the window script wrote no results (exit {proc.returncode}):\n{log}"
    r = json.loads(results.read_text())
    assert "error" not in r, r["error"] + "\n" + log
    assert r.get("completed"), log
    return r, proc
