#!/usr/bin/env python3
"""Warm engine latency: seconds from writing a job request to `wav2lip serve` until its first
progress event, the model loaded (load stage done), the first synced frames and done; for the
first job of a fresh engine (cold) and for later jobs with the same checkpoint (warm). Prints
figures, asserts nothing.

    python bench/bench_serve.py [--checkpoint CKPT] [--runtime auto] [--duration 2] [--warm-jobs 3]

Before measuring, one engine run fills a temporary model cache (WAV2LIP_MODEL_CACHE), so "cold"
is a new process on a machine where install.py already converted the checkpoint: the import,
the checkpoint read/compile and the job itself, not the one-time OpenVINO conversion.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MEDIA = ROOT.parent / "shared" / "media"
sys.path.insert(0, str(ROOT))

from wav2lip_core import protocol as P  # noqa: E402


class Engine:
    def __init__(self, env: dict):
        self.t_start = time.perf_counter()
        self.proc = subprocess.Popen([sys.executable, "-m", "wav2lip_core", P.SERVE_COMMAND], cwd=ROOT, env=env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
        hello = P.parse_event(self.proc.stdout.readline())
        assert isinstance(hello, P.Hello), hello
        self.hello_s = time.perf_counter() - self.t_start

    def job(self, job_id: str, args: list[str]) -> dict:
        """Times (s, from the request) of the first progress, load done, first sync frames, done."""
        t0 = time.perf_counter()
        self.proc.stdin.write(P.JobRequest(id=job_id, args=args).to_json() + "\n")
        self.proc.stdin.flush()
        times: dict = {}
        for line in self.proc.stdout:
            e = P.parse_event(line)
            now = time.perf_counter() - t0
            if isinstance(e, P.Progress):
                times.setdefault("first progress", now)
                if e.stage == P.STAGE_LOAD and e.done == e.total:
                    times.setdefault("model ready", now)
                if e.stage == P.STAGE_SYNC and e.done > 0:
                    times.setdefault("first frames", now)
            elif isinstance(e, P.Done):
                times["done"] = now
                times["warm"] = e.warm
                return times
            elif isinstance(e, (P.Error, P.Cancelled)):
                raise SystemExit(f"job {job_id}: {e}")
        raise SystemExit("the engine stopped")

    def quit(self) -> None:
        self.proc.stdin.write(P.QuitRequest().to_json() + "\n")
        self.proc.stdin.flush()
        self.proc.wait(timeout=60)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default="/tmp/b/ckpt.pth")
    ap.add_argument("--face", default=str(MEDIA / "sadtalker_WDA_KatieHill_000.mp4"))
    ap.add_argument("--box", nargs=4, default=["60", "330", "150", "370"])
    ap.add_argument("--audio", default=str(MEDIA / "sadtalker_RD_Radio31_000.wav"))
    ap.add_argument("--duration", default="2")
    ap.add_argument("--runtime", default="auto", choices=P.names(P.RUNTIMES))
    ap.add_argument("--warm-jobs", type=int, default=3)
    o = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        env = dict(os.environ, WAV2LIP_MODEL_CACHE=str(Path(tmp) / "models"),
                   PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))

        def args(name: str) -> list[str]:
            return [P.OPT_FACE, o.face, P.OPT_AUDIO, o.audio, P.OPT_CHECKPOINT, o.checkpoint,
                    P.OPT_OUT, str(Path(tmp) / f"{name}.mp4"), P.OPT_BOX, *o.box, P.OPT_DURATION, o.duration,
                    P.OPT_RUNTIME, o.runtime, "--no-cache"]

        t = time.perf_counter()
        e = Engine(env)
        e.job("convert", args("convert"))  # fills the model cache (an install does this once)
        e.quit()
        print(f"model cache filled in {time.perf_counter() - t:.1f} s (not counted below)")

        e = Engine(env)
        rows = [("cold", e.job("cold", args("cold")))]
        rows += [(f"warm {i + 1}", e.job(f"warm{i}", args(f"warm{i}"))) for i in range(o.warm_jobs)]
        e.quit()
    print(f"engine start to hello: {e.hello_s:.3f} s; {o.duration} s clip, --box, runtime {o.runtime}")
    cols = ("first progress", "model ready", "first frames", "done")
    print(f"{'job':8} {'warm':5} " + " ".join(f"{c:>15}" for c in cols) + "   (s from the request)")
    for name, t in rows:
        print(f"{name:8} {str(t['warm']):5} " + " ".join(f"{t.get(c, float('nan')):15.3f}" for c in cols))


if __name__ == "__main__":
    main()
