#!/usr/bin/env python3
"""The GPU path at 1080p25, per stage in frames/s; prints figures, asserts nothing.

    python bench/bench_gpu.py [--checkpoint CKPT] [--face CLIP --box T B L R] [--audio WAV]
        [--duration 5] [--height 1080] [--device cuda] [--batch-sizes 16 32 ...]

Builds a 16:9 copy of the clip `--height` lines high (1080p25 from the default 25 fps clip, with
PyAV) in a temporary folder, then runs the pipeline in fresh processes with --box:
  - torch on the GPU at the auto precision (fp16 on CUDA), encoder auto (NVENC where PyAV has
    it and it opens, else x264) and x264 forced;
  - the free-model stand-in (bench_pipeline.FreeExecutor): what the CPU stages allow by themselves;
  - with --batch-sizes, the default encoder at those batch sizes;
  - the original's --box path on the same device (bench/original_box.py --device);
and times the bare fp16 forward at batch 64. Per stage: frames / busy seconds in it,
so a stage slower than the sync pass's frames/s is the one holding it back. `--device cpu` runs
the same on the CPU (a check of the script where no GPU is present).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_pipeline import (DEFAULT_AUDIO, DEFAULT_BOX, DEFAULT_FACE, ROOT, conformance_checkpoint, run_child, run_original,
                            scaled_box, scaled_clip)

STAGES = ("decode", "crop", "model", "blend", "encode")

_BARE = r"""
import json, sys, time
import torch
from wav2lip_core.model.checkpoint import load_checkpoint
from wav2lip_core.model.device import autocast, resolve_precision, Device
a = json.loads(sys.argv[1])
dev = Device(a["device"])
prec = resolve_precision("auto", dev)
model = load_checkpoint(a["checkpoint"], device=dev)
mel = torch.randn(a["batch"], 1, 80, 16, device=dev)
face = torch.rand(a["batch"], 6, 96, 96, device=dev)
sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
with torch.inference_mode(), autocast(dev, prec):
    model(mel, face); sync()
    best = float("inf")
    for _ in range(5):
        t = time.perf_counter(); model(mel, face); sync(); best = min(best, time.perf_counter() - t)
name = torch.cuda.get_device_name(0) if dev.type == "cuda" else "CPU"
print(json.dumps({"fps": a["batch"] / best, "precision": prec, "name": name}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--face", default=str(DEFAULT_FACE))
    ap.add_argument("--box", type=int, nargs=4, metavar=("T", "B", "L", "R"))
    ap.add_argument("--audio", default=str(DEFAULT_AUDIO))
    ap.add_argument("--checkpoint")
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--height", type=int, default=1080)
    ap.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    ap.add_argument("--batch-sizes", type=int, nargs="*", default=[], help="also run the default encoder at these batch sizes")
    a = ap.parse_args()
    if a.box is None:
        if Path(a.face).resolve() != DEFAULT_FACE.resolve():
            ap.error("--box is needed for a clip other than the default")
        a.box = list(DEFAULT_BOX)
    if a.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            sys.exit("no CUDA GPU visible to torch: nothing to measure (use --device cpu to check the script)")

    with tempfile.TemporaryDirectory(prefix="bench-gpu-") as tmp_name:
        tmp = Path(tmp_name)
        if a.checkpoint is None:
            a.checkpoint = conformance_checkpoint(tmp)
        t = time.perf_counter()
        clip, *placement = scaled_clip(a.face, tmp / f"clip{a.height}.mp4", a.height, a.duration)
        box = list(scaled_box(a.box, *placement))
        print(f"{clip.name}: {Path(a.face).name} scaled into {a.height}p in {time.perf_counter() - t:.1f} s; box {box}")

        def request(name: str, **kw) -> dict:
            req = {"face": str(clip), "audio": a.audio, "checkpoint": a.checkpoint, "out": str(tmp / f"{name}.mp4"),
                   "box": box, "duration": a.duration, "cache": False, "device": a.device}
            req.update(kw)
            return req

        original = run_original(a, str(clip), tmp, box=box, device=a.device)
        cache = tmp / "models"
        runs = [("encoder auto", run_child(request("auto"), cache)),
                ("libx264", run_child(request("x264", encoder="libx264"), cache)),
                ("encoder auto", run_child(request("free"), cache, free=True))]
        runs += [("encoder auto", run_child(request(f"batch{b}", batch_size=b), cache)) for b in a.batch_sizes]
        bare = subprocess.run([sys.executable, "-c", _BARE, json.dumps({"device": a.device, "checkpoint": a.checkpoint,
                                                                         "batch": 64 if a.device == "cuda" else 16})],
                              cwd=ROOT, capture_output=True, text=True, env={**__import__("os").environ,
                                                                              "PYTHONPATH": str(ROOT)})
        b = json.loads(bare.stdout.strip().splitlines()[-1]) if bare.returncode == 0 else None

        print(f"\n## {a.height}p, {a.duration:g} s, --box, {a.device}"
              + (f" ({b['name']})" if b else "") + ": frames/s (frames / busy seconds per stage)\n")
        head = ["run", "precision", "batch", "frames", "end to end (s)", "model load (s)", "sync (s)", "sync frames/s", *[f"{s} frames/s" for s in STAGES],
                "peak RSS (MB)"]
        print("| " + " | ".join(head) + " |")
        print("|" + "---|" * len(head))
        labelled = [(f"{'free model' if r['runtime'] == 'free' else r['runtime']}, {name}", r) for name, r in runs]
        for label, r in labelled + [(f"original inference.py --box ({a.device}, fp32)", original)]:
            st, n = r["stages"], r["frames"]
            cells = [label, r["precision"], str(r["batch"]), str(n), f"{r['wall']:.1f}", f"{st.get('load', 0):.1f}",
                     f"{st['sync']:.1f}" if st.get("sync") else "-", f"{n / st['sync']:.1f}" if st.get("sync") else "-"]
            cells += [f"{n / st[s]:.0f}" if st.get(s) else "-" for s in STAGES]
            cells.append(f"{r['rss_mb']:.0f}")
            print("| " + " | ".join(cells) + " |")
            extra = [x for x in r.get("notes", []) if "encod" in x.lower() or "memory" in x.lower()]
            if extra:
                print(f"  notes: {'; '.join(extra)}")
        if b:
            print(f"\nbare forward ({b['precision']}, batch {64 if a.device == 'cuda' else 16}): {b['fps']:.0f} frames/s")
        else:
            print(f"\nbare forward failed: {bare.stderr.strip()[-500:]}")


if __name__ == "__main__":
    main()
