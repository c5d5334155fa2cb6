"""Set Up Engine in a real Blender window (Debian's 3.4.1 under Xvfb): a real pip install into a
new environment runs in the background while the preferences draw its progress bar and the UI
keeps answering; Cancel leaves nothing a later run or the add-on trusts. setup_window_script.py
does it all inside Blender; these tests judge what it wrote."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import ROOT, needs_window, require_blender, run_window_script

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
import install  # noqa: E402
import release  # noqa: E402

HERE = Path(__file__).resolve().parent
SCRIPT = HERE / "setup_window_script.py"

pytestmark = needs_window


def user_pip_cache() -> str:
    return os.environ.get("PIP_CACHE_DIR") or str(Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "pip")


@pytest.fixture(scope="module")
def setup_run(tmp_path_factory):
    require_blender()
    work = tmp_path_factory.mktemp("setup-window")
    # The add-on as the release zip holds it (the add-on and the engine's sources), unpacked
    # where Blender's Install puts it.
    import zipfile

    with zipfile.ZipFile(release.package(work / "dist")) as z:
        z.extractall(work / "scripts" / "addons")
    r, _ = run_window_script(SCRIPT, work, {"addon": install.ADDON_ID, "work": str(work), "limit": 500},
                             env={"WAV2LIP_ENGINE_VENV": str(work / "engine"), "PIP_CACHE_DIR": user_pip_cache()},
                             timeout=600)
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
