"""Movie from URL in a real Blender window (Debian's 3.4.1 under Xvfb, one window session):
the real engine downloads from the Range-capable server in this test's thread while Blender's UI
keeps answering, and the movie and its sound land at the playhead, from the panel's button and
from the Add menu's dialog. url_window_script.py does it inside Blender; these tests judge it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import needs_window, require_blender, run_window_script

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: the server
from http_range_server import RangeServer  # noqa: E402

HERE = Path(__file__).resolve().parent
SCRIPT = HERE / "url_window_script.py"
CLIP = "vretalk_face2.mp4"  # 25 fps, 5 s, H.264 + AAC

pytestmark = needs_window


@pytest.fixture(scope="module")
def url_run(tmp_path_factory, media, engine_python):
    require_blender()
    if subprocess.run([engine_python, "-c", "import yt_dlp"], capture_output=True).returncode != 0:
        pytest.skip("the engine has no url extra (pip install 'wav2lip-blender[url]')")
    work = tmp_path_factory.mktemp("url-window")
    with RangeServer(media / CLIP) as server:
        r, _ = run_window_script(SCRIPT, work, {
            "work": str(work), "engine_python": engine_python,
            "slow_url": server.url("/slow.mp4"), "url": server.url("/clip.mp4")}, timeout=300)
    return r, work


def test_panel_button_adds_movie_and_sound_at_the_playhead_while_the_ui_answers(url_run):
    r, work = url_run
    assert r["blender"][:2] >= [3, 4] and r["add_menu"]
    call = r["panel_call"]
    assert call["result"] == ["FINISHED"] and call["returned_after"] < 1.0, call  # downloads in the background
    run = next(x for x in r["runs"] if x["label"] == "panel")
    assert not run["active_after"], run
    movie = next(s for s in r["after_panel"] if s["type"] == "MOVIE")
    sound = next(s for s in r["after_panel"] if s["type"] == "SOUND")
    assert movie["start"] == sound["start"] == 12 and movie["channel"] == 2 and sound["channel"] == 3
    assert r["fps_before"] == [24, 1.0] and r["fps_after"] == [25, 1.0]  # the first strip sets the rate
    assert movie["length"] == 50 and abs(sound["length"] - 50) <= 1  # 2.0 s at 25 fps
    assert movie["path"].startswith("//media/") and movie["select"] and sound["select"]
    texts = [text for _t, label, _f, text in r["progress"] if label == "panel"]
    assert any(t.startswith("Downloading") for t in texts), texts
    # Blender's event loop ran this script's 0.1 s timer all along (loose bound: no speed test).
    start = next(e["t"] for e in r["events"] if e["what"] == "panel add")
    end = next(e["t"] for e in r["events"] if e["what"] == "strips")
    inside = [t for t in r["ticks"] if start <= t <= end]
    gaps = [b - a for a, b in zip(inside, inside[1:])]
    assert end - start > 1.0 and max(gaps) < 2.0, (end - start, max(gaps, default=None))


def test_add_menu_dialog_confirmed_with_return(url_run):
    r, work = url_run
    assert r["dialog_invoke"] == ["RUNNING_MODAL"]  # the dialog opened
    before = {s["name"] for s in r["after_panel"]}
    new = [s for s in r["after_dialog"] if s["name"] not in before]
    assert len(new) == 2 and all(s["select"] for s in new) and not any(
        s["select"] for s in r["after_dialog"] if s["name"] in before)  # the new pair alone selected
    movie = next(s for s in new if s["type"] == "MOVIE")
    sound = next(s for s in new if s["type"] == "SOUND")
    assert movie["start"] == sound["start"] == 100 and movie["channel"] == 1 and sound["channel"] == 2
    assert movie["length"] == 125  # the whole 5 s clip
    media = r["media"]
    assert len(media) == 4 and sum(name.endswith(".source.json") for name in media) == 2, media
