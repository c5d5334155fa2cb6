"""The job runner outside Blender: process, protocol events, errors, cancel, the work folder and
the final rename."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from ._load import load

runner = load("runner")
engine_python = load("engine_python")
protocol = load("wire").protocol
FAKE = Path(__file__).with_name("fake_engine.py")


def _argv(tmp_path: Path, out: Path, *extra: str) -> list:
    return [sys.executable, str(FAKE), "--face", "f.mp4", "--audio", "a.wav", "--checkpoint", "c.pth",
            "--out", str(out), "--fps", "24", "--duration", "0.5", "--progress", "json",
            "--protocol", str(protocol.PROTOCOL_VERSION), *extra]


def _env(mode: str) -> dict:
    env = dict(os.environ)
    env["FAKE_ENGINE_MODE"] = mode
    return env


def test_the_stand_in_engine_uses_the_engines_protocol_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("_fake_engine_under_test", FAKE)
    fake = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fake)
    real = Path(runner.__file__).resolve().parents[1] / "wav2lip_core" / "protocol.py"
    assert Path(fake.P.__file__).resolve() == real.resolve() == Path(protocol.__file__).resolve()


def test_error_from_stderr():
    assert runner.error_from_stderr(["x", "error: no face in frame 3", ""], 2) == "no face in frame 3"
    assert "Traceback" not in runner.error_from_stderr(["Traceback (most recent call last):", "  File x", "KeyError: 'a'"], 1)
    assert "KeyError: 'a'" in runner.error_from_stderr(["Traceback (most recent call last):", "KeyError: 'a'"], 1)
    assert "exit code -9" in runner.error_from_stderr([], -9)


def test_overall_fraction_is_monotonic_over_stages():
    seq = [(st, d, 10) for st in protocol.STAGES for d in (0, 5, 10)]
    fr = [runner._overall_fraction(s, d, t) for s, d, t in seq]
    assert fr == sorted(fr) and fr[0] == 0 and fr[-1] == pytest.approx(1.0)


def test_success_moves_result_and_cleans_up(tmp_path):
    dest = tmp_path / "out" / "Face.lipsync.mp4"
    r = runner.JobRunner(dest=dest)
    # The engine writes into a hidden folder beside the destination (same file system: the
    # final step is a rename, never a copy).
    assert r.workdir.parent == dest.parent and r.workdir.name.startswith(".")
    assert os.stat(r.workdir).st_dev == os.stat(dest.parent).st_dev
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
    assert sorted(os.listdir(dest.parent)) == [dest.name]  # no .part, no work folder
    assert r.poll().engine_version == "0.0.0-fake" and r.poll().detector == "haar"
    fr = [f for _, f in seen]
    assert fr == sorted(fr)


def test_engine_error_message_is_reported(tmp_path):
    r = runner.JobRunner(dest=tmp_path / "x.mp4", env=_env("error"))
    r.argv = _argv(tmp_path, r.work_out)
    p = r.start().wait(30)
    assert p.status == runner.FAILED
    assert p.message == "cannot read the checkpoint: it is not a Wav2Lip model"
    assert not (tmp_path / "x.mp4").exists() and not r.workdir.exists()
    assert os.listdir(tmp_path) == []


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
    while r.poll().stage != protocol.STAGE_SYNC and time.monotonic() < deadline:
        time.sleep(0.05)
    p = r.poll()
    assert p.stage == protocol.STAGE_SYNC and p.total == 600 and p.status == runner.RUNNING
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
        "print(json.dumps({'event': 'progress', 'stage': 'sync', 'done': 0, 'total': 1}), flush=True)\n"
        "time.sleep(60)\n"
    )
    r = runner.JobRunner(dest=tmp_path / "x.mp4")
    r.argv = [sys.executable, str(script)]
    r.start()
    deadline = time.monotonic() + 10
    while r.poll().stage != "sync" and time.monotonic() < deadline:
        time.sleep(0.05)
    t0 = time.monotonic()
    r.cancel(grace=0.5)
    assert r.poll().status == runner.CANCELLED and time.monotonic() - t0 < 5


def test_find_engine_python(tmp_path, monkeypatch):
    assert engine_python.find_engine_python("/some/python") == "/some/python"  # preference wins, as is
    monkeypatch.setenv("WAV2LIP_PYTHON", sys.executable)
    found = engine_python.find_engine_python("")
    # The dev checkout puts the repo on PYTHONPATH, so this venv's python can import the core.
    assert found is not None and engine_python.can_import_core(found)
    assert not engine_python.can_import_core(str(tmp_path / "nope"))
    env = engine_python.engine_env({"PYTHONHOME": "/blender/python", "PATH": "/bin"})
    assert "PYTHONHOME" not in env
    assert str(Path(runner.__file__).resolve().parents[1]) in env["PYTHONPATH"].split(os.pathsep)


def test_notes_are_collected(tmp_path):
    r = runner.JobRunner(dest=tmp_path / "x.mp4", env=_env("note"))
    r.argv = _argv(tmp_path, r.work_out)
    p = r.start().wait(30)
    assert p.status == runner.DONE, p.message
    assert p.notes and p.notes[0].startswith("face detector: haar") and "install.py" in p.notes[0]


@pytest.mark.parametrize("mode, speaks", [("other_protocol", str(protocol.PROTOCOL_VERSION + 1)),
                                          ("refuse_protocol", str(protocol.PROTOCOL_VERSION + 1)),
                                          ("old", "older than")])
def test_engine_of_another_protocol_version_is_refused(mode, speaks, tmp_path):
    r = runner.JobRunner(dest=tmp_path / "x.mp4", env=_env(mode))
    r.argv = _argv(tmp_path, r.work_out)
    p = r.start().wait(30)
    assert p.status == runner.FAILED
    assert p.message.startswith(f"the lip-sync engine speaks protocol {speaks}")
    assert "re-run install.py" in p.message and "\n" not in p.message
    assert os.listdir(tmp_path) == []  # the engine was stopped before it wrote anything


def test_megabytes_of_stderr_neither_hang_nor_hide_the_error(tmp_path):
    r = runner.JobRunner(dest=tmp_path / "x.mp4", env=_env("big_stderr"))
    r.argv = _argv(tmp_path, r.work_out)
    p = r.start().wait(60)
    assert r.finished and p.status == runner.FAILED
    assert p.message == "the clip's audio track is damaged at 3.2 s"
    assert all(len(line) < 5000 for line in r.stderr_tail(200))


def test_engine_env_reads_utf8(tmp_path):
    script = tmp_path / "enc.py"
    script.write_text(
        "import sys, json\n"
        "print(json.dumps({'event': 'note', 'message': sys.stdout.encoding + ' ' + str(sys.flags.utf8_mode)}), flush=True)\n"
        "print('error: caf\u00e9 \u4e2d\u6587 not found', file=sys.stderr)\n"
        "sys.exit(1)\n", encoding="utf-8")
    env = dict(os.environ, LC_ALL="C", LANG="C", PYTHONIOENCODING="latin-1")
    r = runner.JobRunner(dest=tmp_path / "o" / "x.mp4", env=env)
    r.argv = [sys.executable, str(script)]
    p = r.start().wait(30)
    assert p.notes == ["utf-8 1"]
    assert p.message == "caf\u00e9 \u4e2d\u6587 not found"


@pytest.mark.parametrize("blocker", ["file", "folder"])
def test_a_failed_final_rename_reports_and_leaves_nothing(blocker, tmp_path):
    """Something took the destination's name while the engine ran: nothing is overwritten, the
    report says what happened, and no work folder or partial file stays behind."""
    dest = tmp_path / "Face.lipsync.mp4"
    r = runner.JobRunner(dest=dest)
    r.argv = _argv(tmp_path, r.work_out)
    if blocker == "file":
        dest.write_bytes(b"someone else's file")
    else:
        dest.mkdir()
    p = r.start().wait(30)
    assert p.status == runner.FAILED
    assert p.message.startswith(f"cannot save the result as {dest}") and "nothing was overwritten" in p.message
    assert os.listdir(tmp_path) == [dest.name]
    if blocker == "file":
        assert dest.read_bytes() == b"someone else's file"


def test_move_into_place_without_hard_links(tmp_path, monkeypatch):
    """File systems without hard links (FAT, some shares) get a plain rename, still never over a file."""
    def no_links(src, dst):
        raise OSError(95, "Operation not supported")

    monkeypatch.setattr(os, "link", no_links)
    src = tmp_path / "a"
    src.write_text("new")
    dest = tmp_path / "b"
    runner.move_into_place(src, dest)
    assert dest.read_text() == "new" and not src.exists()
    src.write_text("newer")
    with pytest.raises(FileExistsError):
        runner.move_into_place(src, dest)
    assert dest.read_text() == "new"


def test_engine_python_by_bare_name(tmp_path, monkeypatch):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    exe = bindir / "mypython3"
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    monkeypatch.setenv("PATH", str(bindir) + os.pathsep + os.environ.get("PATH", ""))
    assert engine_python.find_engine_python("mypython3") == str(exe)
    with pytest.raises(engine_python.EngineNotFound, match="'nosuchpython9' is not on PATH"):
        engine_python.find_engine_python("nosuchpython9")
