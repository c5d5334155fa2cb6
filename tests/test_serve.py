"""`wav2lip serve` as the add-on runs it: a real engine subprocess, JSON lines both ways.

Every stdout line must be an event; every event about a job names it; a bad, refused or
cancelled job never stops the engine; quit, end of input and SIGTERM end it with exit 0 and no
partial output.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import wav2lip_core
from conftest import ROOT, heavy_imports
from test_cli import BOX, FACE2, SPEECH16K, count_frames
from wav2lip_core import protocol as P

TIMEOUT = 120


class Engine:
    """One `python -m wav2lip_core serve`; every stdout line is parsed as JSON (a stray line
    fails the test)."""

    def __init__(self):
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
        self.proc = subprocess.Popen([sys.executable, "-m", "wav2lip_core", "serve"], cwd=ROOT, env=env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, bufsize=1)
        self.lines: queue.Queue = queue.Queue()
        self.events: list[dict] = []
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def send(self, obj: dict) -> None:
        self.proc.stdin.write(json.dumps(obj) + "\n")
        self.proc.stdin.flush()

    def job(self, job_id: str, args: list) -> None:
        self.send({"op": "job", "id": job_id, "args": [str(a) for a in args]})

    def next(self) -> dict:
        line = self.lines.get(timeout=TIMEOUT)
        assert line is not None, f"engine ended early: {self.proc.wait(10)} {self.proc.stderr.read()}"
        event = json.loads(line)  # a stray print fails here
        assert isinstance(event, dict) and isinstance(event.get("event"), str), line
        self.events.append(event)
        return event

    def until(self, job_id: str, *kinds: str) -> dict:
        while True:
            e = self.next()
            if e.get("job") == job_id and e["event"] in kinds:
                return e

    def of(self, job_id: str) -> list[dict]:
        return [e for e in self.events if "job" in e and e["job"] == job_id]

    def finish(self) -> tuple[int, list[dict]]:
        """Wait for exit; the exit code and the events after the last one read."""
        rest = []
        while (line := self.lines.get(timeout=TIMEOUT)) is not None:
            rest.append(json.loads(line))
        self.events += rest
        return self.proc.wait(timeout=TIMEOUT), rest


@pytest.fixture
def engine():
    e = Engine()
    yield e
    if e.proc.poll() is None:
        e.proc.kill()
        e.proc.wait(10)
    for f in (e.proc.stdin, e.proc.stdout, e.proc.stderr):
        f.close()


def job_args(checkpoint, out: Path, duration: str = "0.4", *extra) -> list:
    # torch: no OpenVINO conversion of the session's checkpoint needed for these tests
    return ["--face", FACE2, "--audio", SPEECH16K, "--checkpoint", checkpoint, "--out", out, "--box", *BOX,
            "--duration", duration, "--device", "cpu", "--runtime", "torch", "--no-cache", *extra]


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_hello_then_two_queued_jobs_the_second_warm(engine, checkpoint, tmp_path):
    assert engine.next() == {"event": "hello", "protocol": P.PROTOCOL_VERSION, "version": wav2lip_core.__version__}
    engine.job("a", job_args(checkpoint, tmp_path / "a.mp4"))
    engine.job("b", job_args(checkpoint, tmp_path / "b.mp4"))  # queued behind a
    a = engine.until("a", "done", "error", "cancelled")
    b = engine.until("b", "done", "error", "cancelled")
    for done, name in ((a, "a"), (b, "b")):
        assert done["event"] == "done", done
        assert Path(done["out"]) == tmp_path / f"{name}.mp4" and done["frames"] == 10 and done["detector"] == "box"
        assert count_frames(tmp_path / f"{name}.mp4") == 10  # ceil(0.4 s * 25 fps)
    assert a["warm"] is False and b["warm"] is True
    # one at a time, in arrival order: every event of a comes before any of b
    jobs = [e["job"] for e in engine.events[1:]]
    assert jobs == ["a"] * jobs.count("a") + ["b"] * jobs.count("b")
    for name in "ab":
        stages = [e["stage"] for e in engine.of(name) if e["event"] == "progress"]
        assert [s for i, s in enumerate(stages) if s not in stages[:i]] == list(P.STAGES)
    engine.send({"op": "quit"})
    assert engine.finish() == (0, [])


def test_a_bad_job_gets_one_error_and_the_next_job_runs(engine, checkpoint, tmp_path):
    engine.next()
    engine.job("missing", job_args(checkpoint, tmp_path / "m.mp4") + ["--face", tmp_path / "nope.mp4"])
    engine.job("badarg", job_args(checkpoint, tmp_path / "x.mp4", "0.4", "--crf", "99"))
    engine.send({"op": "job", "id": "noargs"})
    engine.proc.stdin.write("not json\n")
    engine.job("good", job_args(checkpoint, tmp_path / "good.mp4"))
    done = engine.until("good", "done", "error", "cancelled")
    assert done["event"] == "done" and count_frames(tmp_path / "good.mp4") == 10
    for job_id, words in (("missing", "file not found"), ("badarg", "out of range"), ("noargs", '"args"'),
                          (None, "not a JSON request")):
        events = engine.of(job_id)
        assert [e["event"] for e in events] == ["error"], events
        assert words in events[0]["message"] and "\n" not in events[0]["message"]
    assert leftovers(tmp_path) == ["good.mp4"]
    engine.proc.stdin.close()  # end of input: exit 0
    assert engine.finish() == (0, [])


def test_cancel_running_and_queued_jobs_then_the_next_job_runs(engine, checkpoint, tmp_path):
    engine.next()
    engine.job("long", job_args(checkpoint, tmp_path / "long.mp4", "4", "--batch-size", "2"))
    engine.job("queued", job_args(checkpoint, tmp_path / "queued.mp4"))
    while True:  # frames are being written
        e = engine.until("long", "progress", "done", "error")
        assert e["event"] == "progress", e
        if e["stage"] == "sync" and e["done"] >= 4:
            break
    engine.send({"op": "cancel", "id": "queued"})
    assert engine.until("queued", "cancelled", "progress", "done") == {"event": "cancelled", "job": "queued"}
    engine.send({"op": "cancel", "id": "long"})
    assert engine.until("long", "cancelled", "done", "error") == {"event": "cancelled", "job": "long"}
    assert leftovers(tmp_path) == []  # no output, no hidden temp file
    engine.send({"op": "cancel", "id": "long"})  # already over: ignored
    engine.job("after", job_args(checkpoint, tmp_path / "after.mp4"))
    done = engine.until("after", "done", "error", "cancelled")
    assert done["event"] == "done" and done["warm"] is True
    assert [e["event"] for e in engine.of("queued")] == ["cancelled"]
    assert leftovers(tmp_path) == ["after.mp4"]
    engine.send({"op": "quit"})
    assert engine.finish() == (0, [])


@pytest.mark.parametrize("how", ["eof", "sigterm"])
def test_end_of_input_or_sigterm_cancels_the_running_job_and_exits_0(engine, checkpoint, tmp_path, how):
    engine.next()
    engine.job("long", job_args(checkpoint, tmp_path / "long.mp4", "4", "--batch-size", "2"))
    engine.job("queued", job_args(checkpoint, tmp_path / "queued.mp4"))
    while (e := engine.until("long", "progress", "done", "error"))["stage"] != "sync":
        assert e["event"] == "progress", e
    if how == "eof":
        engine.proc.stdin.close()
    else:
        engine.proc.send_signal(signal.SIGTERM)
    code, _ = engine.finish()
    assert code == 0, engine.proc.stderr.read()
    assert engine.of("long")[-1] == {"event": "cancelled", "job": "long"}
    assert engine.of("queued") == [{"event": "cancelled", "job": "queued"}]
    assert leftovers(tmp_path) == []
    assert "Traceback" not in engine.proc.stderr.read()


def test_another_protocol_version_is_refused(engine, checkpoint, tmp_path):
    engine.next()
    other = P.PROTOCOL_VERSION + 1
    engine.send({"op": "job", "id": "field", "protocol": other,
                 "args": [str(a) for a in job_args(checkpoint, tmp_path / "f.mp4")]})
    engine.job("option", job_args(checkpoint, tmp_path / "o.mp4", "0.4", "--protocol", str(other)))
    engine.job("same", job_args(checkpoint, tmp_path / "s.mp4", "0.4", "--protocol", str(P.PROTOCOL_VERSION)))
    assert engine.until("same", "done", "error")["event"] == "done"
    for job_id in ("field", "option"):
        events = engine.of(job_id)
        assert [e["event"] for e in events] == ["error"], events
        assert f"protocol {P.PROTOCOL_VERSION}, the caller {other}" in events[0]["message"]
        assert "re-run install.py" in events[0]["message"]
    assert leftovers(tmp_path) == ["s.mp4"]
    engine.send({"op": "quit"})
    assert engine.finish() == (0, [])


def test_serve_help_does_not_import_torch():
    """The add-on gets hello at once: the engine's own module imports none of the heavy libraries."""
    assert heavy_imports("from wav2lip_core.jobs import serve") == []
