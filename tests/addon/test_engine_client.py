"""The add-on's warm-engine client outside Blender (engine.py over the core's serve_client.py),
with the stand-in engine speaking `serve` (fake_engine.py): events, errors, crashes, cancel, the
protocol check, the work folder and the final rename. The same promises with the real engine
run in test_addon_warm_engine.py."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import pytest

from ._load import load

job_state = load("job_state")
engine = load("engine")
engine_jobs = load("engine_jobs")
engine_python = load("engine_python")
protocol = load("wire").protocol
serve_client = load("wire").serve_client
FAKE = Path(__file__).with_name("fake_engine.py")


def _env(mode: str, **more: str) -> dict:
    return dict(os.environ, FAKE_ENGINE_MODE=mode, **more)


def _job(tmp_path: Path, name: str = "x.mp4", **kw) -> "engine_jobs.EngineJob":
    job = engine_jobs.EngineJob(dest=tmp_path / name, **kw)
    job.args = ["--face", "f.mp4", "--audio", "a.wav", "--checkpoint", "c.pth", "--out", str(job.work_out),
                "--fps", "24", "--duration", "0.5", "--protocol", str(protocol.PROTOCOL_VERSION)]
    return job


def _run(fake_python: str, env: dict, *jobs):
    eng = engine.WarmEngine(fake_python, env).start()
    engine_jobs.JobQueue(list(jobs), lambda: eng).start()
    return eng


@pytest.fixture(autouse=True)
def _no_session_engine():
    yield
    engine.shutdown()


def test_the_stand_in_engine_uses_the_engines_protocol_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("_fake_engine_under_test", FAKE)
    fake = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fake)
    real = Path(job_state.__file__).resolve().parents[1] / "wav2lip_core" / "protocol.py"
    assert Path(fake.P.__file__).resolve() == real.resolve() == Path(protocol.__file__).resolve()


def test_the_stand_in_engine_parses_with_the_engines_own_parser(tmp_path, fake_python):
    """Whatever the real CLI takes (and only that) reaches the stand-in, so the add-on's tests
    catch an argument list the engine would refuse."""
    import subprocess

    base = ["-m", "wav2lip_core", "--face", "f.mp4", "--audio", "a.wav", "--checkpoint", "c.pth",
            "--out", str(tmp_path / "o.mp4"), "--fps", "24", "--duration", "0.2", "--progress", "json"]
    env = _env("ok", FAKE_ENGINE_LOG=str(tmp_path / "log.json"))
    ok = subprocess.run([fake_python, *base, "--runtime", "openvino", "--crf", "20", "--no-smooth",
                         "--audio-start", "-3.3e-05"], env=env, capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr
    import json

    logged = json.loads((tmp_path / "log.json").read_text())
    assert (logged["runtime"], logged["crf"], logged["no_smooth"], logged["audio_start"]) == ("openvino", 20, True, -3.3e-05)
    bad = subprocess.run([fake_python, *base, "--crf", "99"], env=env, capture_output=True, text=True, timeout=60)
    assert bad.returncode == protocol.EXIT_USAGE and "--crf: 99 is out of range" in bad.stderr


def test_error_from_stderr():
    assert serve_client.error_from_stderr(["x", "error: no face in frame 3", ""], 2) == "no face in frame 3"
    assert "Traceback" not in serve_client.error_from_stderr(["Traceback (most recent call last):", "  File x", "KeyError: 'a'"], 1)
    assert "KeyError: 'a'" in serve_client.error_from_stderr(["Traceback (most recent call last):", "KeyError: 'a'"], 1)
    assert "exit code -9" in serve_client.error_from_stderr([], -9)


def test_overall_fraction_is_monotonic_over_stages():
    seq = [(st, d, 10) for st in protocol.STAGES for d in (0, 5, 10)]
    fr = [job_state._overall_fraction(s, d, t) for s, d, t in seq]
    assert fr == sorted(fr) and fr[0] == 0 and fr[-1] == pytest.approx(1.0)


def test_jobs_run_in_turn_on_one_engine_and_results_move_into_place(tmp_path, fake_python):
    a, b = _job(tmp_path, "out/A.mp4"), _job(tmp_path, "out/B.mp4")
    # The engine writes into a hidden folder beside the destination (same file system: the final
    # step is a rename, never a copy).
    assert a.workdir.parent == tmp_path / "out" and a.workdir.name.startswith(f".wav2lip-job-{job_state._host_tag()}-{os.getpid()}-")
    eng = _run(fake_python, _env("ok"), a, b)
    pa, pb = a.wait(30), b.wait(30)
    assert pa.status == pb.status == job_state.DONE, (pa.message, pb.message)
    assert (pa.warm, pb.warm) == (False, True)  # what the engine said: the second found it loaded
    assert a.pid == b.pid == eng.pid and eng.alive
    assert pa.out == str(tmp_path / "out" / "A.mp4") and os.path.getsize(pa.out) > 0
    assert sorted(os.listdir(tmp_path / "out")) == ["A.mp4", "B.mp4"]  # no work folders left
    assert a.first_progress_at is not None and a.submitted_at <= a.first_progress_at <= a.ended_at
    eng.stop()
    assert not eng.alive


@pytest.mark.parametrize("mode, message", [
    ("error", "cannot read the checkpoint: it is not a Wav2Lip model"),
    ("big_stderr", "the clip's audio track is damaged at 3.2 s"),
])
def test_a_failed_job_reports_the_engines_line_and_the_engine_goes_on(mode, message, tmp_path, fake_python):
    a, b = _job(tmp_path, "A.mp4"), _job(tmp_path, "B.mp4")
    eng = _run(fake_python, _env(mode), a, b)
    assert a.wait(60).message == message and a.poll().status == job_state.FAILED
    assert b.wait(60).status == job_state.FAILED and eng.alive  # one bad job does not stop the engine
    assert os.listdir(tmp_path) == []


def test_a_crash_fails_the_running_job_in_one_line_and_the_next_job_gets_a_fresh_engine(tmp_path, fake_python):
    env = _env("crash")
    a, b = _job(tmp_path, "A.mp4"), _job(tmp_path, "B.mp4")
    started = []

    def engine_for():
        started.append(engine.session_engine(fake_python, env))
        return started[-1]

    engine_jobs.JobQueue([a, b], engine_for).start()
    p = a.wait(30)
    assert p.status == job_state.FAILED
    assert p.message == ("the lip-sync engine stopped unexpectedly (exit code 1: Segmentation fault (simulated)); "
                         "the next sync starts a fresh one")
    assert b.wait(30).status == job_state.FAILED  # (this stand-in crashes on every job)
    assert len(started) == 2 and started[0].pid != started[1].pid
    assert os.listdir(tmp_path) == []


def test_killed_engine(tmp_path, fake_python):
    a = _job(tmp_path)
    eng = _run(fake_python, _env("slow"), a)
    deadline = time.monotonic() + 20
    while a.poll().stage != protocol.STAGE_SYNC and time.monotonic() < deadline:
        time.sleep(0.02)
    os.kill(eng.pid, signal.SIGKILL)
    p = a.wait(10)
    assert p.status == job_state.FAILED and "killed by SIGKILL" in p.message and not eng.alive
    assert os.listdir(tmp_path) == []


def test_bad_interpreter(tmp_path):
    a = _job(tmp_path)
    _run(str(tmp_path / "nope" / "python"), None, a)
    p = a.wait(5)
    assert a.finished and p.status == job_state.FAILED
    assert p.message.startswith(f"cannot start the lip-sync engine '{tmp_path / 'nope' / 'python'}'")
    assert not a.workdir.exists()


def test_cancel_answers_at_once_drops_the_queue_and_keeps_the_engine(tmp_path, fake_python):
    a, b = _job(tmp_path, "A.mp4"), _job(tmp_path, "B.mp4")
    (a.workdir / "source_times.json").write_text("[]")  # the add-on's own file in the work folder
    eng = engine.WarmEngine(fake_python, _env("slow")).start()
    q = engine_jobs.JobQueue([a, b], lambda: eng).start()
    deadline = time.monotonic() + 20
    while a.poll().stage != protocol.STAGE_SYNC and time.monotonic() < deadline:
        time.sleep(0.02)
    p = a.poll()
    assert p.stage == protocol.STAGE_SYNC and p.total == 600 and "Syncing lips" in p.text
    t0 = time.monotonic()
    q.cancel()
    assert time.monotonic() - t0 < 1.0
    assert a.poll().status == b.poll().status == job_state.CANCELLED and q.finished
    end = time.monotonic() + 5
    while a.workdir.exists() and time.monotonic() < end:
        time.sleep(0.05)
    assert os.listdir(tmp_path) == []
    assert eng.alive  # cancelled by request: the process (and its loaded model) stays
    q.cancel()  # idempotent


def test_cancel_stops_an_engine_that_does_not_answer(tmp_path):
    script = tmp_path / "deaf.py"
    script.write_text(
        "import json, sys, time\n"
        f"print(json.dumps({{'event': 'hello', 'protocol': {protocol.PROTOCOL_VERSION}, 'version': 'x'}}), flush=True)\n"
        "req = json.loads(sys.stdin.readline())\n"
        "print(json.dumps({'event': 'progress', 'job': req['id'], 'stage': 'load', 'done': 0, 'total': 1}), flush=True)\n"
        "time.sleep(60)\n")
    py = tmp_path / "python"
    py.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{script}"\n')
    py.chmod(0o755)
    a = _job(tmp_path / "o")
    eng = _run(str(py), None, a)
    while a.poll().stage != "load":
        time.sleep(0.02)
    t0 = time.monotonic()
    a.cancel(grace=0.5)
    assert a.poll().status == job_state.CANCELLED and time.monotonic() - t0 < 1.0
    end = time.monotonic() + 10
    while (eng.alive or a.workdir.exists()) and time.monotonic() < end:
        time.sleep(0.05)
    assert not eng.alive and not a.workdir.exists()


def test_notes_are_collected(tmp_path, fake_python):
    a = _job(tmp_path)
    _run(fake_python, _env("note"), a)
    p = a.wait(30)
    assert p.status == job_state.DONE, p.message
    assert p.notes and p.notes[0].startswith("face detector: haar") and "install.py" in p.notes[0]


def test_exit_zero_without_file_fails(tmp_path, fake_python):
    a = _job(tmp_path)
    _run(fake_python, _env("silent"), a)
    p = a.wait(30)
    assert p.status == job_state.FAILED and "wrote no file" in p.message
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("mode, speaks", [("other_protocol", str(protocol.PROTOCOL_VERSION + 1)),
                                          ("refuse_protocol", str(protocol.PROTOCOL_VERSION + 1)),
                                          ("old", "older than")])
def test_engine_of_another_protocol_version_is_refused(mode, speaks, tmp_path, fake_python):
    a = _job(tmp_path)
    eng = _run(fake_python, _env(mode), a)
    p = a.wait(30)
    assert p.status == job_state.FAILED
    assert p.message.startswith(f"the lip-sync engine speaks protocol {speaks}")
    assert "re-run install.py" in p.message and "\n" not in p.message
    assert os.listdir(tmp_path) == []  # nothing written
    end = time.monotonic() + 5
    while eng.alive and time.monotonic() < end:
        time.sleep(0.05)
    assert not eng.alive


def test_the_session_engine_is_reused_restarted_and_replaced(tmp_path, fake_python):
    env = _env("ok")
    first = engine.session_engine(fake_python, env)
    assert engine.session_engine(fake_python, env) is first and engine.session_pid() == first.pid
    os.kill(first.pid, signal.SIGKILL)
    end = time.monotonic() + 5
    while first.alive and time.monotonic() < end:
        time.sleep(0.02)
    second = engine.session_engine(fake_python, env)  # died: a fresh one
    assert second is not first and second.alive
    third = engine.session_engine(fake_python, _env("note"))  # another environment: replaced
    assert third is not second and not second.alive
    engine.shutdown()
    assert engine.session_pid() is None and not third.alive


def test_engine_env_reads_utf8(tmp_path):
    script = tmp_path / "enc.py"
    script.write_text(
        "import sys, json\n"
        f"print(json.dumps({{'event': 'hello', 'protocol': {protocol.PROTOCOL_VERSION}, 'version': 'x'}}), flush=True)\n"
        "req = json.loads(sys.stdin.readline())\n"
        "print(json.dumps({'event': 'note', 'job': req['id'], "
        "'message': sys.stdout.encoding + ' ' + str(sys.flags.utf8_mode)}), flush=True)\n"
        "print(json.dumps({'event': 'error', 'job': req['id'], 'message': 'caf\u00e9 \u4e2d\u6587 not found'}), flush=True)\n",
        encoding="utf-8")
    py = tmp_path / "python"
    py.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{script}"\n')
    py.chmod(0o755)
    a = _job(tmp_path / "o")
    _run(str(py), dict(os.environ, LC_ALL="C", LANG="C", PYTHONIOENCODING="latin-1"), a)
    p = a.wait(30)
    assert p.notes == ["utf-8 1"]
    assert p.message == "caf\u00e9 \u4e2d\u6587 not found"


@pytest.mark.parametrize("blocker", ["file", "folder"])
def test_a_failed_final_rename_reports_and_leaves_nothing(blocker, tmp_path, fake_python):
    """Something took the destination's name while the engine ran: nothing is overwritten, the
    report says what happened, and no work folder or partial file stays behind."""
    dest = tmp_path / "Face.lipsync.mp4"
    a = _job(tmp_path, dest.name)
    if blocker == "file":
        dest.write_bytes(b"someone else's file")
    else:
        dest.mkdir()
    _run(fake_python, _env("ok"), a)
    p = a.wait(30)
    assert p.status == job_state.FAILED
    assert p.message.startswith(f"cannot save the result as {dest}") and "nothing was overwritten" in p.message
    assert os.listdir(tmp_path) == [dest.name]
    if blocker == "file":
        assert dest.read_bytes() == b"someone else's file"


def test_work_folders_of_a_gone_blender_are_removed(tmp_path):
    import subprocess

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    stale = tmp_path / f"{job_state.WORK_PREFIX}{job_state._host_tag()}-{gone}-abc"
    stale.mkdir()
    (stale / "result.mp4").write_bytes(b"half")
    mine = job_state.make_workdir(tmp_path / "x.mp4")
    assert not stale.exists() and mine.exists()
    other = tmp_path / f"{job_state.WORK_PREFIX}{job_state._host_tag()}-1-abc"  # pid 1 is alive: not ours to remove
    other.mkdir()
    job_state.make_workdir(tmp_path / "y.mp4")
    assert other.exists()


def test_move_into_place_without_hard_links(tmp_path, monkeypatch):
    """File systems without hard links (FAT, some shares) get a plain rename, still never over a file."""
    def no_links(src, dst):
        raise OSError(95, "Operation not supported")

    monkeypatch.setattr(os, "link", no_links)
    src = tmp_path / "a"
    src.write_text("new")
    dest = tmp_path / "b"
    job_state.move_into_place(src, dest)
    assert dest.read_text() == "new" and not src.exists()
    src.write_text("newer")
    with pytest.raises(FileExistsError):
        job_state.move_into_place(src, dest)
    assert dest.read_text() == "new"


def test_find_engine_python(tmp_path, monkeypatch):
    assert engine_python.find_engine_python("/some/python") == "/some/python"  # preference wins, as is
    monkeypatch.setenv("WAV2LIP_PYTHON", sys.executable)
    found = engine_python.find_engine_python("")
    # The dev checkout puts the repo on PYTHONPATH, so this venv's python can import the core.
    assert found is not None and engine_python.can_import_core(found)
    assert not engine_python.can_import_core(str(tmp_path / "nope"))
    env = engine_python.engine_env({"PYTHONHOME": "/blender/python", "PATH": "/bin"})
    assert "PYTHONHOME" not in env
    assert str(Path(job_state.__file__).resolve().parents[1]) in env["PYTHONPATH"].split(os.pathsep)


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


# --- issue 17: cancel while loading, races, reader bugs, the UI thread, shared drives ------------

def _wait_for(cond, timeout=20.0):
    end = time.monotonic() + timeout
    while not cond() and time.monotonic() < end:
        time.sleep(0.02)
    return cond()


def test_sync_again_right_after_a_cancel_during_the_load_gets_a_fresh_engine(tmp_path, fake_python):
    """Cancel while the engine loads its model (deaf to cancel requests), then Sync again at once:
    the new job must not go to the cancelled job's engine (which is stopped when it does not let
    go in time) but to a fresh one, and finish."""
    env = _env("slow_load", FAKE_ENGINE_LOAD="4")
    engines = []

    def engine_for():
        engines.append(engine.session_engine(fake_python, env))
        return engines[-1]

    a = _job(tmp_path, "A.mp4")
    engine_jobs.JobQueue([a], engine_for).start()
    assert _wait_for(lambda: a.poll().stage == protocol.STAGE_LOAD)
    a.cancel(grace=1.0)  # (the add-on waits 10 s; the stand-in's load outlasts this grace as a real one outlasts 10 s)
    assert a.poll().status == job_state.CANCELLED
    b = _job(tmp_path, "B.mp4")
    engine_jobs.JobQueue([b], engine_for).start()
    p = b.wait(30)
    assert p.status == job_state.DONE, p.message
    assert engines[0] is not engines[-1] and b.pid != a.pid
    assert _wait_for(lambda: not engines[0].alive, 10) and engines[-1].alive
    assert sorted(os.listdir(tmp_path)) == ["B.mp4"]


def test_an_engine_that_let_go_of_a_cancelled_job_is_kept(tmp_path, fake_python):
    """The usual cancel (the engine answers): the warm engine stays and takes the next job."""
    env = _env("slow")
    a = _job(tmp_path, "A.mp4")
    first = engine.session_engine(fake_python, env)
    engine_jobs.JobQueue([a], lambda: engine.session_engine(fake_python, env)).start()
    assert _wait_for(lambda: a.poll().stage == protocol.STAGE_SYNC)
    a.cancel()
    assert _wait_for(lambda: not a.workdir.exists())
    assert engine.session_engine(fake_python, env) is first and first.alive


def test_a_cancel_that_races_the_delivery_keeps_the_finished_clip(tmp_path, fake_python, monkeypatch):
    """The engine reported done and the result is being moved into place when Cancel comes: the
    clip is complete, so the job counts as done (and gets inserted), nothing is thrown away."""
    import threading

    delivering, go = threading.Event(), threading.Event()
    real_deliver = engine_jobs.deliver

    def paused_deliver(produced, dest):
        delivering.set()
        go.wait(10)
        return real_deliver(produced, dest)

    monkeypatch.setattr(engine_jobs, "deliver", paused_deliver)
    a = _job(tmp_path, "A.mp4")
    _run(fake_python, _env("ok"), a)
    assert delivering.wait(30)
    a.cancel()  # returns at once (the delivery is not waited for on the UI thread) ...
    assert not go.is_set()
    go.set()
    p = a.wait(10)
    assert p.status == job_state.DONE, p.message  # ... and the clip counts
    assert p.out == str(tmp_path / "A.mp4") and os.path.getsize(p.out) > 0


def test_a_bug_in_the_reader_thread_fails_the_job_and_retires_the_engine(tmp_path, fake_python, monkeypatch):
    def broken(p, obj):
        raise KeyError("stage")

    monkeypatch.setattr(engine_jobs, "apply_event", broken)
    a = _job(tmp_path)
    eng = _run(fake_python, _env("ok"), a)
    p = a.wait(10)
    assert a.finished and p.status == job_state.FAILED  # not a bar frozen forever
    assert "\n" not in p.message and "KeyError" in p.message and "next sync starts a fresh" in p.message
    assert _wait_for(lambda: not eng.alive and eng.pid is not None and eng.client.proc.poll() is not None, 10)


def _deaf_python(tmp_path: Path, ignore_term: bool = True) -> str:
    """An engine that says hello, then ignores its input (quit, end of input) and SIGTERM."""
    script = tmp_path / "deaf.py"
    script.write_text(
        "import json, signal, sys, time\n"
        + ("signal.signal(signal.SIGTERM, signal.SIG_IGN)\n" if ignore_term else "")
        + f"print(json.dumps({{'event': 'hello', 'protocol': {protocol.PROTOCOL_VERSION}, 'version': 'x'}}), flush=True)\n"
        "time.sleep(60)\n")
    py = tmp_path / "python"
    py.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{script}"\n')
    py.chmod(0o755)
    return str(py)


def test_stop_returns_before_a_slow_engine_exits(tmp_path):
    """Stopping an engine never waits on the UI thread: the escalation (SIGTERM, then SIGKILL)
    goes on in the background."""
    eng = engine.WarmEngine(_deaf_python(tmp_path)).start()
    assert _wait_for(lambda: eng.client.hello)
    eng.stop(grace=1.0)
    assert eng.client.proc.poll() is None  # returned while the engine still runs ...
    assert not eng.alive  # ... and takes no job any more
    assert _wait_for(lambda: eng.client.proc.poll() is not None, 10)  # then killed: SIGTERM is ignored
    assert eng.client.proc.returncode == -signal.SIGKILL


def test_the_interpreter_probe_does_not_run_on_the_calling_thread(tmp_path, monkeypatch, fake_python):
    """The first run looks for the engine's Python by running candidates (engine_python); the queue
    starts its job off the calling (UI) thread, so a slow probe does not freeze Blender."""
    gate = tmp_path / "go"
    probed = tmp_path / "probed"
    slow = tmp_path / "slowpy"
    slow.write_text(
        "#!/bin/sh\n"
        'if [ "$1" = "-c" ]; then\n'
        f'  i=0; while [ ! -e "{gate}" ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); done\n'
        f'  touch "{probed}"; exec "{sys.executable}" "$@"\n'
        "fi\n"
        f'exec "{fake_python}" "$@"\n')
    slow.chmod(0o755)
    monkeypatch.setenv("WAV2LIP_PYTHON", str(slow))
    env = _env("ok")
    a = _job(tmp_path, "A.mp4")
    q = engine_jobs.JobQueue([a], lambda: engine.session_engine(engine_python.find_engine_python(""), env))
    q.start()
    assert not probed.exists()  # start() returned while the probe still waits
    gate.write_text("")
    p = a.wait(30)
    assert p.status == job_state.DONE, p.message
    assert probed.exists() and a.pid is not None


def test_work_folders_carry_the_host_and_only_this_hosts_are_swept(tmp_path):
    """On a shared project drive several machines write work folders side by side: a folder is
    named by host and process, and only this host's dead processes' folders are removed."""
    import socket
    import subprocess

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    mine = job_state.make_workdir(tmp_path / "x.mp4")
    host = job_state._host_tag()
    assert host and socket.gethostname().split(".")[0][:8].lower() in mine.name.lower()
    assert mine.name.startswith(f"{job_state.WORK_PREFIX}{host}-{os.getpid()}-")
    dead_here = tmp_path / f"{job_state.WORK_PREFIX}{host}-{gone}-abc"
    elsewhere = tmp_path / f"{job_state.WORK_PREFIX}otherbox-{gone}-abc"  # that pid may be running there
    old_style = tmp_path / f"{job_state.WORK_PREFIX}{gone}-abc"  # an older add-on's name: any host's
    old_and_untouched = tmp_path / f"{job_state.WORK_PREFIX}{gone}-def"
    for d in (dead_here, elsewhere, old_style, old_and_untouched):
        d.mkdir()
        (d / "result.mp4").write_bytes(b"half")
    day_ago = time.time() - 2 * 86400
    for p in (old_and_untouched / "result.mp4", old_and_untouched):
        os.utime(p, (day_ago, day_ago))
    job_state.make_workdir(tmp_path / "y.mp4")
    assert not dead_here.exists() and mine.exists()
    assert elsewhere.exists() and old_style.exists()
    assert not old_and_untouched.exists()  # nothing written for a day: no job runs there


def test_the_interpreter_lookup_for_a_panel_answers_without_waiting(tmp_path, monkeypatch):
    gate, probed = tmp_path / "go", tmp_path / "probed"
    slow = tmp_path / "slowpy"
    slow.write_text(
        "#!/bin/sh\n"
        f'i=0; while [ ! -e "{gate}" ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); done\n'
        f'touch "{probed}"; exec "{sys.executable}" "$@"\n')
    slow.chmod(0o755)
    monkeypatch.setenv("WAV2LIP_PYTHON", str(slow))
    monkeypatch.setattr(engine_python, "_found", {})
    monkeypatch.setattr(engine_python, "_lookups", {})
    assert engine_python.found_in_background("") is None and not probed.exists()  # looking, not waiting
    gate.write_text("")
    assert _wait_for(lambda: engine_python.found_in_background("") == str(slow), 20)
