"""The job runner outside Blender: process, progress parsing, errors, cancel, temp cleanup."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from ._load import load

runner = load("runner")
FAKE = Path(__file__).with_name("fake_engine.py")


def _argv(tmp_path: Path, out: Path, *extra: str) -> list:
    return [sys.executable, str(FAKE), "--face", "f.mp4", "--audio", "a.wav", "--checkpoint", "c.pth",
            "--out", str(out), "--fps", "24", "--duration", "0.5", "--progress", "json", *extra]


def _env(mode: str) -> dict:
    env = dict(os.environ)
    env["FAKE_ENGINE_MODE"] = mode
    return env


def test_parse_progress_line():
    assert runner.parse_progress_line('{"stage": "model", "done": 3, "total": 9}\n') == {
        "stage": "model", "done": 3, "total": 9}
    assert runner.parse_progress_line("loading...") is None
    assert runner.parse_progress_line("{not json") is None
    assert runner.parse_progress_line('{"done": 1}') is None
    assert runner.parse_progress_line("[1, 2]") is None


def test_error_from_stderr():
    assert runner.error_from_stderr(["x", "error: no face in frame 3", ""], 2) == "no face in frame 3"
    assert "Traceback" not in runner.error_from_stderr(["Traceback (most recent call last):", "  File x", "KeyError: 'a'"], 1)
    assert "KeyError: 'a'" in runner.error_from_stderr(["Traceback (most recent call last):", "KeyError: 'a'"], 1)
    assert "exit code -9" in runner.error_from_stderr([], -9)


def test_overall_fraction_is_monotonic_over_stages():
    seq = [("decode", 5, 10), ("detect", 0, 10), ("detect", 10, 10), ("model", 5, 10), ("encode", 10, 10)]
    fr = [runner._overall_fraction([], s, d, t) for s, d, t in seq]
    assert fr == sorted(fr) and 0 < fr[0] < fr[-1] <= 1.0


def test_success_moves_result_and_cleans_up(tmp_path):
    dest = tmp_path / "out" / "Face.lipsync.mp4"
    r = runner.JobRunner(dest=dest)
    r.argv = _argv(tmp_path, r.work_out)
    seen = []
    r.start()
    while not r.finished:
        p = r.poll()
        seen.append((p.stage, p.fraction))
        time.sleep(0.01)
    p = r.wait(30)
    assert p.status == runner.DONE, p.message
    assert p.out == str(dest) and dest.is_file() and dest.stat().st_size > 0
    assert p.frames == 12 and p.fraction == 1.0 and p.text == "Done"
    assert not r.workdir.exists()
    assert not dest.with_name(dest.name + ".part").exists()
    fr = [f for _, f in seen]
    assert fr == sorted(fr)


def test_engine_error_message_is_reported(tmp_path):
    r = runner.JobRunner(dest=tmp_path / "x.mp4", env=_env("error"))
    r.argv = _argv(tmp_path, r.work_out)
    p = r.start().wait(30)
    assert p.status == runner.FAILED
    assert p.message == "cannot read the checkpoint: it is not a Wav2Lip model"
    assert not (tmp_path / "x.mp4").exists() and not r.workdir.exists()


def test_crash_is_reported_without_traceback(tmp_path):
    r = runner.JobRunner(dest=tmp_path / "x.mp4", env=_env("crash"))
    r.argv = _argv(tmp_path, r.work_out)
    p = r.start().wait(30)
    assert p.status == runner.FAILED and "exit code 1" in p.message and "Segmentation fault" in p.message
    assert not (tmp_path / "x.mp4").exists() and not r.workdir.exists()


def test_exit_zero_without_file_fails(tmp_path):
    r = runner.JobRunner(dest=tmp_path / "x.mp4", env=_env("silent"))
    r.argv = _argv(tmp_path, r.work_out)
    p = r.start().wait(30)
    assert p.status == runner.FAILED and "wrote no file" in p.message
    assert not (tmp_path / "x.mp4").exists()


def test_bad_interpreter(tmp_path):
    r = runner.JobRunner(dest=tmp_path / "x.mp4")
    r.argv = [str(tmp_path / "no" / "python"), "-m", "wav2lip_core"]
    p = r.start().wait(5)
    assert r.finished and p.status == runner.FAILED
    assert "cannot start the lip-sync engine" in p.message
    assert not r.workdir.exists()


def test_cancel_kills_process_and_removes_temp(tmp_path):
    r = runner.JobRunner(dest=tmp_path / "x.mp4", env=_env("slow"))
    r.argv = _argv(tmp_path, r.work_out)
    (r.workdir / "heard.wav").write_bytes(b"RIFF")  # the operator's own temp file
    r.start()
    deadline = time.monotonic() + 20
    while r.poll().stage != "model" and time.monotonic() < deadline:
        time.sleep(0.05)
    p = r.poll()
    assert p.stage == "model" and p.total == 600 and p.status == runner.RUNNING
    assert "Syncing lips" in p.text
    pid = r.pid
    t0 = time.monotonic()
    r.cancel()
    assert time.monotonic() - t0 < 5
    p = r.poll()
    assert p.status == runner.CANCELLED and r.finished
    assert not r.workdir.exists() and not (tmp_path / "x.mp4").exists()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    r.cancel()  # idempotent


def test_cancel_kills_a_process_that_ignores_sigterm(tmp_path):
    script = tmp_path / "stubborn.py"
    script.write_text(
        "import signal, time, json\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "print(json.dumps({'stage': 'model', 'done': 0, 'total': 1}), flush=True)\n"
        "time.sleep(60)\n"
    )
    r = runner.JobRunner(dest=tmp_path / "x.mp4")
    r.argv = [sys.executable, str(script)]
    r.start()
    deadline = time.monotonic() + 10
    while r.poll().stage != "model" and time.monotonic() < deadline:
        time.sleep(0.05)
    t0 = time.monotonic()
    r.cancel(grace=0.5)
    assert r.poll().status == runner.CANCELLED and time.monotonic() - t0 < 5


def test_find_engine_python(tmp_path, monkeypatch):
    assert runner.find_engine_python("/some/python") == "/some/python"  # preference wins, as is
    monkeypatch.setenv("WAV2LIP_PYTHON", sys.executable)
    found = runner.find_engine_python("")
    # The dev checkout puts the repo on PYTHONPATH, so this venv's python can import the core.
    assert found is not None and runner.can_import_core(found)
    assert not runner.can_import_core(str(tmp_path / "nope"))
    env = runner.engine_env({"PYTHONHOME": "/blender/python", "PATH": "/bin"})
    assert "PYTHONHOME" not in env
    assert str(Path(runner.__file__).resolve().parents[1]) in env["PYTHONPATH"].split(os.pathsep)
