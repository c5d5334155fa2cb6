"""Pick Face in a real Blender window (Debian's 3.4.1 under Xvfb): the real engine's faces
request outlines the faces in the preview, a click (xdotool) on a face picks its box's centre, a
click off the faces picks that pixel; both land in the strip's list. pick_window_script.py does
it inside Blender; these tests judge it. The screenshot while picking is left in the test's
folder (its path is printed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from .conftest import needs_window, require_blender, run_window_script

HERE = Path(__file__).resolve().parent
SCRIPT = HERE / "pick_window_script.py"
CLIP, AUDIO = "vretalk_face1.mp4", "vretalk_audio1.wav"

pytestmark = needs_window


@pytest.fixture(scope="module")
def pick_run(tmp_path_factory, media, blazeface_dir, engine_python):
    require_blender()
    work = tmp_path_factory.mktemp("pick-window")
    r, _ = run_window_script(SCRIPT, work, {
        "work": str(work), "engine_python": engine_python, "clip": str(media / CLIP), "audio": str(media / AUDIO),
        "detector_weights": str(blazeface_dir / "blazeface.pth")}, timeout=300)
    print("pick face screenshot:", r.get("screenshot"))
    return r


def test_click_on_a_face_picks_its_box_centre(pick_run):
    r = pick_run
    assert r["invoke"] == ["RUNNING_MODAL"], r
    assert r["faces"], r.get("message")
    x1, y1, x2, y2 = r["faces"][0]
    assert r["hover"] == 0  # the face under the pointer is the highlighted one
    (first,) = r["picks"][:1]
    assert (first["x"], first["y"]) == ((x1 + x2) // 2, (y1 + y2) // 2)
    assert first["sound"] == "Dialogue_A" and first["label"].startswith("Face 1 (") and not r["session_after"]
    assert abs(first["time"] - r["face_time"]) < 1e-9 and r["face_time"] > 0
    assert Path(r["screenshot"]).is_file()


def test_click_off_the_faces_picks_that_pixel(pick_run):
    r = pick_run
    second = r["picks2"][1]
    tx, ty = r["target2"]
    assert abs(second["x"] - tx) <= 1 and abs(second["y"] - ty) <= 1, (second, r["target2"])
