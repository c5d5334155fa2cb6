"""The add-on's panel in a real Blender window: the Blender program on PATH (Debian 12's 3.4.1 in
CI) with its full UI under Xvfb, real X input events from xdotool.

One Blender session (window_script.py, ~50 s) does everything through Blender's event loop and
writes what happened to JSON; the tests below judge it. The engine is the stand-in
(tests/addon/fake_engine.py) with its stdout paced (paced_engine.py), so a job takes seconds.
The panel's buttons are clicked with the mouse (found by hovering and copying each button's
Python command): a button press reuses an operator's last properties, a script call does not.

WAV2LIP_UPDATE_DOCS=1 also writes the README's panel picture (docs/panel.png) from the run.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

from .conftest import ROOT, SCREEN, needs_window, paced_engine_python, require_blender, run_window_script

HERE = Path(__file__).resolve().parent
SCRIPT = HERE / "window_script.py"
CLIP = "vretalk_face2.mp4"  # 25 fps, 5 s
SOUND = "vretalk_audio1.wav"
UI_SCALE = 1.25  # the interface size in the window (and so in the README's picture)
PANEL_CROP_HEIGHT = round(720 * UI_SCALE)  # the top of the sidebar (at most all of it): the idle Lip Sync panel
PICTURE_GAP = 12

pytestmark = needs_window


@pytest.fixture(scope="module")
def window_run(tmp_path_factory, media):
    require_blender()
    work = tmp_path_factory.mktemp("window")
    python = paced_engine_python(work / "python")
    (work / "wav2lip_gan.pth").write_bytes(b"not read by the stand-in engine")
    r, proc = run_window_script(SCRIPT, work, {
        "clip": str(media / CLIP), "sound": str(media / SOUND), "engine_python": str(python),
        "checkpoint": "//wav2lip_gan.pth",  # beside the .blend the script saves into `work`
        "work": str(work), "pace": 0.08, "ui_scale": UI_SCALE,
    })
    r["blender_stdout"] = proc.stdout
    return r, work


def _inside(rect, x, y):
    return rect["x"] <= x < rect["x"] + rect["width"] and rect["y"] <= y < rect["y"] + rect["height"]


def test_the_addon_runs_in_the_window(window_run):
    r, _ = window_run
    enabled = next(e for e in r["events"] if e["what"] == "enabled")
    assert Path(enabled["module"]).resolve() == ROOT / "blender_addon" / "__init__.py"
    assert r["tab_shown"], "the Lip Sync tab never showed the panel"
    assert r["window"]["width"] == SCREEN[0] and r["window"]["height"] == SCREEN[1]


def test_progress_moves_and_the_result_is_inserted(window_run):
    r, work = window_run
    samples = r["job_progress"]["ok"]
    fractions = [f for _, f, _ in samples]
    assert fractions == sorted(fractions), "progress went backwards"
    assert len({f for f in fractions if 0 < f < 1}) >= 3, samples
    assert len({t for _, _, t in samples}) >= 4, samples
    # The panel redrew as the job went on (the operator's timer), drawing the bar each time.
    start = next(e["t"] for e in r["events"] if e["what"] == "invoke" and e["mode"] == "ok")
    end = next(e["t"] for e in r["events"] if e["what"] == "undo")
    drawn = [(f, text) for t, f, text in r["panel_drawn"] if start <= t <= end]
    assert len({f for f, _ in drawn if 0 < f < 1}) >= 3, drawn
    assert any(text.startswith("Syncing lips") for _, text in drawn), drawn

    assert r["after_finish"]["state"]["status"] == "done"
    assert r["after_finish"]["strips"] == ["Dialogue", "Face", "Face.lipsync"]
    ins = r["inserted"]
    assert (ins["channel"], ins["start"], ins["frames"]) == (3, r["face"]["start"], r["face"]["frames"])
    assert ins["filepath"] == "//lipsync/Face.lipsync.mp4"
    assert (work / "lipsync" / "Face.lipsync.mp4").is_file()
    assert any(line.startswith("Inserted 'Face.lipsync' on channel 3") for line in r["reports"]), r["reports"]


def test_one_undo_removes_the_result(window_run):
    r, _ = window_run
    assert r["after_undo"]["result"] == ["FINISHED"]
    assert r["after_undo"]["strips"] == ["Dialogue", "Face"]


def test_esc_elsewhere_or_during_playback_keeps_the_job(window_run):
    r, _ = window_run
    esc = r["esc"]
    seen = [e for e in r["events_seen"] if e[1] == "ESC"]
    for place, region in (("outliner", r["outliner"]), ("sequencer timeline", r["regions"]["WINDOW"])):
        assert esc[place]["active"] and esc[place]["status"] == "running", (place, esc[place])
        # The key press reached Blender with the pointer where it was aimed.
        assert any(_inside(region, x, y) for _, _, _, x, y in seen), (place, seen)
    during = esc["during playback"]
    assert during["playing_before"], "playback did not start"
    assert not during["playing_after"], "Esc did not reach Blender's keymap: playback still runs"
    assert during["active"] and during["status"] == "running", during
    assert any(_inside(r["sidebar"], x, y) for _, _, _, x, y in seen), seen
    # Still running means still reporting: the job's text moved on after the Esc presses.
    texts = [t for _, _, t in r["job_progress"]["slow"]]
    assert texts[-1] != texts[0]


def test_the_cancel_button_cancels(window_run):
    r, _ = window_run
    c = r["cancel_button"]
    assert c["result"] == ["FINISHED"]
    assert not c["active"] and c["status"] == "cancelled", c
    assert c["strips"] == ["Dialogue", "Face"]
    assert c["files"] == ["Face.lipsync.mp4"], "a cancelled job left a file"  # (the first job's)
    assert not c["workdir_exists"]


def test_esc_over_the_panel_cancels(window_run):
    r, _ = window_run
    c = r["esc_over_panel"]
    assert not c["active"] and c["status"] == "cancelled", c
    assert c["strips"] == ["Dialogue", "Face"] and c["files"] == ["Face.lipsync.mp4"]
    assert not c["workdir_exists"]
    # The job's handler took that Esc (it never reached the handlers behind it).
    pressed = r["esc_over_panel_pressed_at"]
    assert not [e for e in r["events_seen"] if e[1] == "ESC" and e[0] >= pressed], r["events_seen"]
    assert sum("Lip sync cancelled; nothing was inserted" in line for line in r["reports"]) == 2, r["reports"]


def _png_size(path: Path) -> tuple:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR", f"{path} is not a PNG"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def panel_picture(idle: Path, running: Path, sidebar: dict, window_height: int):
    """The sidebar's top from both screenshots, side by side (idle left, running right)."""
    import cv2
    import numpy as np

    top = window_height - (sidebar["y"] + sidebar["height"])  # Blender's y counts from the bottom
    height = min(PANEL_CROP_HEIGHT, sidebar["height"])
    crops = []
    for path in (idle, running):
        img = cv2.imread(str(path), cv2.IMREAD_COLOR)
        assert img is not None, f"cannot read {path}"
        crops.append(img[top:top + height, sidebar["x"]:sidebar["x"] + sidebar["width"]])
    gap = np.zeros((height, PICTURE_GAP, 3), np.uint8)
    gap[:] = crops[0][-1, 0]  # the sidebar's background colour
    return np.hstack([crops[0], gap, crops[1]])


def test_screenshots_of_the_panel(window_run, tmp_path):
    import cv2

    r, _ = window_run
    shots = {name: Path(p) for name, p in r["screenshots"].items()}
    for path in shots.values():
        assert _png_size(path) == SCREEN
    picture = panel_picture(shots["idle.png"], shots["running.png"], r["sidebar"], r["window"]["height"])
    left, right = picture[:, :r["sidebar"]["width"]], picture[:, -r["sidebar"]["width"]:]
    assert left.std() > 10 and right.std() > 10, "a blank crop"
    assert (left != right).any(), "the idle and running panels look the same"
    out = tmp_path / "panel.png"
    assert cv2.imwrite(str(out), picture)
    assert _png_size(out) == (2 * r["sidebar"]["width"] + PICTURE_GAP, min(PANEL_CROP_HEIGHT, r["sidebar"]["height"]))
    if os.environ.get("WAV2LIP_UPDATE_DOCS"):
        shutil.copyfile(out, ROOT / "docs" / "panel.png")


def test_two_strips_at_once_each_inserted_as_it_finishes_with_its_own_undo_step(window_run):
    r, work = window_run
    m = r["multi"]
    assert m["jobs"] == 2 and m["sounds"] == ["Dialogue", "Dialogue2"]  # each with the sound under it
    assert m["pids"][0] == m["pids"][1] and m["warm"] == [False, True]  # one warm engine for both
    # Face's first result (undone) keeps its file: this one is the next name, strip and file alike.
    assert m["inserted"] == {"Face.lipsync_001": [3, r["face"]["start"], r["face"]["frames"]],
                             "Face2.lipsync": [3, m["face2"]["start"], m["face2"]["frames"]]}
    assert {"Face.lipsync_001.mp4", "Face2.lipsync.mp4"} <= set(m["files"])
    # The first result was on the timeline while the second job still ran.
    firsts = [names for _, names in m["inserted_over_time"]]
    assert ["Face.lipsync_001"] in firsts, m["inserted_over_time"]
    # The panel showed the batch's overall progress and each job's own.
    start = m["started"]
    texts = {text for t, _, text in r["panel_drawn"] if t >= start}
    assert {"Strip 1 of 2", "Strip 2 of 2"} <= texts, texts
    assert any(t.startswith("Syncing lips") for t in texts), texts
    # One undo step per inserted result: the second goes first, then the first.
    (res1, after1), (res2, after2) = m["undo"]
    assert res1 == res2 == ["FINISHED"]
    assert sorted(after1) == sorted(m["before"] + ["Face.lipsync_001"])
    assert sorted(after2) == sorted(m["before"])


def test_no_engine_outlives_the_blender_program(window_run):
    r, _ = window_run
    pid = r["engine_pid"]
    assert pid, "the warm engine was not running at the end of the session"
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return
    with open(f"/proc/{pid}/stat") as f:  # only a zombie (exited, not reaped yet) may be left
        assert f.read().rsplit(")", 1)[1].split()[0] == "Z"


def _results_of(strips: dict, source: str) -> dict:
    """The strips that are `source`'s synced results (not previews)."""
    return {n: s for n, s in strips.items() if n.startswith(source + ".lipsync")}


def _named_after_their_files(strips: dict) -> bool:
    return all(s["file"] == n + ".mp4" for n, s in strips.items() if ".lipsync" in n or ".preview" in n)


def test_preview_then_sync_clicked_in_the_panel_syncs_the_whole_strip(window_run):
    """Issue 17: after one Preview every Sync previewed (the operator's last properties were
    reused by the buttons); the full result was selected and offered as the next source; the
    replaced preview's file stayed on disk."""
    r, _ = window_run
    c = r["clicks"]
    face = r["face"]
    prev = c["preview"]
    assert prev["clicked"] and prev["preview"] is True, prev
    (name, start, frames, dest, status), = prev["jobs"]
    assert name == "Face" and status == "done" and dest == "Face.preview.mp4"
    assert frames == 75 and start == 40 - 75 // 2  # 3 s around the playhead (frame 40)
    assert prev["strips"]["Face.preview"]["frames"] == 75 and not prev["strips"]["Face.preview"]["select"]
    assert prev["strips"]["Face"]["select"]

    sync = c["sync"]
    assert sync["clicked"] and sync["preview"] is False, sync
    (name, start, frames, dest, status), = sync["jobs"]
    assert (name, start, frames, status) == ("Face", face["start"], face["frames"], "done")
    result, = _results_of(sync["strips"], "Face")
    assert sync["strips"][result]["frames"] == face["frames"] and sync["strips"][result]["start"] == face["start"]
    assert sync["strips"][result]["file"] == dest and _named_after_their_files(sync["strips"])
    # The preview is replaced, its file (the add-on's own temp output) deleted.
    assert not [n for n in sync["strips"] if ".preview" in n]
    assert "Face.preview.mp4" not in sync["files"], sync["files"]
    # The source stays selected, not the result: the panel offers the source again.
    assert sync["strips"]["Face"]["select"] and not sync["strips"][result]["select"]
    assert sync["pairs"] == [["Face", "Dialogue"]]


def test_a_second_sync_clicked_replaces_the_strips_own_result(window_run):
    r, _ = window_run
    c = r["clicks"]
    first, = _results_of(c["sync"]["strips"], "Face")
    again = c["sync again"]
    assert again["clicked"] and again["preview"] is False
    assert again["pairs"] == [["Face", "Dialogue"]]
    second, = _results_of(again["strips"], "Face")  # replaced, not stacked above
    assert second != first
    old, new = c["sync"]["strips"][first], again["strips"][second]
    assert new["file"] != old["file"] and old["file"] in again["files"]  # never overwritten (undo needs it)
    assert (new["channel"], new["start"], new["frames"]) == (old["channel"], old["start"], old["frames"])
    assert _named_after_their_files(again["strips"])
    # One undo brings the first result back, strip and file still matching.
    undo = c["undo"]
    assert undo["result"] == ["FINISHED"]
    assert _results_of(undo["strips"], "Face") == {first: dict(old, select=undo["strips"][first]["select"])}
    assert set(undo["strips"]) == set(c["sync"]["strips"])
    assert _named_after_their_files(undo["strips"])


def test_cancel_all_clicked_says_how_many_were_inserted(window_run):
    r, _ = window_run
    ca = r["cancel_all"]
    assert ca["clicked"] and ca["cancel_clicked"], ca
    assert ca["first_inserted_before_cancel"] and ca["second_running"], ca
    assert ca["statuses"] == ["done", "cancelled"] and ca["outcomes"][0] and not ca["outcomes"][1]
    assert "Lip sync cancelled; 1 of 2 inserted" in r["reports"], r["reports"]
    assert ca["outcomes"][0] in ca["strips"] and not _results_of(ca["strips"], "Face2")


def test_undo_steps_are_named_for_what_they_did(window_run):
    r, _ = window_run
    out = r["blender_stdout"]
    assert "window_script: undo steps follow" in out
    names = re.findall(r"name='([^']*)'", out.split("window_script: undo steps follow", 1)[1])
    assert "Preview Lips: Face" in names, names
    assert "Sync Lips: Face" in names, names
    assert "Sync Lips" not in names, names  # a preview's step was named as a full sync
