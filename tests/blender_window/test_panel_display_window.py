"""What the Lip Sync panel shows, in a real Blender window: the Blender program on PATH (Debian
12's 3.4.1 in CI) under Xvfb, driven by display_window_script.py (~30 s, one session), with the
paced stand-in engine as in test_panel_window.py. The preferences are left empty and Blender's
config folder holds what install.py records, as after `install.py`.

Below Blender 4.0 the progress bars are sliders (compat.progress_bar); their values are read back
from the drawn buttons with Ctrl+C, as a user could.
"""

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
SCRIPT = HERE / "display_window_script.py"
PACED_ENGINE = HERE / "paced_engine.py"
CLIP = "vretalk_face2.mp4"  # 25 fps, 5 s
SOUND = "vretalk_audio1.wav"
SCREEN = (1600, 900)
MIN_BLENDER = (3, 4)

BLENDER = shutil.which("blender")
XVFB_RUN = shutil.which("xvfb-run")
XDOTOOL = shutil.which("xdotool")

pytestmark = pytest.mark.skipif(
    not (BLENDER and XVFB_RUN and XDOTOOL),
    reason="needs the Blender program, xvfb-run and xdotool on PATH (apt-get install blender xvfb xdotool)",
)


def _blender_version() -> tuple:
    out = subprocess.run([BLENDER, "--factory-startup", "--version"], capture_output=True, text=True,
                         timeout=60).stdout
    m = re.search(r"Blender (\d+)\.(\d+)", out)
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


@pytest.fixture(scope="module")
def display_run(tmp_path_factory, media):
    version = _blender_version()
    if version < MIN_BLENDER:
        pytest.skip(f"Blender {version} on PATH is older than the add-on's minimum {MIN_BLENDER}")
    from wav2lip_core import protocol

    work = tmp_path_factory.mktemp("display")
    python = work / "python3.11"  # `<python> -m wav2lip_core ARGS` runs the paced stand-in engine
    python.write_text(f'#!/bin/sh\nshift 2\nexec "{sys.executable}" "{PACED_ENGINE}" "$@"\n')
    python.chmod(python.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    checkpoint = work / "wav2lip_gan.pth"
    checkpoint.write_bytes(b"not read by the stand-in engine")
    config_dir = work / "config"
    config_dir.mkdir()
    (config_dir / protocol.CONFIG_NAME).write_text(json.dumps({  # what install.py records
        protocol.CONFIG_PYTHON: str(python), protocol.CONFIG_CHECKPOINT: str(checkpoint)}))
    results = work / "results.json"
    config = work / "run.json"
    config.write_text(json.dumps({
        "root": str(ROOT), "clip": str(media / CLIP), "sound": str(media / SOUND), "work": str(work),
        "results": str(results), "pace": 0.08, "ui_scale": 1.0,
    }))
    env = dict(os.environ, TMPDIR=str(work), BLENDER_USER_CONFIG=str(config_dir),
               BLENDER_USER_SCRIPTS=str(work / "scripts"), TORCH_HOME=str(work / "torch"))
    cmd = [XVFB_RUN, "-a", "-s", f"-screen 0 {SCREEN[0]}x{SCREEN[1]}x24", BLENDER, "--factory-startup",
           "--python", str(SCRIPT), "--", str(config)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    log = proc.stdout[-4000:] + proc.stderr[-4000:]
    assert results.is_file(), f"the window script wrote no results (exit {proc.returncode}):\n{log}"
    r = json.loads(results.read_text())
    assert "error" not in r, r["error"] + "\n" + log
    assert r.get("completed"), log
    assert r["tab_shown"], "the Lip Sync tab never showed the panel"
    return r


def _labels(drawn):
    """The panel's texts, a label wrapped over several lines (the later ones indented with a
    blank icon) as one."""
    out = []
    for e in drawn:
        if e[0] != "label":
            continue
        if e[2] == "BLANK1" and out:
            out[-1] += " " + e[1]
        else:
            out.append(e[1])
    return out


def _sync_enabled(drawn):
    return next(e[3] for e in drawn if e[0] == "operator" and e[1] == "sequencer.wav2lip_sync" and e[2] != "Preview")


def test_settings_are_labelled_and_show_what_install_py_recorded(display_run):
    r = display_run
    assert r["prefs"] == {"checkpoint": "", "engine_python": "", "detector_weights": ""}
    drawn = r["shown"]["movie and sound"]
    props = [e for e in drawn if e[0] == "prop"]
    assert {"checkpoint", "detector", "device", "silence", "blend"} <= {e[1] for e in props}, props
    assert [e for e in props if e[2] == ""] == [], "a field without its name"
    shown = _labels(drawn)
    assert "Checkpoint: wav2lip_gan.pth (from install.py)" in shown, shown
    assert "Engine Python: python3.11 (from install.py)" in shown, shown
    assert "Detector Weights: (not set: Auto uses Haar)" in shown, shown
    assert shown[:2] == ["Face", "Dialogue"] and _sync_enabled(drawn)


def test_selection_problems_show_before_pressing(display_run):
    r = display_run
    sound_only = r["shown"]["sound only"]
    assert "Select the movie strip too" in _labels(sound_only), _labels(sound_only)
    assert "No sound strip" not in _labels(sound_only)
    assert not _sync_enabled(sound_only)
    apart = r["shown"]["no overlap"]
    assert "Sound strip does not overlap the movie" in _labels(apart), _labels(apart)
    assert not _sync_enabled(apart)


def test_each_progress_bar_shows_its_own_value(display_run):
    r = display_run
    running = r["shown"]["running"]
    assert "Strip 1 of 2" in [e[2] for e in running if e[0] == "prop"] + _labels(running) + \
        [e[1] for e in running if e[0] == "progress"], running
    values = []
    for dy, clip, batch, job in r["copies"]:
        try:
            values.append((dy, float(clip), batch * 100, job * 100))
        except ValueError:
            pass  # no number button under the mouse there
    if not r["progress_widget"]:  # sliders (below 4.0): Ctrl+C copied their values
        bars = sorted({round(v) for _, v, _, _ in values})
        assert values, r["copies"]
        # The upper bar is the batch's, the lower one the job's (one strip of two: half of it).
        upper = [v for dy, v, _, _ in values if dy == min(d for d, *_ in values)][0]
        lower = [v for dy, v, _, _ in values if dy == max(d for d, *_ in values)][0]
        assert len(bars) >= 2 and upper < lower, values
        batch_then = [b for dy, v, b, _ in values if v == upper][0]
        job_then = [j for dy, v, _, j in values if v == lower][0]
        assert upper == pytest.approx(batch_then, abs=1.5) and lower == pytest.approx(job_then, abs=1.5), values
