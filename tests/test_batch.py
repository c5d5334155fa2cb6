"""`wav2lip batch JOBS` on this machine, as a user runs it: a subprocess with real warm engines.

A bad job fails alone with one line in the report; the exit code is 0 only when every job
succeeded or was skipped; a second run skips what is done and re-runs what changed; Ctrl+C
cancels without leaving outputs; --ray without Ray says how to get it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import av
import numpy as np
import pytest

from conftest import ROOT, heavy_imports
from test_cli import BOX, FACE2, SPEECH16K, count_frames
from wav2lip_core import batch_format as J

BOX_LIST = [int(v) for v in BOX]


def batch(*args, timeout: float = 300, env: dict | None = None, cwd=ROOT) -> subprocess.CompletedProcess:
    env = dict(os.environ, **(env or {}),
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    return subprocess.run([sys.executable, "-m", "wav2lip_core", "batch", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def job(checkpoint, out, *, duration: float = 0.4, face=FACE2, **extra) -> dict:
    """A short job with a fixed box (no detection: the batch is what these tests are about)."""
    return {"face": str(face), "audio": str(SPEECH16K), "checkpoint": str(checkpoint), "out": str(out),
            "box": BOX_LIST, "duration": duration, "device": "cpu", **extra}


def write_jobs(path: Path, lines: list) -> Path:
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return path


def read_report(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def by_line(report: list[dict]) -> dict[int, dict]:
    return {e["line"]: e for e in report}


def frames_of(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


# --- the JOBS format (batch_format.py: what the add-on and the engine agree on) -------------------

def test_job_args_and_back():
    j = {"id": "s1", "face": "/a b/face.mp4", "box": [1, 2, 3, 4], "no_smooth": True, "audio-start": -0.5,
         "fps": 29.97, "duration": 2, "crf": "007", "face-at": None, "no-cache": False}
    args = J.job_args(j)
    assert args == ["--face", "/a b/face.mp4", "--box", "1", "2", "3", "4", "--no-smooth",
                    "--audio-start", "-0.5", "--fps", "29.97", "--duration", "2", "--crf", "007"]
    back = J.job_from_args(args)
    assert back == {"face": "/a b/face.mp4", "box": [1, 2, 3, 4], "no-smooth": True, "audio-start": -0.5,
                    "fps": 29.97, "duration": 2, "crf": "007"}
    assert J.job_args(back) == args


def test_inline_source_times_need_a_file_writer(tmp_path):
    j = {"source-times": [0.0, 0.04, 0.5]}
    with pytest.raises(ValueError, match="source-times"):
        J.job_args(j)
    written = {}

    def list_file(opt, values):
        written[opt] = values
        p = tmp_path / "t.json"
        p.write_text(json.dumps(values))
        return str(p)

    assert J.job_args(j, list_file) == ["--source-times", str(tmp_path / "t.json")]
    assert written == {"--source-times": [0.0, 0.04, 0.5]}
    assert J.job_from_args(["--source-times", str(tmp_path / "t.json")], inline_lists=True) == j
    with pytest.raises(ValueError, match="box"):
        J.job_args({"box": [1, {"x": 2}]})


# --- running jobs -------------------------------------------------------------------------------

def test_two_workers_a_bad_job_fails_alone(checkpoint, tmp_path):
    outs = tmp_path / "outs"
    outs.mkdir()
    times = [round(i / 25, 3) for i in range(10)]  # the clip's first 10 frames, by time
    jobs = write_jobs(tmp_path / "shots.jsonl", [
        "# a comment, then a blank line",
        "",
        job(checkpoint, "outs/a.mp4", id="a"),  # relative to the JOBS file's folder
        job(checkpoint, outs / "b.mp4", id="b", duration=0.2),
        job(checkpoint, outs / "c.mp4", id="missing-face", face=tmp_path / "nope.mp4"),
        "{not json",
        {"id": "bad-value", "face": {"x": 1}, "out": str(outs / "d.mp4")},
        job(checkpoint, outs / "a.mp4", id="same-out"),
        job(checkpoint, outs / "e.mp4", id="times", fps=25, **{"source-times": times}),
    ])
    r = batch(jobs, "--workers", "2")
    assert r.returncode == 1, r.stderr
    assert "Traceback" not in r.stderr
    report_path = tmp_path / "shots.report.jsonl"  # the default: beside JOBS
    report = read_report(report_path)
    assert sorted(e["line"] for e in report) == [3, 4, 5, 6, 7, 8, 9]
    e = by_line(report)
    assert [e[n]["status"] for n in (3, 4, 9)] == ["ok", "ok", "ok"]
    assert [e[n]["status"] for n in (5, 6, 7, 8)] == ["failed"] * 4
    assert e[3]["id"] == "a" and e[3]["out"] == str(outs / "a.mp4") and e[3]["frames"] == 10
    assert e[4]["frames"] == 5 and e[9]["frames"] == 10
    assert e[5]["id"] == "missing-face" and e[5]["error"] == f"face video/image file not found: {tmp_path / 'nope.mp4'}. Check the path."
    assert e[6]["id"] == "6" and e[6]["error"].startswith("not a JSON object")
    assert '"face"' in e[7]["error"]
    assert e[8]["error"] == f"--out {outs / 'a.mp4'} is also the output of line 3"
    for entry in report:
        assert set(entry) >= {"id", "line", "status", "seconds", "out"}
        assert isinstance(entry["seconds"], float) and entry["seconds"] >= 0
        assert "\n" not in entry.get("error", "")
        if entry["status"] == "ok":
            assert entry["seconds"] > 0 and entry["out_size"] == os.path.getsize(entry["out"])
    assert count_frames(outs / "a.mp4") == 10 and count_frames(outs / "b.mp4") == 5 and count_frames(outs / "e.mp4") == 10
    assert sorted(p.name for p in outs.iterdir()) == ["a.mp4", "b.mp4", "e.mp4"]  # no partial files
    # The inline source times showed the clip's first 10 frames, as job "a" (start 0, no times) did.
    assert np.array_equal(np.stack(frames_of(outs / "e.mp4")), np.stack(frames_of(outs / "a.mp4")))
    last = r.stderr.strip().splitlines()[-1]
    assert last == f"7 jobs: 3 ok, 0 skipped, 4 failed, 0 cancelled; report: {report_path}"


def test_resume_skips_done_jobs_and_reruns_changed_ones(checkpoint, tmp_path):
    face = tmp_path / "face.mp4"
    shutil.copy(FACE2, face)
    jobs = [job(checkpoint, tmp_path / f"{n}.mp4", id=n, duration=0.2, face=face if n == "c" else FACE2) for n in "abc"]
    path = write_jobs(tmp_path / "jobs.jsonl", jobs)
    report = tmp_path / "r.jsonl"
    r = batch(path, "--report", report)
    assert r.returncode == 0, r.stderr
    first = by_line(read_report(report))
    assert [first[n]["status"] for n in (1, 2, 3)] == ["ok"] * 3
    mtimes = {n: os.stat(tmp_path / f"{n}.mp4").st_mtime_ns for n in "abc"}

    r = batch(path, "--report", report)  # nothing changed: nothing runs
    assert r.returncode == 0, r.stderr
    second = by_line(read_report(report))
    assert [second[n]["status"] for n in (1, 2, 3)] == ["skipped"] * 3
    assert {n: os.stat(tmp_path / f"{n}.mp4").st_mtime_ns for n in "abc"} == mtimes
    assert second[1]["frames"] == 5

    jobs[0]["duration"] = 0.4  # job a: other arguments
    write_jobs(path, jobs)
    os.utime(face, ns=(time.time_ns(), time.time_ns()))  # job c: its input changed
    r = batch(path, "--report", report)
    assert r.returncode == 0, r.stderr
    third = by_line(read_report(report))
    assert [third[n]["status"] for n in (1, 2, 3)] == ["ok", "skipped", "ok"]
    assert third[1]["frames"] == 10 and count_frames(tmp_path / "a.mp4") == 10
    assert os.stat(tmp_path / "b.mp4").st_mtime_ns == mtimes["b"]
    assert os.stat(tmp_path / "c.mp4").st_mtime_ns != mtimes["c"]

    (tmp_path / "b.mp4").write_bytes(b"not the output that run wrote")
    r = batch(path, "--report", report)  # an output replaced since: run again
    assert r.returncode == 0, r.stderr
    assert [by_line(read_report(report))[n]["status"] for n in (1, 2, 3)] == ["skipped", "ok", "skipped"]
    assert count_frames(tmp_path / "b.mp4") == 5


def test_ctrl_c_cancels_the_running_job_without_output(checkpoint, tmp_path):
    outs = tmp_path / "outs"
    outs.mkdir()
    path = write_jobs(tmp_path / "jobs.jsonl", [job(checkpoint, outs / "long.mp4", duration=8.0),
                                                 job(checkpoint, outs / "next.mp4")])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    # Ctrl+C as a terminal sends it: a test run started in the background (as CI may start it)
    # passes SIGINT on ignored, and Python then never turns it into KeyboardInterrupt.
    proc = subprocess.Popen([sys.executable, "-m", "wav2lip_core", "batch", str(path), "--progress", "none"], cwd=ROOT,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 180
        while not any(p.name.startswith(".long.mp4.part") for p in outs.iterdir()):  # the writer has started
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.poll() is not None else "no temp file"
            time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert list(outs.iterdir()) == []  # neither the cancelled output, nor its temp file, nor the next job's
    report = by_line(read_report(tmp_path / "jobs.report.jsonl"))
    assert [report[n]["status"] for n in (1, 2)] == ["cancelled", "cancelled"]
    assert err.strip().splitlines()[-1].startswith("2 jobs: 0 ok, 0 skipped, 0 failed, 2 cancelled")


def _engine_writing(prefix: str) -> int | None:
    """The pid of a `wav2lip_core serve` process holding a file whose path starts with `prefix` open."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if b"wav2lip_core\0serve" not in Path(f"/proc/{pid}/cmdline").read_bytes():
                continue
            for fd in os.listdir(f"/proc/{pid}/fd"):
                if os.readlink(f"/proc/{pid}/fd/{fd}").startswith(prefix):
                    return int(pid)
        except OSError:
            continue
    return None


def test_an_engine_that_dies_fails_its_job_and_the_next_job_runs_on_a_new_one(checkpoint, tmp_path):
    outs = tmp_path / "outs"
    outs.mkdir()
    path = write_jobs(tmp_path / "jobs.jsonl", [job(checkpoint, outs / "dies.mp4", duration=8.0),
                                                 job(checkpoint, outs / "next.mp4", duration=0.2)])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    proc = subprocess.Popen([sys.executable, "-m", "wav2lip_core", "batch", str(path), "--progress", "none"], cwd=ROOT,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 180
        while (pid := _engine_writing(str(outs / ".dies.mp4.part"))) is None:
            assert proc.poll() is None and time.monotonic() < deadline, "the engine was never seen writing"
            time.sleep(0.05)
        os.kill(pid, signal.SIGKILL)
        _, err = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1, err
    report = by_line(read_report(tmp_path / "jobs.report.jsonl"))
    assert report[1]["status"] == "failed" and report[1]["error"] == "the lip-sync engine stopped unexpectedly (killed by SIGKILL)"
    assert report[2]["status"] == "ok" and count_frames(outs / "next.mp4") == 5
    assert not (outs / "dies.mp4").exists()


def test_ray_option_without_ray_says_how_to_get_it(tmp_path):
    path = write_jobs(tmp_path / "jobs.jsonl", [{"face": "f.mp4"}])
    # A None entry in sys.modules makes `import ray` raise ImportError, as when it is not installed.
    code = ("import sys; sys.modules['ray'] = None; from wav2lip_core.jobs.cli import main; "
            f"sys.exit(main(['batch', {str(path)!r}, '--ray']))")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        'error: --ray needs Ray, which is not installed: pip install "wav2lip-blender[ray]"']
    assert not (tmp_path / "jobs.report.jsonl").exists()


def test_bad_batch_arguments(tmp_path):
    r = batch(tmp_path / "missing.jsonl")
    assert r.returncode == 1 and r.stderr.strip() == f"error: cannot read the jobs file {tmp_path / 'missing.jsonl'}: No such file or directory"
    path = write_jobs(tmp_path / "jobs.jsonl", [])
    r = batch(path, "--fetch")
    assert r.returncode == 2 and "--fetch needs --ray" in r.stderr
    r = batch(path, "--workers", "0")
    assert r.returncode == 2 and "--workers" in r.stderr
    r = batch(path)  # no jobs: nothing to do, nothing failed
    assert r.returncode == 0, r.stderr
    assert read_report(tmp_path / "jobs.report.jsonl") == []


def test_the_batch_driver_imports_nothing_heavy():
    # The driver only reads files and talks to engines or Ray: no torch, numpy, OpenCV, PyAV.
    assert heavy_imports("import wav2lip_core.jobs.batch, wav2lip_core.jobs.batch_local, wav2lip_core.jobs.batch_ray, wav2lip_core.jobs.jobfile") == []
