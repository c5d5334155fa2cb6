"""The converted-model cache shared by processes: a cancel during the first conversion stops it
and leaves nothing, two engines on a cold cache convert once, and pruning never removes an entry
another process has just written or is writing. Real processes throughout."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import CONFORMANCE, ROOT
from test_serve import Engine, job_args, leftovers
from wav2lip_core.model import model_cache as M
from wav2lip_core import protocol as P

pytest.importorskip("openvino")

ENV = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))


def children(pid: int) -> list[tuple[int, str]]:
    """(pid, command line) of the processes whose parent is `pid` (Linux /proc)."""
    found = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
            ppid = int(stat[stat.rindex(")") + 2:].split()[1])
            if ppid == pid:
                found.append((int(d.name), (d / "cmdline").read_bytes().replace(b"\0", b" ").decode()))
        except (OSError, ValueError):
            continue
    return found


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def cache_contents(folder: Path) -> tuple[list[str], list[str]]:
    """(entry folders, anything else but the lock folder and the checkpoint-hash index)."""
    names = sorted(p.name for p in folder.iterdir()) if folder.exists() else []
    entries = [n for n in names if not n.startswith(".") and (folder / n).is_dir()]
    other = [n for n in names if n not in entries and n not in (M.LOCKS, M.ModelCache.INDEX)]
    return entries, other


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds the converting child in Linux's /proc")
def test_a_cancel_during_the_first_conversion_stops_it_and_leaves_no_entry(checkpoint, tmp_path, monkeypatch):
    cache = tmp_path / "models"
    monkeypatch.setenv(M.ENV_MODEL_CACHE, str(cache))  # cold: the engine converts on its first job
    outs = tmp_path / "out"
    outs.mkdir()
    engine = Engine()
    try:
        assert engine.next()["event"] == P.EVENT_HELLO
        args = lambda name: [a if a != "torch" else "openvino" for a in job_args(checkpoint, outs / name)]  # noqa: E731
        engine.job("a", args("a.mp4"))
        deadline = time.monotonic() + 60
        converting = []
        while not converting:  # the conversion is under way in the engine's child
            assert time.monotonic() < deadline, "no conversion started"
            converting = [pid for pid, cmd in children(engine.proc.pid) if "_build_child" in cmd]
            time.sleep(0.1)
        time.sleep(1.0)  # well inside the conversion (15-25 s on this machine)
        t0 = time.monotonic()
        engine.send({"op": P.OP_CANCEL, "id": "a"})
        event = engine.until("a", P.EVENT_CANCELLED, P.EVENT_DONE, P.EVENT_ERROR)
        waited = time.monotonic() - t0
        assert event == {"event": P.EVENT_CANCELLED, "job": "a"}
        assert waited < 3.0, f"the cancel took {waited:.1f} s: the conversion ran on"
        assert not any(alive(pid) for pid in converting)
        assert cache_contents(cache) == ([], []), "a cancelled conversion left an entry or a temp folder"
        assert leftovers(outs) == []

        engine.job("b", args("b.mp4"))  # the next job converts properly
        done = engine.until("b", P.EVENT_DONE, P.EVENT_ERROR, P.EVENT_CANCELLED)
        assert done["event"] == P.EVENT_DONE, done
        entries, other = cache_contents(cache)
        assert len(entries) == 1 and other == []
        assert M.ModelCache(cache).intact(entries[0])
        assert leftovers(outs) == ["b.mp4"]
        engine.send({"op": P.OP_QUIT})
        assert engine.finish()[0] == 0
    finally:
        if engine.proc.poll() is None:
            engine.proc.kill()
            engine.proc.wait(10)


_LOAD = """
import json, os, sys
import numpy as np
from wav2lip_core.model.model_cache import ModelCache
from wav2lip_core.model.runtime import OpenVINOExecutor
checkpoint, folder, io_path = sys.argv[1:4]
executor = OpenVINOExecutor(checkpoint, precision="fp32", cache=ModelCache(folder))
io = np.load(io_path)
cache = ModelCache(folder)
entry = cache.path(cache.key(checkpoint, "fp32"))
print(json.dumps({"converted": executor.converted, "inode": os.stat(entry / "model.bin").st_ino,
                  "diff": float(np.abs(executor.forward(io["mel"], io["face"]) - io["expected"]).max()),
                  "torch": "torch" in sys.modules}))
"""


def test_two_engines_on_a_cold_cache_convert_once_and_keep_one_entry(checkpoint, tmp_path):
    folder = tmp_path / "models"
    procs = [subprocess.Popen([sys.executable, "-c", _LOAD, str(checkpoint), str(folder),
                               str(CONFORMANCE / "model_io.npz")], cwd=ROOT, env=ENV, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    answers = []
    for proc in procs:
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-3000:]
        answers.append(json.loads(out.strip().splitlines()[-1]))
    for a in answers:
        assert a["diff"] < 1e-4 and not a["torch"], a  # both run the right model, torch-free
    assert sorted(a["converted"] for a in answers) == [False, True], answers  # one converted, one waited
    entries, other = cache_contents(folder)
    assert len(entries) == 1 and other == [], (entries, other)
    final = os.stat(folder / entries[0] / "model.bin").st_ino
    assert [a["inode"] for a in answers] == [final, final], "an entry was replaced under a process using it"


_SAVE = """
import sys, time
import numpy as np
import openvino as ov
import openvino.opset13 as ops
from wav2lip_core.model.model_cache import ModelCache
folder, key, mode = sys.argv[1:4]
cache = ModelCache(folder)
if mode == "save":
    x = ops.parameter([1, 3], np.float32, name="x")
    cache.save(ov.Model([ops.relu(x)], [x], "tiny"), key)
else:  # hold the entry's lock, as a process writing it does
    with cache.writing(key):
        print("locked", flush=True)
        sys.stdin.readline()
"""


def _tiny(folder: Path, key: str) -> None:
    subprocess.run([sys.executable, "-c", _SAVE, str(folder), key, "save"], cwd=ROOT, env=ENV, check=True)


def test_pruning_spares_an_entry_just_written_or_being_written_by_another_process(tmp_path):
    folder = tmp_path / "models"
    _tiny(folder, "written-by-a")  # another process's entry, seconds old
    old = time.time() - 2 * M.PRUNE_GRACE_S
    _tiny(folder, "being-written")
    os.utime(folder / "being-written", (old, old))  # old, but another process holds its lock
    holder = subprocess.Popen([sys.executable, "-c", _SAVE, str(folder), "being-written", "hold"], cwd=ROOT, env=ENV,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        for i in range(M.MAX_ENTRIES + 1):  # this process fills the cache past its size
            _tiny(folder, f"mine-{i}")
        entries, _ = cache_contents(folder)
        assert "written-by-a" in entries and "being-written" in entries, entries
    finally:
        holder.communicate("\n", timeout=30)
    # Old and unlocked: the next save prunes it (the cache still has a size).
    os.utime(folder / "being-written", (old - 60, old - 60))  # the oldest of all
    for i in range(M.MAX_ENTRIES):
        os.utime(folder / f"mine-{i}", (old, old))
    _tiny(folder, "newest")
    entries, other = cache_contents(folder)
    assert "being-written" not in entries and "newest" in entries and other == [], entries
