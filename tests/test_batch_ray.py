"""`wav2lip batch JOBS --ray ADDRESS` on a real local Ray cluster that this module starts (one
for the session, 2 CPUs, its files in a temp folder), compared with the same jobs run locally.

A worker process killed in the middle of a job is re-run by Ray to the same output; a job's own
error is reported with its line and never re-run.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT
from test_batch import batch, by_line, frames_of, job, read_report, write_jobs

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'wav2lip-blender[ray]')")

TIMES = [round(i / 25, 3) for i in range(0, 20, 2)]  # every other frame of the clip


class LocalRun:
    """The jobs the Ray tests run, run by a local batch started at once (it overlaps the cluster's
    start); `outputs()` waits for it and gives each job's decoded frames: the reference."""

    def __init__(self, checkpoint, folder: Path):
        self.folder = folder
        self.jobs = {"a": job(checkpoint, "a.mp4", id="a"),
                     "times": job(checkpoint, "times.mp4", id="times", fps=25, **{"source-times": TIMES}),
                     "long": job(checkpoint, "long.mp4", id="long", duration=0.8)}
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
        self.proc = subprocess.Popen([sys.executable, "-m", "wav2lip_core", "batch", "--progress", "none",
                                      str(write_jobs(folder / "jobs.jsonl", list(self.jobs.values())))],
                                     cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
        self._frames = None

    def outputs(self) -> dict:
        if self._frames is None:
            _, err = self.proc.communicate(timeout=300)
            assert self.proc.returncode == 0, err
            self._frames = {name: frames_of(self.folder / f"{name}.mp4") for name in self.jobs}
        return self._frames


@pytest.fixture(scope="session")
def local(checkpoint, tmp_path_factory):
    run = LocalRun(checkpoint, tmp_path_factory.mktemp("local"))
    yield run
    if run.proc.poll() is None:
        run.proc.kill()
        run.proc.wait()


@pytest.fixture(scope="session")
def cluster(local):
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    # Ray's socket paths must stay short (pytest's tmp_path is too deep) and its files bounded.
    temp = tempfile.mkdtemp(prefix="wav2lip-ray-")
    ctx = ray.init(num_cpus=2, include_dashboard=False, _temp_dir=temp, object_store_memory=100 * 1024 * 1024,
                   log_to_driver=False, logging_level=logging.WARNING)
    # ray.init turned token authentication on in os.environ (RAY_AUTH_MODE=token): the batch
    # subprocesses inherit it, as a user connecting by address must set it.
    try:
        yield ctx.address_info["gcs_address"]
    finally:
        ray.shutdown()
        shutil.rmtree(temp, ignore_errors=True)


def test_fetch_returns_outputs_equal_to_local_ones(cluster, local, tmp_path):
    jobs = local.jobs
    local.outputs()  # first: its engine fills the session's model cache that the workers use too
    path = write_jobs(tmp_path / "jobs.jsonl", [jobs["a"], jobs["times"]])
    r = batch(path, "--ray", cluster, "--fetch")
    assert r.returncode == 0, r.stderr
    report = by_line(read_report(tmp_path / "jobs.report.jsonl"))
    assert [report[n]["status"] for n in (1, 2)] == ["ok", "ok"]
    assert report[1]["frames"] == 10 and report[2]["frames"] == len(TIMES)
    for name in ("a", "times"):
        got, want = frames_of(tmp_path / f"{name}.mp4"), local.outputs()[name]
        assert len(got) == len(want) and all(np.array_equal(x, y) for x, y in zip(got, want)), name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.mp4", "jobs.jsonl", "jobs.report.jsonl", "times.mp4"]
    r = batch(path, "--ray", cluster, "--fetch")  # resume works the same with Ray
    assert r.returncode == 0, r.stderr
    assert [e["status"] for e in read_report(tmp_path / "jobs.report.jsonl")] == ["skipped", "skipped"]


def _holder(path_prefix: str) -> int | None:
    """The pid of a Ray task process ("ray::wav2lip_job") holding a file whose path starts with
    `path_prefix` open."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if not Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"ray::wav2lip_job"):
                continue
            for fd in os.listdir(f"/proc/{pid}/fd"):
                if os.readlink(f"/proc/{pid}/fd/{fd}").startswith(path_prefix):
                    return int(pid)
        except OSError:
            continue
    return None


def test_a_killed_worker_is_retried_and_a_jobs_own_error_is_not(cluster, local, tmp_path):
    jobs = local.jobs
    local.outputs()
    outs = tmp_path / "outs"
    outs.mkdir()
    fifo = tmp_path / "times.fifo"  # counts the job's attempts: each one opens it to read
    os.mkfifo(fifo)
    bad = dict(jobs["a"], id="bad", out=str(outs / "bad.mp4"), fps=25, **{"source-times": str(fifo)})
    path = write_jobs(tmp_path / "jobs.jsonl", [dict(jobs["long"], out=str(outs / "long.mp4")), bad])
    done = threading.Event()
    attempts, killed = [], []

    def feed():  # each reader of the fifo gets text that is not JSON: the job's own error
        while not done.is_set():
            try:
                fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
            except OSError as exc:
                assert exc.errno == errno.ENXIO  # no reader yet
                time.sleep(0.05)
                continue
            os.write(fd, b"not json")
            os.close(fd)
            attempts.append(time.monotonic())
            time.sleep(0.5)  # the reader is done with it by then

    def kill():  # the worker writing long.mp4, while it writes it
        while not done.is_set():
            pid = _holder(str(outs / ".long.mp4.part"))
            if pid is not None:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
                return
            time.sleep(0.05)

    threads = [threading.Thread(target=f, daemon=True) for f in (feed, kill)]
    for t in threads:
        t.start()
    try:
        r = batch(path, "--ray", cluster, "--retries", "2")
        time.sleep(2.0)  # a retry of the bad job would open the fifo again by now
    finally:
        done.set()
    for t in threads:
        t.join(5)
    assert r.returncode == 1, r.stderr
    assert len(killed) == 1, "the worker was never seen writing long.mp4"
    report = by_line(read_report(tmp_path / "jobs.report.jsonl"))
    assert report[1]["status"] == "ok" and report[1]["frames"] == 20
    got, want = frames_of(outs / "long.mp4"), local.outputs()["long"]
    assert len(got) == len(want) and all(np.array_equal(x, y) for x, y in zip(got, want))
    assert report[2]["status"] == "failed"
    assert report[2]["error"] == f"--source-times {fifo} is not JSON: give a list of seconds"
    assert len(attempts) == 1
    # The killed attempt could not remove its temp file (SIGKILL); nothing else is left.
    assert {p.name for p in outs.iterdir() if not p.name.startswith(".long.mp4.part")} == {"long.mp4"}


def test_unreachable_cluster_fails_every_job_with_one_line(tmp_path):
    path = write_jobs(tmp_path / "jobs.jsonl", [{"face": "f.mp4", "out": "o.mp4"}])
    r = batch(path, "--ray", "127.0.0.1:1", timeout=120)
    assert r.returncode == 1
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("error: cannot reach the Ray cluster at 127.0.0.1:1: "), r.stderr
    assert read_report(tmp_path / "jobs.report.jsonl")[0]["status"] == "failed"
