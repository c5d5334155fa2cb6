#!/usr/bin/env python3
"""Batch throughput: N short jobs through `wav2lip batch` locally with 1 and 2 workers and on a
local Ray cluster (the seconds it takes to start, too). Prints jobs/min and frames/s of each
whole command (engine or worker start included: that is what a user waits for); asserts nothing.

    python bench/bench_batch.py --checkpoint CKPT [--jobs 4] [--duration 1] [--ray-cpus 2] [--no-ray]

Jobs use a fixed --box (no detection). Before measuring, one job fills a temporary model cache
(WAV2LIP_MODEL_CACHE), so no run pays the one-time OpenVINO conversion.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
FACE = SHARED / "media" / "vretalk_face2.mp4"
AUDIO = SHARED / "conformance" / "speech_16k.wav"
BOX = [225, 608, 192, 565]


def run_batch(jobs: Path, env: dict, *extra: str) -> tuple[float, int, int]:
    """(seconds, jobs ok, frames) of one `wav2lip batch` command."""
    report = jobs.with_suffix(".report.jsonl")
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "wav2lip_core", "batch", str(jobs), "--no-resume", "--progress", "none",
                        "--report", str(report), *extra], cwd=ROOT, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if r.returncode != 0:
        sys.exit(f"batch failed ({r.returncode}): {r.stderr.strip()[-500:]}")
    entries = [json.loads(line) for line in report.read_text().splitlines()]
    return seconds, sum(e["status"] == "ok" for e in entries), sum(e.get("frames") or 0 for e in entries)


def write_jobs(folder: Path, n: int, args) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    jobs = folder / "jobs.jsonl"
    jobs.write_text("".join(json.dumps({"face": str(FACE), "audio": str(AUDIO), "checkpoint": str(args.checkpoint),
                                        "out": str(folder / f"shot{i}.mp4"), "box": BOX, "duration": args.duration,
                                        "device": "cpu"}) + "\n" for i in range(n)))
    return jobs


def show(label: str, seconds: float, ok: int, frames: int) -> None:
    print(f"{label:<28} {seconds:7.1f} s  {ok / seconds * 60:6.2f} jobs/min  {frames / seconds:6.2f} frames/s  ({ok} jobs, {frames} frames)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", default="/tmp/b/ckpt.pth")
    p.add_argument("--jobs", type=int, default=4)
    p.add_argument("--duration", type=float, default=1.0)
    p.add_argument("--ray-cpus", type=int, default=2, help="CPUs of the local Ray cluster (one per job)")
    p.add_argument("--no-ray", action="store_true")
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="wav2lip-bench-batch-"))
    env = dict(os.environ, WAV2LIP_MODEL_CACHE=str(work / "models"), RAY_USAGE_STATS_ENABLED="0",
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    try:
        print(f"{args.jobs} jobs of {args.duration:g} s ({round(args.duration * 25)} frames), {os.cpu_count()} CPUs")
        run_batch(write_jobs(work / "warmup", 1, args), env)  # fills the model cache
        for workers in (1, 2):
            show(f"local, {workers} worker(s)", *run_batch(write_jobs(work / f"local{workers}", args.jobs, args), env,
                                                         "--workers", str(workers)))
        if args.no_ray:
            return
        try:
            import ray
        except ImportError:
            print("ray: not installed (pip install 'wav2lip-blender[ray]')")
            return
        os.environ.update(WAV2LIP_MODEL_CACHE=env["WAV2LIP_MODEL_CACHE"], RAY_USAGE_STATS_ENABLED="0")
        t0 = time.perf_counter()
        ctx = ray.init(num_cpus=args.ray_cpus, include_dashboard=False, _temp_dir=str(work / "ray"),
                       object_store_memory=200 * 1024 * 1024, log_to_driver=False, logging_level=logging.WARNING)
        print(f"local Ray cluster ({args.ray_cpus} CPUs) started in {time.perf_counter() - t0:.1f} s")
        try:
            address = ctx.address_info["gcs_address"]
            # ray.init turned token authentication on here (RAY_AUTH_MODE=token): the batch's
            # driver, connecting by address, needs it said too.
            env = dict(os.environ, **{k: v for k, v in env.items() if k not in os.environ})
            show("ray, shared outputs", *run_batch(write_jobs(work / "ray", args.jobs, args), env, "--ray", address))
            show("ray, --fetch", *run_batch(write_jobs(work / "fetch", args.jobs, args), env, "--ray", address, "--fetch"))
        finally:
            ray.shutdown()
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
