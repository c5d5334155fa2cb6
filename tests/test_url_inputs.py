"""URLs as inputs and serve's fetch op (issue 20), offline: `--face URL` through the one-shot
CLI, a JOBS file line with URLs through `wav2lip batch`, and `{"op": "fetch"}` on a warm engine,
every download from the Range-capable server on 127.0.0.1 in a thread of the test
(tests/http_range_server.py), the sync a real one with the conformance checkpoint."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

from http_range_server import RangeServer
from test_batch import BOX_LIST, batch, read_report, write_jobs
from test_cli import BOX, SPEECH16K, count_frames, wav2lip
from test_serve import Engine
from wav2lip_core import protocol as P
from wav2lip_core.jobs import cli, jobfile
from wav2lip_core.media.fetch import ENV_FETCH_CACHE, SIDECAR_SUFFIX, is_url
from wav2lip_core.media.fetch_ytdlp import INSTALL_HINT

pytest.importorskip("yt_dlp", reason="the url extra is not installed")
CLIP = "vretalk_face2.mp4"  # 844x844, 25 fps, 5 s, H.264 + AAC: the face and the sound


@pytest.fixture(scope="module")
def server(media):
    with RangeServer(media / CLIP) as s:
        yield s


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    """The fetch cache (media.fetch's default folder), in this test's own folder; subprocesses
    started by the test inherit it."""
    folder = tmp_path / "fetch-cache"
    monkeypatch.setenv(ENV_FETCH_CACHE, str(folder))
    return folder


def first_seen(stages: list[str]) -> list[str]:
    return [s for i, s in enumerate(stages) if s not in stages[:i]]


def test_face_url_end_to_end_fetch_then_sync_then_the_cache(server, checkpoint, cache, tmp_path):
    out = tmp_path / "out.mp4"
    args = ["--face", server.url("/clip.mp4"), "--audio", SPEECH16K, "--checkpoint", checkpoint, "--out", out,
            "--box", *BOX, "--duration", "1.0", "--no-cache", "--device", "cpu", "--runtime", "torch",
            "--progress", "json"]
    t0 = time.perf_counter()
    r = wav2lip(*args)
    took = time.perf_counter() - t0
    assert r.returncode == 0, r.stderr
    events = [P.parse_event(line) for line in r.stdout.splitlines()]  # every line an event
    stages = [e.stage for e in events if isinstance(e, P.Progress)]
    assert first_seen(stages) == [P.STAGE_FETCH, *P.STAGES]  # the download first, then the sync's
    fetched = [e for e in events if isinstance(e, P.Progress) and e.stage == P.STAGE_FETCH]
    assert fetched[-1].done == (server_size := len(server.clip)) and fetched[-1].total == server_size
    notes = [e.message for e in events if isinstance(e, P.Note)]
    assert any(n.startswith(f"--face {server.url('/clip.mp4')}: fetched") for n in notes), notes
    done = events[-1]
    assert isinstance(done, P.Done) and done.frames == 25 and Path(done.out) == out
    assert count_frames(out) == 25
    files = sorted(p.name for p in cache.iterdir())
    assert len(files) == 2 and files[1] == files[0] + SIDECAR_SUFFIX  # the clip and its sidecar
    print(f"\n--face URL, fetch + 1 s sync: {took:.2f} s", file=sys.stderr)

    # The same address again: from the cache, the server never asked.
    asked = server.count()
    out.unlink()
    r = wav2lip(*args)
    assert r.returncode == 0, r.stderr
    assert server.count() == asked
    assert count_frames(out) == 25
    assert any("from the fetch cache" in json.loads(line).get("message", "") for line in r.stdout.splitlines())


def test_without_the_url_extra_one_line_with_the_install_command(server, cache, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "yt_dlp", None)  # `import yt_dlp` fails as when not installed
    code = cli.main(["--face", server.url("/clip.mp4"), "--audio", str(SPEECH16K), "--checkpoint", "c.pth",
                     "--out", str(tmp_path / "o.mp4"), "--progress", "none"])
    err = capsys.readouterr().err
    assert code == P.EXIT_ERROR
    assert err.count("\n") == 1 and err.startswith("error: --face: ") and INSTALL_HINT in err
    assert not (tmp_path / "o.mp4").exists() and not list(cache.glob("*"))


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://127.0.0.1/clip.mp4"])
def test_audio_url_only_http_and_https(url, tmp_path, capsys):
    code = cli.main(["--face", "f.mp4", "--audio", url, "--checkpoint", "c.pth", "--out", str(tmp_path / "o.mp4"),
                     "--progress", "none"])
    err = capsys.readouterr().err
    assert code == P.EXIT_ERROR and err.count("\n") == 1
    assert err.startswith("error: --audio: only http:// and https:// addresses can be fetched")


def test_a_jobs_file_keeps_urls_as_they_are(tmp_path):
    url = "https://example.org/talk.mp4?t=3"
    (job,) = [jobfile.parse_job(1, json.dumps({"face": url, "audio": "a.wav", "out": "o.mp4"}), tmp_path)]
    assert job.error is None
    assert job.options[P.OPT_FACE] == url  # not resolved against the JOBS file's folder
    assert job.options[P.OPT_AUDIO] == str(tmp_path / "a.wav")
    assert is_url(url) and is_url("HTTP://x/y") and not is_url("C:\\clips\\a.mp4") and not is_url("clips/a.mp4")


def test_a_jobs_file_line_with_urls(server, checkpoint, cache, tmp_path):
    url = server.url("/clip.mp4")
    jobs = write_jobs(tmp_path / "shots.jsonl", [
        {"id": "web", "face": url, "audio": url, "checkpoint": str(checkpoint), "out": "web.mp4",
         "box": BOX_LIST, "duration": 0.4, "device": "cpu", "runtime": "torch", "no-cache": True},
    ])
    r = batch(jobs)
    assert r.returncode == 0, r.stderr
    (entry,) = read_report(tmp_path / "shots.report.jsonl")
    assert entry["status"] == "ok" and entry["frames"] == 10, entry
    assert count_frames(tmp_path / "web.mp4") == 10
    assert len(list(cache.glob(f"*{SIDECAR_SUFFIX}"))) == 1  # face and audio: one fetch


def test_serve_fetch_op_progress_done_and_cancel_leaves_nothing(server, cache, tmp_path):
    engine = Engine()
    try:
        assert engine.next()["event"] == "hello"
        out = tmp_path / "media"
        engine.send({"op": "fetch", "id": "clip", "args": [server.url("/clip.mp4"), "--from", "1", "--to", "3",
                                                            "--out", str(out)]})
        done = engine.until("clip", "done", "error", "cancelled")
        assert done["event"] == "done", done
        assert Path(done["out"]).parent == out and Path(done["sidecar"]).is_file() and "frames" not in done
        assert abs(done["duration"] - 2.0) <= 0.04 + 1e-6 and done["cache_hit"] is False
        assert [e["stage"] for e in engine.of("clip") if e["event"] == "progress"][:1] == [P.STAGE_FETCH]

        # A throttled download, cancelled once bytes flow: nothing is left in its folder.
        slow = tmp_path / "slow"
        engine.send({"op": "fetch", "id": "slow", "args": [server.url("/slow.mp4"), "--out", str(slow)]})
        e = engine.until("slow", "progress", "done", "error", "cancelled")
        assert e["event"] == "progress" and e["stage"] == P.STAGE_FETCH and 0 < e["done"] < len(server.clip), e
        engine.send({"op": "cancel", "id": "slow"})
        assert engine.until("slow", "cancelled", "done", "error") == {"event": "cancelled", "job": "slow"}
        assert sorted(slow.iterdir()) == []

        engine.send({"op": "fetch", "id": "bad", "args": [server.url("/missing.mp4"), "--out", str(slow)]})
        bad = engine.until("bad", "error", "done", "cancelled")
        assert bad["event"] == "error" and bad["message"].startswith("not found (HTTP 404)")
        engine.send({"op": "fetch", "id": "noargs", "args": ["--to", "3"]})
        assert engine.until("noargs", "error", "done")["message"].startswith("bad job arguments")
        engine.send({"op": "quit"})
        assert engine.finish()[0] == 0
    finally:
        if engine.proc.poll() is None:
            engine.proc.kill()
        for f in (engine.proc.stdin, engine.proc.stdout, engine.proc.stderr):
            f.close()
