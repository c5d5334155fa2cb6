"""What the Lip Sync panel shows, in a real Blender window: the Blender program on PATH (Debian
12's 3.4.1 in CI) under Xvfb, driven by display_window_script.py (~30 s, one session), with the
paced stand-in engine as in test_panel_window.py. The preferences are left empty and Blender's
config folder holds what install.py records, as after `install.py`.

Below Blender 4.0 the progress bars are sliders (compat.progress_bar); their values are read back
from the drawn buttons with Ctrl+C, as a user could.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from panel_text import labels

from .conftest import needs_window, paced_engine_python, require_blender, run_window_script

HERE = Path(__file__).resolve().parent
SCRIPT = HERE / "display_window_script.py"
CLIP = "vretalk_face2.mp4"  # 25 fps, 5 s
SOUND = "vretalk_audio1.wav"

pytestmark = needs_window


@pytest.fixture(scope="module")
def display_run(tmp_path_factory, media):
    require_blender()
    from wav2lip_core import protocol

    work = tmp_path_factory.mktemp("display")
    python = paced_engine_python(work / "python3.11")
    checkpoint = work / "wav2lip_gan.pth"
    checkpoint.write_bytes(b"not read by the stand-in engine")
    config_dir = work / "config"
    config_dir.mkdir()
    (config_dir / protocol.CONFIG_NAME).write_text(json.dumps({  # what install.py records
        protocol.CONFIG_PYTHON: str(python), protocol.CONFIG_CHECKPOINT: str(checkpoint)}))
    r, _ = run_window_script(SCRIPT, work, {
        "clip": str(media / CLIP), "sound": str(media / SOUND), "work": str(work), "pace": 0.08,
        "ui_scale": 1.0,
    }, env={"TORCH_HOME": str(work / "torch")})
    assert r["tab_shown"], "the Lip Sync tab never showed the panel"
    return r


def _sync_enabled(drawn):
    return next(e[3] for e in drawn if e[0] == "operator" and e[1] == "sequencer.wav2lip_sync" and e[2] != "Preview")


def test_settings_are_labelled_and_show_what_install_py_recorded(display_run):
    r = display_run
    assert r["prefs"] == {"checkpoint": "", "engine_python": "", "detector_weights": ""}
    drawn = r["shown"]["movie and sound"]
    props = [e for e in drawn if e[0] == "prop"]
    assert {"checkpoint", "detector", "device", "silence", "blend"} <= {e[1] for e in props}, props
    assert [e for e in props if e[2] == ""] == [], "a field without its name"
    shown = labels(drawn)
    assert "Checkpoint: wav2lip_gan.pth (from install.py)" in shown, shown
    assert "Engine Python: python3.11 (from install.py)" in shown, shown
    assert "Detector Weights: (not set: Auto uses Haar)" in shown, shown
    assert shown[:2] == ["Face", "Dialogue"] and _sync_enabled(drawn)


def test_selection_problems_show_before_pressing(display_run):
    r = display_run
    sound_only = r["shown"]["sound only"]
    assert "Select the movie strip too" in labels(sound_only), labels(sound_only)
    assert "No sound strip" not in labels(sound_only)
    assert not _sync_enabled(sound_only)
    apart = r["shown"]["no overlap"]
    assert "Sound strip does not overlap the movie" in labels(apart), labels(apart)
    assert not _sync_enabled(apart)


def test_each_progress_bar_shows_its_own_value(display_run):
    r = display_run
    running = r["shown"]["running"]
    assert "Strip 1 of 2" in [e[2] for e in running if e[0] == "prop"] + labels(running) + \
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
        # Read from the top: the first number is the upper bar's, the next different one the
        # lower bar's; the panel's number fields further down (Sync Offset, From/To, ...) are not bars.
        upper = values[0][1]
        lower = next((v for _, v, _, _ in values if abs(v - upper) > 5), upper)
        assert len(bars) >= 2 and upper < lower, values
        batch_then = [b for dy, v, b, _ in values if v == upper][0]
        job_then = [j for dy, v, _, j in values if v == lower][0]
        assert upper == pytest.approx(batch_then, abs=1.5) and lower == pytest.approx(job_then, abs=1.5), values
