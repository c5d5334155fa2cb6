#!/usr/bin/env python3
"""Benchmark the lip-sync core on a clip and an audio file; prints figures, asserts nothing.

    python bench/bench_pipeline.py --face CLIP --audio AUDIO --checkpoint CKPT [--detector-weights W]
        [--durations 5 60] [--baseline] [--s3fd-cost] [--cold-start]

For each duration it runs the whole pipeline in a fresh process (so peak RSS is that run's
own) and prints frames, seconds and frames/s per stage, end-to-end seconds and peak RSS. It
then times the bare model forward for the same number of frames (the floor for the model
stage). --baseline runs bench/original_box.py, the original inference.py's --box path, on the
same inputs. --s3fd-cost times face-alignment's S3FD network at the clip's full resolution
(architecture only, random weights: a cost figure, not a detector) to compare detection cost.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _one_run(args_json: str) -> None:
    """Child process: run the pipeline once and print a JSON line with the figures."""
    import resource

    from wav2lip_core.pipeline import LipSyncRequest, run

    a = json.loads(args_json)
    req = LipSyncRequest(**a)
    res = run(req)
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"frames": res.frames, "seconds": res.seconds, "stages": res.stage_seconds,
                      "detected_frames": res.detected_frames, "rss_mb": rss_mb, "batch": res.batch_size,
                      "device": res.device, "precision": res.precision}))


def bare_forward(checkpoint: str, frames: int, batch: int, device: str = "auto") -> float:
    import torch

    from wav2lip_core.device import autocast, pick_device, resolve_precision
    from wav2lip_core.model import load_checkpoint

    dev = pick_device(device)
    prec = resolve_precision("auto", dev)
    model = load_checkpoint(checkpoint, device=dev)
    mel = torch.randn(batch, 1, 80, 16, device=dev)
    face = torch.rand(batch, 6, 96, 96, device=dev)
    with torch.inference_mode(), autocast(dev, prec):
        model(mel, face)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in range(math.ceil(frames / batch)):
            model(mel, face)
        if dev.type == "cuda":
            torch.cuda.synchronize()
    return time.perf_counter() - t


def s3fd_cost(face: str, n: int = 3) -> float:
    """Seconds per frame of S3FD's network at the clip's full resolution."""
    import torch
    from face_alignment.detection.sfd.net_s3fd import s3fd

    from wav2lip_core.probe import probe_video

    info = probe_video(face)
    net = s3fd().eval()
    x = torch.rand(1, 3, info.height, info.width)
    with torch.inference_mode():
        net(x)
        t = time.perf_counter()
        for _ in range(n):
            net(x)
    return (time.perf_counter() - t) / n


def cold_start(n: int = 3) -> dict[str, float]:
    """Best-of-n seconds for what each new engine process pays before its first frame."""
    probes = {
        "wav2lip --help": [sys.executable, "-m", "wav2lip_core", "--help"],
        "add-on's engine probe (find_spec)": [sys.executable, "-c",
                                              "import importlib.util,sys; sys.exit(0 if importlib.util.find_spec('wav2lip_core') else 3)"],
        "import torch": [sys.executable, "-c", "import torch"],
        "import the pipeline": [sys.executable, "-c", "import wav2lip_core.pipeline"],
    }
    out = {}
    for name, cmd in probes.items():
        best = float("inf")
        for _ in range(n):
            t = time.perf_counter()
            subprocess.run(cmd, cwd=ROOT, capture_output=True, check=True)
            best = min(best, time.perf_counter() - t)
        out[name] = best
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--face", required=True)
    ap.add_argument("--audio", required=True)
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--detector", default="blazeface")
    ap.add_argument("--detector-weights")
    ap.add_argument("--box", type=int, nargs=4)
    ap.add_argument("--durations", type=float, nargs="+", default=[5.0])
    ap.add_argument("--batch-size", type=int)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--baseline", action="store_true", help="also run the original's --box path")
    ap.add_argument("--s3fd-cost", action="store_true")
    ap.add_argument("--cold-start", action="store_true", help="also time process start-up costs")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        _one_run(a.child)
        return

    with tempfile.TemporaryDirectory() as tmp:
        for dur in a.durations:
            req = {"face": a.face, "audio": a.audio, "checkpoint": a.checkpoint, "out": f"{tmp}/out_{dur}.mp4",
                   "detector": a.detector, "detector_weights": a.detector_weights,
                   "box": a.box, "duration": dur, "cache": False, "batch_size": a.batch_size, "device": a.device}
            out = subprocess.run([sys.executable, __file__, "--face", a.face, "--audio", a.audio, "--checkpoint",
                                  a.checkpoint, "--child", json.dumps(req)], capture_output=True, text=True)
            if out.returncode != 0:
                sys.exit(f"run failed:\n{out.stderr}")
            r = json.loads(out.stdout.strip().splitlines()[-1])
            n = r["frames"]
            print(f"\n== {Path(a.face).name} + {Path(a.audio).name}, {dur:g} s output: {n} frames, "
                  f"{r['device']}/{r['precision']}, batch {r['batch']}")
            print(f"{'stage':<8} {'seconds':>8} {'frames/s':>9} {'ms/frame':>9}")
            for stage, sec in r["stages"].items():
                print(f"{stage:<8} {sec:8.2f} {n / sec if sec else float('inf'):9.1f} {1000 * sec / n:9.1f}")
            print(f"end to end {r['seconds']:.2f} s ({n / r['seconds']:.2f} frames/s); peak RSS {r['rss_mb']:.0f} MB; "
                  f"detector ran on {r['detected_frames']} frames")
            floor = bare_forward(a.checkpoint, n, r["batch"], a.device)
            model_s = r["stages"].get("model", 0.0)
            print(f"bare forward for {n} frames: {floor:.2f} s ({1000 * floor / n:.1f} ms/frame); "
                  f"model stage / bare = {model_s / floor:.2f}x")
            if r["detected_frames"]:
                from wav2lip_core.probe import probe_video

                src = min(n, probe_video(a.face).frame_count)
                print(f"detect stage: {1000 * r['stages']['detect'] / src:.1f} ms per source frame over {src} frames "
                      f"(decode + keyframe detection on {r['detected_frames']} of them)")
        if a.cold_start:
            print("\ncold start (best of 3, seconds):")
            for name, sec in cold_start().items():
                print(f"  {name:<36} {sec:6.2f}")
            from wav2lip_core.probe import probe_video

            t = time.perf_counter()
            info = probe_video(a.face)
            print(f"  {'probe_video(face)':<36} {time.perf_counter() - t:6.2f}  ({info.frame_count} frames; "
                  "containers without an index, e.g. MPEG-TS, are decoded once here)")
        if a.s3fd_cost:
            c = s3fd_cost(a.face)
            print(f"\nS3FD network at full resolution: {1000 * c:.0f} ms/frame (the original runs it on every frame)")
        if a.baseline:
            dur = a.durations[0]
            box = a.box or [0, 0, 0, 0]
            t = time.perf_counter()
            out = subprocess.run([sys.executable, str(ROOT / "bench" / "original_box.py"), "--face", a.face, "--audio",
                                  a.audio, "--checkpoint", a.checkpoint, "--box", *map(str, box), "--duration", str(dur),
                                  "--out", f"{tmp}/orig.mp4"], capture_output=True, text=True)
            if out.returncode != 0:
                sys.exit(f"baseline failed:\n{out.stderr}")
            print(f"\noriginal inference.py --box path ({dur:g} s): {time.perf_counter() - t:.2f} s; {out.stdout.strip()}")


if __name__ == "__main__":
    main()
