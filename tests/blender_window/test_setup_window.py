"""Set Up Engine in a real Blender window (Debian's 3.4.1 under Xvfb): a real pip install into a
new environment runs in the background while the preferences draw its progress bar and the UI
keeps answering; Cancel leaves nothing a later run or the add-on trusts. setup_window_script.py
does it all inside Blender; these tests judge what it wrote."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

sys_path_root = str(Path(__file__).resolve().parents[2])
if sys_path_root not in sys.path:
    sys.path.insert(0, sys_path_root)
import install  # noqa: E402

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
SCRIPT = HERE / "setup_window_script.py"
SCREEN = (1600, 900)
BLENDER = shutil.which("blender")
XVFB_RUN = shutil.which("xvfb-run")
XDOTOOL = shutil.which("xdotool")

pytestmark = pytest.mark.skipif(
    not (BLENDER and XVFB_RUN and XDOTOOL),
    reason="needs the Blender program, xvfb-run and xdotool on PATH (apt-get install blender xvfb xdotool)")


def user_pip_cache() -> str:
    return os.environ.get("PIP_CACHE_DIR") or str(Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "pip")


@pytest.fixture(scope="module")
def setup_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("setup-window")
    results = work / "results.json"
    config = work / "config.json"
    config.write_text(json.dumps({"addon": install.ADDON_ID, "work": str(work), "results": str(results), "limit": 500}))
    env = dict(os.environ, TMPDIR=str(work), BLENDER_USER_CONFIG=str(work / "config"),
               BLENDER_USER_SCRIPTS=str(work / "scripts"), WAV2LIP_ENGINE_VENV=str(work / "engine"),
               PIP_CACHE_DIR=user_pip_cache())
    # The add-on installed as the release zip holds it: its folder with the engine's sources.
    addon = install.stage_addon(work / "scripts" / "addons" / install.ADDON_ID)
    install.stage_source(addon / "engine_src")
    cmd = [XVFB_RUN, "-a", "-s", f"-screen 0 {SCREEN[0]}x{SCREEN[1]}x24", BLENDER, "--factory-startup",
           "--python", str(SCRIPT), "--", str(config)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    log = proc.stdout[-4000:] + proc.stderr[-4000:]
    assert results.is_file(), f"the window script wrote no results (exit {proc.returncode}):\n{log}"
    r = json.loads(results.read_text())
    assert "error" not in r, r["error"] + "\n" + log
    assert r.get("completed"), log
    if os.environ.get("WAV2LIP_UPDATE_DOCS"):  # the README's picture of the preferences
        shutil.copy(work / "preferences.png", ROOT / "docs" / "setup_engine.png")
    return r, work


def _max_gap(times, start, end):
    inside = [t for t in times if start <= t <= end]
    return max((b - a for a, b in zip(inside, inside[1:])), default=float("inf")), len(inside)


def test_cancel_leaves_nothing_trusted(setup_run):
    r, work = setup_run
    c = r["after_cancel"]
    assert not c["running"] and not c["installed"] and not c["stamp"], c
    assert "python" not in c["config"], c  # the add-on would not pick this engine up
    assert c["message"].startswith("Set-up cancelled"), c
    assert c["status"].startswith("Engine: set-up cancelled"), c


def test_the_bar_moves_while_the_ui_answers(setup_run):
    r, work = setup_run
    presses = [e["t"] for e in r["events"] if e["what"] == "press"]
    assert [e["running"] for e in r["events"] if e["what"] == "press"] == [True, True]  # the clicks started it
    start, end = presses[1], next(e["t"] for e in r["events"] if e["what"] == "finished")
    drawn = [(f, text) for t, f, text in r["bars"] if start <= t <= end]
    fractions = [f for f, _ in drawn]
    assert fractions == sorted(fractions), "the bar went backwards"
    assert len({f for f in fractions if 0 < f < 1}) >= 4, drawn  # drawn by the preferences, moving
    assert any(text.startswith("Setting up… ") and text.endswith(" %") for _, text in drawn), drawn
    # Blender's event loop kept running this script's own 0.1 s timer all along: a set-up that
    # blocked it would leave one gap as long as the set-up itself (over a minute). The bound is
    # loose on purpose (a loaded machine stretches gaps to a second or two); this is no speed test.
    gap, n = _max_gap(r["ticks"], start, end)
    assert end - start > 20 and gap < 10 and n > end - start, (end - start, gap, n)
    # The Lip Sync panel's line while it ran.
    assert any(s.startswith("Engine: setting up… ") and s.endswith(" %") for _, s in r["status"]), r["status"]


def test_the_engine_is_set_up_and_checked(setup_run):
    r, work = setup_run
    a = r["after_setup"]
    assert not a["failed"] and a["installed"], a
    assert a["config"]["python"] == a["python"] == str(work / "engine" / "bin" / "python"), a
    rows = {item: ok for item, ok, _d, _n in a["rows"]}
    assert rows["engine environment"] and rows["torch and device"] and rows["ffmpeg (PyAV)"], a["rows"]
    assert a["status"].startswith("Engine: ready (torch "), a["status"]
    assert a["message"] == f"Engine set up: {a['python']}", a
    res = subprocess.run([a["python"], "-c", "import wav2lip_core, sys; print(wav2lip_core.__file__)"],
                         capture_output=True, text=True, cwd=work)
    assert res.returncode == 0 and res.stdout.startswith(str(work / "engine")), res.stdout + res.stderr
    # built from the installed add-on's engine_src/, as a copy
    assert not res.stdout.startswith(str(ROOT)), res.stdout
