"""serve_client.ServeClient, the one client of `wav2lip serve` (the add-on's and `wav2lip batch`'s),
against real processes: the stand-in engine (tests/addon/fake_engine.py, the engine's own parser
and protocol), small scripts that misbehave, and the real engine where that is cheap. Its rules:
the hello check, typed events, cancel, and one account of an engine that dies or is stopped."""

from __future__ import annotations

import os
import queue
import signal
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT
from wav2lip_core import protocol as P
from wav2lip_core.serve_client import EngineExit, ServeClient, join_stoppers

FAKE = ROOT / "tests" / "addon" / "fake_engine.py"


def _python(tmp_path: Path, script: str | Path, name: str = "python") -> str:
    """An 'interpreter' that runs `script` for `<python> -m wav2lip_core serve`."""
    p = tmp_path / name
    p.write_text(f'#!/bin/sh\nshift 2\nexec "{sys.executable}" "{script}" "$@"\n')
    p.chmod(0o755)
    return str(p)


def _script(tmp_path: Path, body: str) -> str:
    script = tmp_path / "engine.py"
    script.write_text("import json, signal, sys, time\n"
                      f"print(json.dumps({{'event': 'hello', 'protocol': {P.PROTOCOL_VERSION}, 'version': 'x'}}), flush=True)\n"
                      + body)
    return _python(tmp_path, script)


class Client:
    """A ServeClient whose events, losses and end go to one queue."""

    def __init__(self, python: str, **env: str):
        self.q: queue.Queue = queue.Queue()
        self.lost: list[str] = []
        self.c = ServeClient(python, on_event=self.q.put, on_exit=self.q.put, on_lost=self.lost.append,
                             env=dict(os.environ, **env)).start()

    def until(self, kind: type, timeout: float = 30) -> object:
        end = time.monotonic() + timeout
        while True:
            item = self.q.get(timeout=max(0.01, end - time.monotonic()))
            if isinstance(item, kind):
                return item
            assert not isinstance(item, EngineExit), item


@pytest.fixture
def fake(tmp_path):
    return _python(tmp_path, FAKE)


def _job(tmp_path: Path, job_id: str = "a") -> P.JobRequest:
    return P.JobRequest(id=job_id, args=["--face", "f.mp4", "--audio", "a.wav", "--checkpoint", "c.pth",
                                         "--out", str(tmp_path / f"{job_id}.mp4"), "--fps", "24", "--duration", "0.2"])


def test_typed_events_then_a_stop_counts_as_stopped(fake, tmp_path):
    e = Client(fake, FAKE_ENGINE_MODE="note")
    assert e.c.wait_hello(30) and e.c.alive and e.c.hello.version == "0.0.0-fake"
    e.c.send(_job(tmp_path))
    note = e.until(P.Note)
    assert note.job == "a" and note.message.startswith("face detector: haar")
    assert isinstance(e.until(P.Progress), P.Progress)
    done = e.until(P.Done)
    assert (done.job, done.frames, done.warm) == ("a", 5, False) and Path(done.out).is_file()
    t0 = time.monotonic()
    e.c.stop(grace=5.0)
    assert time.monotonic() - t0 < 0.5 and not e.c.alive  # the caller does not wait ...
    end = e.c.wait_exit(10)
    assert end == EngineExit(0, "the lip-sync engine was stopped", stopped=True, crashed=False)  # ... the quit is obeyed
    assert e.c.unusable == end.reason and e.lost == []


def test_cancel_stops_the_job_and_the_engine_stays(fake, tmp_path):
    e = Client(fake, FAKE_ENGINE_MODE="slow")
    assert e.c.wait_hello(30)
    e.c.send(_job(tmp_path))
    e.until(P.Progress)
    e.c.send(P.CancelRequest(id="a"))
    assert e.until(P.Cancelled, 10) == P.Cancelled(job="a")
    assert e.c.alive
    e.c.stop(wait=True)


def test_a_crash_is_one_line_with_its_last_words(fake, tmp_path):
    e = Client(fake, FAKE_ENGINE_MODE="crash")
    assert e.c.wait_hello(30)
    e.c.send(_job(tmp_path))
    end = e.until(EngineExit)
    assert end == EngineExit(1, "the lip-sync engine stopped unexpectedly (exit code 1: Segmentation fault (simulated))",
                             stopped=False, crashed=True)
    assert not e.c.alive


def test_a_killed_engine_says_by_which_signal(fake, tmp_path):
    e = Client(fake, FAKE_ENGINE_MODE="slow")
    assert e.c.wait_hello(30)
    os.kill(e.c.pid, signal.SIGKILL)
    end = e.until(EngineExit)
    assert end.reason == "the lip-sync engine stopped unexpectedly (killed by SIGKILL)" and end.crashed and not end.stopped


@pytest.mark.parametrize("mode, speaks, code", [
    ("other_protocol", str(P.PROTOCOL_VERSION + 1), -signal.SIGTERM),  # says hello in another version: stopped
    ("refuse_protocol", str(P.PROTOCOL_VERSION + 1), P.EXIT_PROTOCOL),  # refuses ours before hello
    ("old", f"older than {P.PROTOCOL_VERSION}", P.EXIT_USAGE),  # knows no `serve`
])
def test_an_engine_of_another_version_is_refused(mode, speaks, code, fake):
    e = Client(fake, FAKE_ENGINE_MODE=mode)
    assert not e.c.wait_hello(30)
    end = e.c.wait_exit(10)
    assert end is not None and end.code == code and not end.stopped and not end.crashed
    assert end.reason.startswith(f"the lip-sync engine speaks protocol {speaks}") and "re-run install.py" in end.reason
    assert e.c.refusal == end.reason == e.c.unusable and not e.c.alive


def test_an_interpreter_that_does_not_start(tmp_path):
    e = Client(str(tmp_path / "nope" / "python"))
    assert not e.c.wait_hello(1) and e.c.pid is None
    assert e.c.exit.code is None and e.c.exit.reason.startswith(f"cannot start the lip-sync engine '{tmp_path}")


def test_a_line_that_is_no_event_loses_the_engine_in_one_line(tmp_path):
    python = _script(tmp_path, "print('a stray print is ignored', flush=True)\n"
                               "print(json.dumps({'event': 'progress', 'job': 'a', 'stage': 'sync'}), flush=True)\n"
                               "time.sleep(60)\n")
    e = Client(python)
    assert e.c.wait_hello(30)
    end = e.until(EngineExit, 10)
    assert e.lost == ['lost track of the lip-sync engine (ProtocolError: a "progress" event needs "done" '
                      '(a whole number), not null)']
    assert end.reason == e.lost[0] and not end.stopped and not end.crashed  # its jobs fail, not cancelled


def test_stop_escalates_to_sigkill_for_an_engine_deaf_to_quit_and_sigterm(tmp_path):
    python = _script(tmp_path, "signal.signal(signal.SIGTERM, signal.SIG_IGN)\ntime.sleep(60)\n")
    e = Client(python)
    assert e.c.wait_hello(30)
    t0 = time.monotonic()
    e.c.stop(grace=0.5)
    assert time.monotonic() - t0 < 0.3 and e.c.proc.poll() is None
    join_stoppers(10)
    assert e.c.proc.returncode == -signal.SIGKILL and e.c.wait_exit(5).stopped


def test_the_real_engine_greets_refuses_a_bad_job_and_quits(tmp_path):
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    e = Client(sys.executable, **env)
    assert e.c.wait_hello(60) and e.c.hello.protocol == P.PROTOCOL_VERSION
    e.c.send(P.JobRequest(id="bad", args=["--face", "f.mp4", "--crf", "99"]))
    error = e.until(P.Error, 60)
    assert error.job == "bad" and error.message.startswith("bad job arguments:")
    e.c.send(P.CancelRequest(id="gone"))  # an id it does not know: ignored
    e.c.stop(grace=10.0, wait=True)
    assert e.c.exit == EngineExit(0, "the lip-sync engine was stopped", stopped=True, crashed=False)
    assert e.q.get_nowait() is e.c.exit and e.q.empty()  # nothing about the ignored cancel
