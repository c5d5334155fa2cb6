#!/usr/bin/env python3
"""Model runtimes compared: torch fp32, OpenVINO fp32, OpenVINO int8. Prints figures, asserts nothing.

    python bench/bench_runtime.py [--checkpoint CKPT] [--face CLIP --box T B L R] [--audio WAV]
        [--batch 16] [--repeats 5] [--frames 50] [--duration 5] [--no-e2e] [--configs]

1. bare forward, ms/frame at one batch size on the clip's own face crops and mel windows
   (best of --repeats, the configurations interleaved so background load hits them alike);
   --configs adds OpenVINO compile settings side by side: the batch dynamic (what runtime.py
   does) or fixed per size, PERFORMANCE_HINT LATENCY or THROUGHPUT (one request, or two in
   flight on half batches each), NUM_STREAMS; with each one's compile time and its median
   per-round ratio to the runtime's own setting (paired rounds cancel most background load);
2. accuracy vs torch fp32: max abs difference and PSNR on the conformance inputs
   (../shared/conformance/model_io.npz) and, for int8 vs fp32, the PSNR of the mouth (lower
   half of the 96x96 generated face, 0-255) over the first --frames frames of the clip;
3. end to end: the CLI in a subprocess per runtime on a --duration clip (--box, no detection),
   seconds and peak RSS: once on an empty model cache (conversion / calibration included), then
   best of 2 with the cache filled.

Without --checkpoint it builds the conformance checkpoint (../shared/conformance): those are not
the released weights, so int8's accuracy with the released weights is not measured here.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
sys.path.insert(0, str(ROOT))


def psnr(a, b, peak: float) -> float:
    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(peak ** 2 / mse)


def clip_inputs(face: str, audio: str, box, frames: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """The model inputs the pipeline would build for the clip's first `frames` frames, in batches of 16."""
    from wav2lip_core.media.audio import load_audio
    from wav2lip_core.sync.pipeline import LipSyncRequest, detection_settings, find_faces
    from wav2lip_core.sync.plan import make_plan
    from wav2lip_core.sync.stages import calibration_batches
    from wav2lip_core.media.probe import probe_video

    req = LipSyncRequest(face=face, audio=audio, checkpoint="", out="", box=tuple(box), duration=frames / 25 + 1e-3)
    info = probe_video(face)
    plan = make_plan(req, info, load_audio(audio))
    track = find_faces(plan, detection_settings(req, "cpu")[0], cache_dir=None, use_cache=False,
                       progress=lambda *a: None, cancel=lambda: False)
    return calibration_batches(plan, track, 16, lambda: False, count=10 ** 6)


def bare_forward(executors: dict, mel: np.ndarray, face: np.ndarray, repeats: int) -> dict[str, float]:
    best = {name: float("inf") for name in executors}
    for r in executors.values():
        r(mel, face)  # warm-up (and OpenVINO's compile for this batch size)
    for _ in range(repeats):
        for name, r in executors.items():
            t = time.perf_counter()
            r(mel, face)
            best[name] = min(best[name], time.perf_counter() - t)
    return {name: 1000 * s / len(face) for name, s in best.items()}


def compare_configs(model, core, mel: np.ndarray, face: np.ndarray, rounds: int) -> None:
    """OpenVINO CPU compile settings on the same inputs, interleaved round by round."""
    import openvino as ov

    from wav2lip_core.model.runtime import compile_config

    n = len(face)

    def compiled(batch: int | None, config: dict):
        m = model.clone()
        if batch:
            m.reshape({m.inputs[0]: ov.PartialShape([batch, *mel.shape[1:]]),
                       m.inputs[1]: ov.PartialShape([batch, *face.shape[1:]])})
        t = time.perf_counter()
        c = core.compile_model(m, "CPU", config)
        return c, time.perf_counter() - t

    def one_request(c):
        req = c.create_infer_request()
        return lambda: req.infer([mel, face])

    def two_requests(c):
        queue = ov.AsyncInferQueue(c, 2)
        h = n // 2

        def run():
            queue.start_async([mel[:h], face[:h]])
            queue.start_async([mel[h:], face[h:]])
            queue.wait_all()
        return run

    base = compile_config("fp32")
    variants = {
        "dynamic batch, LATENCY (runtime.py)": (None, base, one_request),
        f"fixed batch {n}, LATENCY": (n, base, one_request),
        "dynamic batch, THROUGHPUT, 1 request": (None, {**base, "PERFORMANCE_HINT": "THROUGHPUT"}, one_request),
        "dynamic batch, THROUGHPUT, 2 requests of half the batch": (None, {**base, "PERFORMANCE_HINT": "THROUGHPUT"}, two_requests),
        "dynamic batch, LATENCY, NUM_STREAMS 2, 2 requests": (None, {**base, "NUM_STREAMS": 2}, two_requests),
    }
    calls, compile_s, streams = {}, {}, {}
    for name, (batch, config, make) in variants.items():
        c, compile_s[name] = compiled(batch, config)
        streams[name] = c.get_property("NUM_STREAMS")
        calls[name] = make(c)
        calls[name]()  # warm-up
    _, remainder_s = compiled(n - 3, base)
    times = {name: [] for name in calls}
    for r in range(rounds):
        order = list(calls) if r % 2 == 0 else list(reversed(calls))
        for name in order:
            t = time.perf_counter()
            calls[name]()
            times[name].append(time.perf_counter() - t)
    ref = np.array(times[next(iter(times))])
    print(f"\n## OpenVINO compile settings, batch {n}, {rounds} interleaved rounds")
    print("| setting | streams | compile (s) | best ms/frame | median ms/frame | median ratio to runtime.py's |")
    print("|---|---|---|---|---|---|")
    for name, ts in times.items():
        ts_a = np.array(ts)
        print(f"| {name} | {streams[name]} | {compile_s[name]:.2f} | {1000 * ts_a.min() / n:.1f} | "
              f"{1000 * np.median(ts_a) / n:.1f} | {np.median(ts_a / ref):.3f} |")
    print(f"(a fixed batch compiles again for each new size: batch {n - 3} took {remainder_s:.2f} s)")


# The engine's CLI, then its own peak RSS (VmHWM starts afresh at exec; a child's ru_maxrss
# would include this big benchmark process's size at fork).
_CHILD = ("import sys\nfrom wav2lip_core.jobs.cli import main\nrc = main(sys.argv[1:])\n"
          "hwm = [l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')]\n"
          "print('VmHWM_kB', hwm[0] if hwm else 0, file=sys.stderr)\nsys.exit(rc)")


def run_cli(args: list[str], env: dict) -> tuple[float, float, str]:
    """Seconds, peak RSS (MB) of the engine process, and stderr."""
    t = time.perf_counter()
    p = subprocess.run([sys.executable, "-c", _CHILD, *args], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE, text=True)
    seconds = time.perf_counter() - t
    if p.returncode != 0:
        raise SystemExit(f"engine failed ({p.returncode}): {p.stderr.strip()[-500:]}")
    kb = [line.split()[1] for line in p.stderr.splitlines() if line.startswith("VmHWM_kB")]
    return seconds, int(kb[-1]) / 1024 if kb else float("nan"), p.stderr


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint")
    ap.add_argument("--face", default=str(SHARED / "media" / "vretalk_face2.mp4"))
    ap.add_argument("--box", type=int, nargs=4, default=[225, 608, 192, 565], metavar=("T", "B", "L", "R"))
    ap.add_argument("--audio", default=str(SHARED / "media" / "vretalk_audio1.wav"))
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--frames", type=int, default=50, help="frames of the clip for the int8 mouth PSNR")
    ap.add_argument("--duration", type=float, default=5.0, help="end-to-end clip length (s)")
    ap.add_argument("--no-e2e", action="store_true")
    ap.add_argument("--configs", action="store_true", help="OpenVINO compile settings compared (fixed/dynamic batch, hints, streams)")
    a = ap.parse_args()

    import openvino as ov
    import torch

    from wav2lip_core.model import runtime as R
    from wav2lip_core.model.model_cache import ModelCache
    from wav2lip_core.model.checkpoint import load_checkpoint

    tmp = Path(tempfile.mkdtemp(prefix="bench-runtime-"))
    ckpt = a.checkpoint
    if ckpt is None:
        ckpt = str(tmp / "conformance.pth")
        subprocess.run([sys.executable, str(SHARED / "conformance" / "make_checkpoint.py"), ckpt, "--prefix", "module."],
                       check=True)
    print(f"torch {torch.__version__} ({torch.get_num_threads()} threads), OpenVINO {ov.__version__}, "
          f"{os.cpu_count()} CPUs, checkpoint {ckpt}")

    cache = ModelCache(tmp / "models")
    t = time.perf_counter()
    ov32 = R.OpenVINOExecutor(ckpt, precision="fp32", cache=cache)
    convert_s = time.perf_counter() - t
    t = time.perf_counter()
    R.OpenVINOExecutor(ckpt, precision="fp32", cache=cache)
    cached_s = time.perf_counter() - t
    print(f"OpenVINO fp32 load: {convert_s:.1f} s converting (empty cache), {cached_s:.2f} s from the cache")

    batches = clip_inputs(a.face, a.audio, a.box, max(a.frames, a.batch))
    int8 = None
    try:
        t = time.perf_counter()
        int8 = R.OpenVINOExecutor(ckpt, precision="int8", cache=cache, calibration=batches[:R.CALIBRATION_BATCHES])
        print(f"OpenVINO int8 calibration ({min(len(batches), R.CALIBRATION_BATCHES)} batches of the clip): "
              f"{time.perf_counter() - t:.1f} s")
    except Exception as e:  # nncf missing: the rest still runs
        print(f"int8 skipped: {e}")

    torch_executor = R.TorchExecutor(load_checkpoint(ckpt), "cpu", "fp32")
    executors = {"torch fp32": torch_executor.forward, "OpenVINO fp32": ov32.forward}
    if int8 is not None:
        executors["OpenVINO int8"] = int8.forward

    mel = np.concatenate([m for m, _ in batches])[:a.batch]
    face = np.concatenate([f for _, f in batches])[:a.batch]
    ms = bare_forward(executors, mel, face, a.repeats)
    if a.configs:
        compare_configs(cache.load(ov32.core, cache.key(ckpt, "fp32")), ov32.core, mel, face, a.repeats)

    io = np.load(SHARED / "conformance" / "model_io.npz")
    ref = torch_executor.forward(io["mel"], io["face"])
    print(f"\n## bare forward, batch {len(face)}, best of {a.repeats} (conformance inputs for the diff columns)")
    print("| runtime | ms/frame | vs torch fp32 | max abs diff vs torch fp32 | PSNR vs torch fp32 |")
    print("|---|---|---|---|---|")
    for name, r in executors.items():
        out = np.asarray(r(io["mel"], io["face"]), np.float32)
        d = "-" if name == "torch fp32" else f"{np.abs(out - ref).max():.1e}"
        p = "-" if name == "torch fp32" else f"{psnr(out, ref, 1.0):.1f} dB"
        print(f"| {name} | {ms[name]:.1f} | {ms['torch fp32'] / ms[name]:.2f}x | {d} | {p} |")

    if int8 is not None:
        mel_all = np.concatenate([m for m, _ in batches])[:a.frames]
        face_all = np.concatenate([f for _, f in batches])[:a.frames]
        f32 = np.concatenate([ov32.forward(mel_all[i:i + 16], face_all[i:i + 16]) for i in range(0, len(face_all), 16)])
        i8 = np.concatenate([int8.forward(mel_all[i:i + 16], face_all[i:i + 16]) for i in range(0, len(face_all), 16)])
        # The pasted pixels: prediction * 255 truncated to uint8, as the pipeline does; the mouth
        # is the lower half of the generated face (the half the model fills in).
        u32 = (f32 * 255).astype(np.uint8)[:, :, 48:].astype(np.float64)
        u8 = (i8 * 255).astype(np.uint8)[:, :, 48:].astype(np.float64)
        per_frame = [psnr(u8[k], u32[k], 255) for k in range(len(u8))]
        print(f"\nint8 vs fp32, mouth region (lower half of the 96x96 face, 0-255) on {len(u8)} frames of "
              f"{Path(a.face).name}: PSNR {psnr(u8, u32, 255):.1f} dB overall, worst frame {min(per_frame):.1f} dB, "
              f"max abs {np.abs(u8 - u32).max():.0f} levels")

    if a.no_e2e:
        return
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    common = ["--face", a.face, "--audio", a.audio, "--checkpoint", ckpt, "--box", *map(str, a.box),
              "--duration", str(a.duration), "--device", "cpu", "--progress", "none", "--no-cache"]
    configs = [("torch fp32", ["--runtime", "torch", "--precision", "fp32"]),
               ("OpenVINO fp32", ["--runtime", "openvino", "--precision", "fp32"])]
    if int8 is not None:
        configs.append(("OpenVINO int8", ["--runtime", "openvino", "--precision", "int8"]))
    print(f"\n## end to end, {a.duration:g} s of {Path(a.face).name} (--box), CLI in a subprocess")
    print("| runtime | first run, empty model cache (s) | cached, best of 2 (s) | peak RSS (MB) |")
    print("|---|---|---|---|")
    for name, extra in configs:
        env["WAV2LIP_MODEL_CACHE"] = str(tmp / ("e2e-" + name.replace(" ", "-")))
        first, rss, _ = run_cli([*common, *extra, "--out", str(tmp / "first.mp4")], env)
        runs = [run_cli([*common, *extra, "--out", str(tmp / f"r{i}.mp4")], env) for i in range(2)]
        best = min(r[0] for r in runs)
        print(f"| {name} | {first:.1f} | {best:.1f} | {max([rss] + [r[1] for r in runs]):.0f} |")


if __name__ == "__main__":
    main()
