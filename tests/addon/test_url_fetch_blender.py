"""Movie from URL in the bpy module (issue 20): the real warm engine downloads from the
Range-capable server on 127.0.0.1 (tests/http_range_server.py, in a thread of this test) and the
operator adds the movie strip and its sound strip at the playhead; Cancel leaves nothing; Allow
Online Access off refuses in one line. Background mode: the operator waits for the download."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .conftest import add_movie, strips

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: the server
from http_range_server import RangeServer  # noqa: E402

CLIP = "vretalk_face2.mp4"  # 25 fps, 5 s, H.264 + AAC


@pytest.fixture(scope="module")
def server(media, engine_python):
    # The engine downloads (its url extra); Blender's own Python needs none of it.
    if subprocess.run([engine_python, "-c", "import yt_dlp"], capture_output=True).returncode != 0:
        pytest.skip("the engine has no url extra (pip install 'wav2lip-blender[url]')")
    with RangeServer(media / CLIP) as s:
        yield s


@pytest.fixture
def online(fresh):
    """Blender's real Allow Online Access preference, on for the test (the bpy module starts with it off)."""
    bpy, _scene = fresh
    system = bpy.context.preferences.system
    before = system.use_online_access
    system.use_online_access = True
    assert bpy.app.online_access is True
    yield
    system.use_online_access = before


def _saved(bpy, tmp_path) -> Path:
    blend = tmp_path / "project" / "edit.blend"
    blend.parent.mkdir()
    bpy.ops.wm.save_as_mainfile(filepath=str(blend))
    return blend


def test_movie_from_url_adds_movie_and_sound_at_the_playhead(fresh, online, server, engine_python, media, tmp_path):
    bpy, scene = fresh
    blend = _saved(bpy, tmp_path)
    scene = bpy.context.scene
    scene.render.fps = 25  # the clip's rate
    add_movie(scene, "Other", media / CLIP, 2, 1)
    scene.frame_current = 30  # "Other" covers channel 2 from frame 1 for 125 frames
    t0 = time.perf_counter()
    res = bpy.ops.sequencer.wav2lip_movie_from_url(url=server.url("/page.html"), start=1.0, end=3.0, channel=2,
                                                    engine_python=engine_python)
    took = time.perf_counter() - t0
    assert res == {"FINISHED"}
    from blender_addon import url_fetch

    new = [s for s in strips(scene) if s.name != "Other"]
    movie = next(s for s in new if s.type == "MOVIE")
    sound = next(s for s in new if s.type == "SOUND")
    assert movie.frame_final_start == sound.frame_final_start == 30  # at the playhead
    assert movie.channel == 3 and sound.channel == 4  # channel 2 is taken there: the first free ones above
    assert movie.frame_final_duration == 50  # 2.0 s at 25 fps
    assert abs(sound.frame_final_duration - 50) <= 1
    media = blend.parent / "media"
    assert movie.filepath.startswith("//media/") and sound.sound.filepath == movie.filepath
    path = Path(bpy.path.abspath(movie.filepath))
    assert path.parent == media and path.is_file() and Path(str(path) + ".source.json").is_file()
    assert movie[url_fetch.SOURCE_TAG] == server.url("/page.html") and movie.name.startswith("Speaker test page")
    assert movie.select and sound.select and scene.sequence_editor.active_strip == movie
    assert url_fetch.active_fetch() is None
    print(f"\nMovie from URL (warm engine start + 2 s range cut): {took:.2f} s", file=sys.stderr)

    # The same URL and range again: the engine finds the file in //media/ without going online.
    asked = server.count()
    assert bpy.ops.sequencer.wav2lip_movie_from_url(url=server.url("/page.html"), start=1.0, end=3.0,
                                                    engine_python=engine_python) == {"FINISHED"}
    assert server.count() == asked
    assert sorted(p.name for p in media.iterdir()) == sorted([path.name, path.name + ".source.json"])


def test_cancel_mid_download_adds_nothing_and_leaves_nothing(fresh, online, server, engine_python, tmp_path):
    bpy, scene = fresh
    blend = _saved(bpy, tmp_path)
    from blender_addon import url_fetch
    from blender_addon.job_state import CANCELLED

    fetch = url_fetch.start_fetch(bpy.context, server.url("/slow.mp4"), op=_Op(engine_python))
    deadline = time.monotonic() + 60
    while fetch.job.poll().done == 0 and time.monotonic() < deadline:  # bytes are flowing
        assert not fetch.job.finished, fetch.job.poll().message
        time.sleep(0.05)
    assert 0 < fetch.job.poll().done < len(server.clip)
    url_fetch.cancel_active()
    p = fetch.job.wait(15)
    assert p.status == CANCELLED
    status, _message, added = url_fetch.finish(fetch)
    assert status == CANCELLED and added == [] and strips(bpy.context.scene) == []
    time.sleep(0.5)  # the engine removes its temp folder as the cancel unwinds
    assert list((blend.parent / "media").iterdir()) == []


def test_unsaved_file_downloads_into_the_private_temp_folder(fresh, online, server, engine_python):
    bpy, scene = fresh
    from blender_addon import job_settings

    folder, warning = job_settings.media_folder()
    assert Path(folder).name.startswith(job_settings.TEMP_FOLDER_PREFIX) and "not saved" in warning
    assert (os.stat(folder).st_mode & 0o077) == 0  # this user's only
    before = set(os.listdir(folder))
    try:
        assert bpy.ops.sequencer.wav2lip_movie_from_url(url=server.url("/clip.mp4"), start=0.0, end=1.0,
                                                        engine_python=engine_python) == {"FINISHED"}
        movie = next(s for s in strips(bpy.context.scene) if s.type == "MOVIE")
        assert Path(movie.filepath).parent == Path(folder)
        # The first strip of a 24 fps scene: the scene takes the clip's 25 fps, as Add > Movie does.
        assert (scene.render.fps, scene.render.fps_base) == (25, 1.0) and movie.frame_final_duration == 25
    finally:
        for name in set(os.listdir(folder)) - before:
            p = Path(folder) / name
            shutil.rmtree(p) if p.is_dir() else p.unlink()


def test_online_access_off_refuses_in_one_line_and_starts_nothing(fresh, server, engine_python):
    bpy, scene = fresh
    from blender_addon import url_fetch

    system = bpy.context.preferences.system
    before = system.use_online_access
    system.use_online_access = False  # the real preference (Preferences > System > Network)
    try:
        assert bpy.app.online_access is False
        refusal = url_fetch.online_refusal()
        assert refusal.startswith("Online access is off") and "Allow Online Access" in refusal and "\n" not in refusal
        asked = server.count()
        with pytest.raises(RuntimeError) as e:  # (bpy raises an operator's error report)
            bpy.ops.sequencer.wav2lip_movie_from_url(url=server.url("/clip.mp4"), engine_python=engine_python)
        assert str(e.value).strip() == f"Error: {refusal}"
        assert url_fetch.active_fetch() is None and server.count() == asked and strips(scene) == []
    finally:
        system.use_online_access = before


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://127.0.0.1/a.mp4", "example.org/a.mp4", ""])
def test_only_http_and_https(fresh, online, url):
    bpy, _scene = fresh
    from blender_addon import url_fetch

    with pytest.raises(url_fetch.FetchRefused):
        url_fetch.start_fetch(bpy.context, url)
    assert url_fetch.active_fetch() is None


def test_add_menu_and_panel_offer_it(fresh):
    bpy, scene = fresh
    from blender_addon import url_operators

    menu = bpy.types.SEQUENCER_MT_add
    assert url_operators.menu_func in menu._dyn_ui_initialize()
    assert hasattr(scene.wav2lip, "fetch_url") and scene.wav2lip.fetch_channel == 1


class _Op:
    """The operator's overrides start_fetch reads (the engine Python)."""

    def __init__(self, engine_python: str):
        self.engine_python = engine_python


def test_progress_counts_megabytes_and_a_sync_after_a_fetch_starts_its_bar_again(bpy_addon):
    from blender_addon import job_state
    from blender_addon.wire import protocol as P

    p = job_state.Progress()
    job_state.apply_event(p, P.Progress(stage=P.STAGE_FETCH, done=500_000, total=1_000_000))
    assert p.text == "Downloading 0.5 of 1.0 MB" and p.fraction == 0.5
    job_state.apply_event(p, P.Progress(stage=P.STAGE_FETCH, done=1_000_000, total=0))  # a range cut: no total
    assert p.text == "Downloading 1.0 MB"
    job_state.apply_event(p, P.Progress(stage=P.STAGE_AUDIO, done=0, total=1))  # a --face URL job's sync begins
    assert p.fraction == 0.0 and p.text == "Reading audio 0/1"
    job_state.apply_event(p, P.Done(out="/m/a.mp4", seconds=1.0, extra={"title": "Talk", "duration": 2.0}))
    assert p.info == {"title": "Talk", "duration": 2.0} and p.frames is None
