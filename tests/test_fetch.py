"""Video from a URL (media.fetch, `wav2lip fetch`), offline: every download comes from a web
server on 127.0.0.1 in a thread of the test (tests/http_range_server.py) that answers Range
requests as real hosts do, through yt-dlp's generic extractor and imageio-ffmpeg's ffmpeg."""

from __future__ import annotations

import errno
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest

from http_range_server import RangeServer, parse_range
from wav2lip_core import protocol as P
from wav2lip_core.errors import Cancelled
from wav2lip_core.jobs import fetch_command
from wav2lip_core.media.decode import read_frames
from wav2lip_core.media.fetch import ENV_FETCH_CACHE, SIDECAR_SUFFIX, FetchError, fetch
from wav2lip_core.media.fetch_ytdlp import INSTALL_HINT, children_running, explain, load_tools, Log
from wav2lip_core.media.probe import probe_video

pytest.importorskip("yt_dlp", reason="the url extra is not installed")
CLIP = "vretalk_face2.mp4"  # 844x844, 25 fps, 125 frames, H.264 + AAC
FPS = 25.0


@pytest.fixture(scope="module")
def server(media):
    with RangeServer(media / CLIP) as s:
        yield s


@pytest.fixture(scope="module")
def source_frames(media):
    info = probe_video(media / CLIP)
    return [f for _, f in read_frames(info, range(info.frame_count))]


@pytest.fixture(scope="module")
def full(server, tmp_path_factory):
    """One whole-clip fetch shared by the tests that look at it: (result, its folder)."""
    out = tmp_path_factory.mktemp("full")
    return fetch(server.url("/clip.mp4"), out_dir=out), out


def frames_of(path: Path) -> list[np.ndarray]:
    info = probe_video(path)
    return [f for _, f in read_frames(info, range(info.frame_count))]


def left(folder: Path) -> list[str]:
    """Everything in a folder, hidden temp folders included."""
    return sorted(os.listdir(folder))


def test_full_fetch_equals_the_source_frame_for_frame(full, source_frames, media):
    result, out = full
    assert not result.cache_hit
    assert result.path.parent == out and result.path.suffix == ".mp4"
    got = frames_of(result.path)
    assert len(got) == len(source_frames) == 125
    assert all(np.array_equal(a, b) for a, b in zip(got, source_frames))
    assert result.path.read_bytes() == (media / CLIP).read_bytes()  # a whole fetch is not re-encoded
    assert abs(result.duration - 5.0) < 0.1
    assert left(out) == sorted([result.path.name, result.sidecar.name])  # no temp folder left


def test_sidecar_says_where_the_file_came_from(full, server):
    result, _ = full
    assert result.sidecar == Path(str(result.path) + SIDECAR_SUFFIX)
    side = json.loads(result.sidecar.read_text(encoding="utf-8"))
    assert side["url"] == server.url("/clip.mp4")
    assert side["title"] == result.title == "clip"
    assert {"uploader", "license", "from", "to", "fetched"} <= set(side)
    assert side["from"] is None and side["to"] is None
    assert abs((datetime.now().astimezone() - datetime.fromisoformat(side["fetched"])).total_seconds()) < 600


def test_second_fetch_hits_the_cache_without_a_request(full, server):
    result, out = full
    before = server.count()
    t0 = time.perf_counter()
    again = fetch(server.url("/clip.mp4"), out_dir=out)
    took = time.perf_counter() - t0
    assert again.cache_hit and again.path == result.path
    assert server.count() == before  # nothing reached the server
    assert took < 0.5, took
    # Another range or height is another entry: asked for, downloaded, not served from this one.
    assert fetch(server.url("/clip.mp4"), out_dir=out, max_height=720).cache_hit is False
    assert server.count() > before


def test_range_is_cut_exactly(server, tmp_path, monkeypatch, media):
    monkeypatch.setenv("PATH", str(tmp_path))  # no system ffmpeg can be found: imageio-ffmpeg's is used
    result = fetch(server.url("/clip.mp4"), start=1.0, end=3.0, out_dir=tmp_path / "out")
    info = probe_video(result.path)
    assert abs(info.duration - 2.0) <= 1 / FPS + 1e-6, info.duration
    assert abs(info.frame_count - 50) <= 1
    # The cut starts at the frame shown at 1.0 s (frame 25), not at a keyframe before it.
    first = next(read_frames(info, [0]))[1].astype(np.float32)
    src = probe_video(media / CLIP)
    diffs = {k: float(np.abs(f.astype(np.float32) - first).mean()) for k, f in read_frames(src, range(20, 31))}
    assert min(diffs, key=diffs.get) == 25, diffs
    side = json.loads(result.sidecar.read_text(encoding="utf-8"))
    assert (side["from"], side["to"]) == (1.0, 3.0)
    assert left(tmp_path / "out") == sorted([result.path.name, result.sidecar.name])


def test_page_with_a_video_tag(server, tmp_path, source_frames):
    result = fetch(server.url("/page.html"), out_dir=tmp_path)
    assert result.title.startswith("Speaker test page")
    got = frames_of(result.path)
    assert len(got) == len(source_frames)
    assert all(np.array_equal(a, b) for a, b in zip(got, source_frames))


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("path, kwargs, says", [
    ("/missing.mp4", {}, "HTTP 404"),
    ("/novideo.html", {}, "no video found"),
    ("/two.html", {}, "holds several videos"),
    ("/clip.mp4", {"start": 10.0, "end": 12.0}, "outside the video"),  # starts after the end
    ("/clip.mp4", {"start": 4.0, "end": 7.0}, "outside the video"),  # ends after the end
])
def test_errors_are_one_line_and_leave_nothing(server, tmp_path, path, kwargs, says):
    with pytest.raises(FetchError) as e:
        fetch(server.url(path), out_dir=tmp_path, **kwargs)
    assert says in str(e.value) and "\n" not in str(e.value), str(e.value)
    assert left(tmp_path) == []


def test_a_killed_fetchs_temp_folder_is_removed_later(server, tmp_path):
    stale, live = tmp_path / ".fetch-killed", tmp_path / ".fetch-running"
    stale.mkdir(), live.mkdir()
    (stale / "video.mp4.part").write_bytes(b"half")
    (live / "video.mp4.part").write_bytes(b"growing")  # its folder is old, its file is written now
    for path in (stale / "video.mp4.part", stale, live):
        os.utime(path, (time.time() - 7 * 3600,) * 2)
    with pytest.raises(FetchError):
        fetch(server.url("/missing.mp4"), out_dir=tmp_path)
    assert left(tmp_path) == [live.name]  # another process's fetch in progress is left alone


def test_unreachable_host(tmp_path):
    with pytest.raises(FetchError) as e:
        fetch(f"http://127.0.0.1:{closed_port()}/clip.mp4", out_dir=tmp_path)
    assert str(e.value).startswith("cannot reach 127.0.0.1:") and "refused" in str(e.value)
    assert left(tmp_path) == []


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://127.0.0.1/clip.mp4", "javascript:alert(1)",
                                 "127.0.0.1/clip.mp4"])
def test_only_http_and_https(server, tmp_path, url):
    before = server.count()
    with pytest.raises(FetchError) as e:
        fetch(url, out_dir=tmp_path)
    assert "\n" not in str(e.value) and ("http://" in str(e.value) or "https://" in str(e.value))
    assert server.count() == before and left(tmp_path) == []


def test_private_or_blocked_video_gives_yt_dlps_reason_shortened(tmp_path):
    # No site can be private offline: yt-dlp's own exceptions, as its YouTube extractor raises
    # them, go through the same mapping a real download's do.
    from yt_dlp.utils import DownloadError, ExtractorError, GeoRestrictedError

    private = ExtractorError("Private video. Sign in if you've been granted access to this video. Use "
                             "--cookies-from-browser or --cookies for the authentication. See  "
                             "https://github.com/yt-dlp/yt-dlp/wiki/FAQ  for how to manually pass cookies",
                             expected=True)
    geo = GeoRestrictedError("The uploader has not made this video available in your country")
    params = {"paths": {"home": str(tmp_path)}}
    url = "https://www.youtube.com/watch?v=xxxxxxxxxxx"
    for exc, says in ((private, "Private video."), (geo, "not available from this country")):
        line = explain(DownloadError(f"ERROR: [youtube] xxxxxxxxxxx: {exc.orig_msg}", (type(exc), exc, None)),
                       url, params, Log())
        assert says in line and "\n" not in line and len(line) < 220, line
        assert "--cookies" not in line and "ERROR" not in line


def test_cancel_mid_download_leaves_nothing(server, tmp_path):
    seen = []
    t0 = time.perf_counter()
    with pytest.raises(Cancelled):
        fetch(server.url("/slow.mp4"), out_dir=tmp_path, progress=lambda done, total: seen.append((done, total)),
              cancel=lambda: any(done for done, _ in seen))
    assert seen and seen[-1][0] < seen[-1][1]  # stopped part way, the total known
    assert time.perf_counter() - t0 < 2.5  # the whole throttled clip takes ~2.5 s alone
    assert left(tmp_path) == []


def test_cancel_during_a_range_cut_stops_ffmpeg(server, tmp_path):
    seen = []
    with pytest.raises(Cancelled):
        fetch(server.url("/slow.mp4"), start=1.0, end=3.0, out_dir=tmp_path,
              progress=lambda done, total: seen.append(done), cancel=lambda: bool(seen))
    assert left(tmp_path) == []
    assert children_running([load_tools().ffmpeg]) == []


def test_disk_full_leaves_nothing(server, tmp_path):
    # A real OSError(ENOSPC) raised from inside yt-dlp's download loop (through the progress
    # hook, as a write there would): no tmpfs can be made small without root here.
    def full_disk(done, total):
        if done > 64 << 10:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with pytest.raises(FetchError) as e:
        fetch(server.url("/clip.mp4"), out_dir=tmp_path, progress=full_disk)
    assert str(e.value).startswith("disk full") and "\n" not in str(e.value)
    assert left(tmp_path) == []


def test_without_yt_dlp_the_install_command(server, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "yt_dlp", None)  # import yt_dlp now fails as when not installed
    assert fetch_command.main([server.url("/clip.mp4"), "--out", str(tmp_path), "--progress", "none"]) == P.EXIT_ERROR
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and INSTALL_HINT in err and "\n" not in err
    assert INSTALL_HINT == 'pip install "wav2lip-blender[url]"'


def test_command_prints_the_path_last(full, server, capsys):
    result, out = full
    assert fetch_command.main([server.url("/clip.mp4"), "--out", str(out), "--progress", "none"]) == P.EXIT_OK
    lines = capsys.readouterr().out.splitlines()
    assert lines[-1] == str(result.path)


def test_command_error_is_one_line(server, tmp_path, capsys):
    assert fetch_command.main([server.url("/missing.mp4"), "--out", str(tmp_path)]) == P.EXIT_ERROR
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1 and captured.err.startswith("error: not found")


def test_command_runs_standalone_with_json_progress(server, tmp_path, engine_python):
    env = {**os.environ, ENV_FETCH_CACHE: str(tmp_path / "cache")}  # the default folder, redirected
    # Through the `wav2lip` dispatcher, as a user or the add-on runs it.
    run = subprocess.run([engine_python, "-m", "wav2lip_core", P.FETCH_COMMAND, server.url("/clip.mp4"),
                          "--from", "1", "--to", "2", "--progress", "json"],
                         capture_output=True, text=True, timeout=120, env=env)
    assert run.returncode == 0, run.stderr
    events = [P.parse_event(line) for line in run.stdout.splitlines()]  # ProtocolError on anything else
    assert isinstance(events[0], P.Hello)
    assert any(isinstance(e, P.Progress) and e.stage == P.STAGE_FETCH for e in events)
    done = events[-1]
    assert isinstance(done, P.Done) and done.cache_hit is False and done.frames is None
    out = Path(done.out)
    assert out.parent == tmp_path / "cache" and out.is_file() and Path(done.extra["sidecar"]).is_file()
    assert abs(done.extra["duration"] - 1.0) <= 1 / FPS + 1e-6


def test_server_answers_ranges(server):
    size = len(server.clip)
    assert parse_range("bytes=10-19", size) == (10, 19)
    assert parse_range("bytes=-100", size) == (size - 100, size - 1)
    assert parse_range(f"bytes={size}-", size) is None
    req = urllib.request.Request(server.url("/clip.mp4"), headers={"Range": "bytes=100-199"})
    with urllib.request.urlopen(req) as r:
        assert r.status == 206 and r.headers["Content-Range"] == f"bytes 100-199/{size}"
        assert r.headers["Accept-Ranges"] == "bytes" and r.read() == server.clip[100:200]
    req = urllib.request.Request(server.url("/clip.mp4"), headers={"Range": f"bytes={size + 5}-"})
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req)
    assert e.value.code == 416 and e.value.headers["Content-Range"] == f"bytes */{size}"
    with urllib.request.urlopen(urllib.request.Request(server.url("/clip.mp4"), method="HEAD")) as r:
        assert r.status == 200 and int(r.headers["Content-Length"]) == size and r.read() == b""
