#!/usr/bin/env python3
"""The lip-sync core against the original, end to end and per stage; prints figures, asserts nothing.

    python bench/bench_pipeline.py [--face CLIP --box T B L R] [--audio WAV] [--checkpoint CKPT]
        [--duration 5] [--heights 720 1080] [--skip original,torch,int8,align,free,bare]
        [--repeats 1] [--model-cache DIR] [--cold-start] [--detection] [--rss-durations 5 60] [--s3fd-cost]

Every run is a fresh process on the same clip, audio and checkpoint, timed from the moment it
is started to its exit, as a user's CLI run is (interpreter start and imports included), all
with the fixed --box and --align off so the work matches the original's (a default install has
no landmarks, and there --align auto does nothing either):
  - the original inference.py's --box path (bench/original_box.py);
  - this project with --runtime torch (fp32), OpenVINO fp32 and OpenVINO int8, each first on an
    empty model cache (the one-off conversion / calibration) and then cached (every later run);
  - with the landmarks extra installed, OpenVINO fp32 with --align auto (its levelling's cost);
  - a "free model" (FreeExecutor, a stand-in that costs nothing, passed as run(..., executor=)): the
    ceiling the other stages set, on the clip and on copies scaled to 720p and 1080p.
With --repeats N the cached runs and the original go round N times, interleaved; each row shows
its median run, its best and its spread, and the speed-up median/median (best/best).
Per stage: busy seconds in each stage (decode, crop, model, blend, encode overlap in the sync
pass, so they add up to more than its wall time, "sync"). Then: the bare forward per runtime on
the clip's own inputs (the floor for the model stage) and, per run, where the time before the
first synced frame went (process start, imports, audio, model load, first batch).

Without --checkpoint it builds the conformance checkpoint (../shared/conformance; not the
released weights: int8's accuracy with those is not measured here). The default (a 5 s clip)
takes about 3-4 minutes on a 2-core CPU. Timings on a shared machine are noisy: compare rows of
one invocation, and re-run before quoting a figure.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
MEDIA = SHARED / "media"
sys.path.insert(0, str(ROOT))

# KatieHill is 512x512, 25 fps, 8 s; the box is OpenCV Haar's on its first frame (S3FD-shaped).
DEFAULT_FACE = MEDIA / "sadtalker_WDA_KatieHill_000.mp4"
DEFAULT_BOX = (121, 444, 100, 413)
DEFAULT_AUDIO = MEDIA / "sadtalker_imagine.wav"
STAGES = ("audio", "load", "detect", "decode", "crop", "model", "blend", "encode", "sync")
SKIPPABLE = ("original", "torch", "int8", "align", "free", "bare")
ORIGINAL = "original inference.py --box (torch fp32, batch 128)"


class FreeExecutor:
    """A model that costs nothing (benchmark only): it hands back the unmasked reference crop it
    was given, so the rest of the pipeline (paste, encode) has real pixels to work on."""

    name = "free"
    precision = "fp32"
    device = "cpu"

    def forward(self, mel, face, limit=None, stop=None):
        return face[:, 3:]


# --- child processes --------------------------------------------------------------------------

def _child(spec_json: str) -> None:
    """One pipeline run in this (fresh) process; prints a JSON line with its figures. Times are
    time.time() stamps so the parent can place them against the moment it started us."""
    started = time.time()
    from wav2lip_core.sync.pipeline import LipSyncRequest, run

    imported = time.time()
    spec = json.loads(spec_json)
    marks: dict[str, float] = {}

    def progress(stage: str, done: int, total: int) -> None:
        key = f"{stage}:{'start' if done == 0 else 'first' if done < total else 'end'}"
        marks.setdefault(key, time.time())

    res = run(LipSyncRequest(**spec["request"]), progress=progress, executor=FreeExecutor() if spec.get("free") else None)
    print(json.dumps({"frames": res.frames, "seconds": res.seconds, "stages": res.stage_seconds,
                      "runtime": res.runtime, "precision": res.precision, "batch": res.batch_size,
                      "notes": res.notes, "rss_mb": _peak_rss_mb(), "torch": "torch" in sys.modules,
                      "started": started, "imported": imported, "marks": marks, "ended": time.time()}))


def _peak_rss_mb() -> float:
    try:  # VmHWM: this process's own peak (ru_maxrss can include a forking parent's size)
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) / 1024
    except (OSError, StopIteration):
        import resource

        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return rss / (1024 * 1024 if sys.platform == "darwin" else 1024)


def _env(model_cache: Path) -> dict:
    env = dict(os.environ, WAV2LIP_MODEL_CACHE=str(model_cache))
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def run_child(request: dict, model_cache: Path, free: bool = False) -> dict:
    """The pipeline in a fresh process: its figures plus `wall` (spawn to exit) and `spawned`."""
    spawned = time.time()
    p = subprocess.run([sys.executable, __file__, "--child", json.dumps({"request": request, "free": free})],
                       cwd=ROOT, env=_env(model_cache), capture_output=True, text=True)
    wall = time.time() - spawned
    if p.returncode != 0:
        sys.exit(f"run failed ({p.returncode}):\n{p.stderr[-3000:]}")
    r = json.loads(p.stdout.strip().splitlines()[-1])
    r.update(wall=wall, spawned=spawned)
    return r


def run_original(a, face: str, tmp: Path, box=None, device: str = "cpu") -> dict:
    """bench/original_box.py on `face` with `box` (default a.box), its model on `device`."""
    t = time.time()
    p = subprocess.run([sys.executable, str(ROOT / "bench" / "original_box.py"), "--face", face, "--audio", a.audio,
                        "--checkpoint", a.checkpoint, "--box", *map(str, box or a.box), "--duration", str(a.duration),
                        "--out", str(tmp / "original.mp4"), "--device", device], capture_output=True, text=True)
    wall = time.time() - t
    if p.returncode != 0:
        sys.exit(f"original failed:\n{p.stderr[-3000:]}")
    r = json.loads(p.stdout.strip().splitlines()[-1])
    r.update(wall=wall, runtime="torch", precision="fp32", batch=128)
    return r


# --- clips ------------------------------------------------------------------------------------

def scaled_clip(src: str | Path, dst: Path, height: int, seconds: float) -> tuple[Path, float, int, int]:
    """The first `seconds` (+ a frame) of `src` as a 16:9 clip `height` lines high (720p, 1080p):
    scaled to that height, aspect kept, centred on black; H.264 CRF 16. Returns (path, scale,
    x offset, y offset) to move a box onto it."""
    import av
    import numpy as np

    width = height * 16 // 9 // 2 * 2
    with av.open(str(src)) as inp:
        vin = inp.streams.video[0]
        w, h = vin.codec_context.width, vin.codec_context.height
        scale = min(height / h, width / w)
        sw, sh = int(round(w * scale / 2)) * 2, int(round(h * scale / 2)) * 2
        x0, y0 = (width - sw) // 2, (height - sh) // 2
        canvas = np.zeros((height, width, 3), np.uint8)
        rate = vin.average_rate or 25
        with av.open(str(dst), "w") as out:
            vs = out.add_stream("libx264", rate=rate)
            vs.width, vs.height, vs.pix_fmt = width, height, "yuv420p"
            vs.options = {"crf": "16", "preset": "ultrafast"}
            limit = int(seconds * float(rate)) + 2
            for i, frame in enumerate(inp.decode(vin)):
                if i >= limit:
                    break
                canvas[y0:y0 + sh, x0:x0 + sw] = frame.reformat(width=sw, height=sh, format="rgb24").to_ndarray()
                for pkt in vs.encode(av.VideoFrame.from_ndarray(canvas, format="rgb24").reformat(format="yuv420p")):
                    out.mux(pkt)
            for pkt in vs.encode(None):
                out.mux(pkt)
    return dst, scale, x0, y0


def conformance_checkpoint(folder: Path) -> str:
    """The project's conformance checkpoint (released layout; not trained weights), written into `folder`."""
    path = str(folder / "conformance.pth")
    subprocess.run([sys.executable, str(SHARED / "conformance" / "make_checkpoint.py"), path, "--prefix", "module."],
                   check=True, capture_output=True)
    return path


def scaled_box(box, scale: float, x0: int, y0: int) -> tuple[int, int, int, int]:
    t, b, left, right = box
    return int(t * scale) + y0, int(b * scale) + y0, int(left * scale) + x0, int(right * scale) + x0


# --- bare forward ------------------------------------------------------------------------------

_BARE = r"""
import json, sys, time
import numpy as np
sys.path.insert(0, sys.argv[2])
from bench.bench_runtime import clip_inputs
from wav2lip_core.model import runtime as R
from wav2lip_core.model.checkpoint import load_checkpoint
a = json.loads(sys.argv[1])
batches = clip_inputs(a["face"], a["audio"], a["box"], 3 * a["batch"])
mel, face = np.concatenate([m for m, _ in batches])[:a["batch"]], np.concatenate([f for _, f in batches])[:a["batch"]]
from wav2lip_core.model.model_cache import ModelCache
cache = ModelCache(a["cache"])
executors = {"torch": R.TorchExecutor(load_checkpoint(a["checkpoint"]), "cpu", "fp32"),
             "openvino fp32": R.OpenVINOExecutor(a["checkpoint"], precision="fp32", cache=cache)}
if a["int8"]:
    q = R.OpenVINOExecutor(a["checkpoint"], precision="int8", cache=cache)
    if not q.needs_calibration:
        executors["openvino int8"] = q
best = {k: float("inf") for k in executors}
for r in executors.values():
    r.forward(mel, face)
for _ in range(a["repeats"]):
    for k, r in executors.items():
        t = time.perf_counter(); r.forward(mel, face); best[k] = min(best[k], time.perf_counter() - t)
print(json.dumps({k: 1000 * v / len(face) for k, v in best.items()}))
"""


def bare_forward(a, model_cache: Path, int8: bool) -> dict[str, float]:
    """ms/frame of each runtime's bare forward at the pipeline's batch on the clip's own inputs,
    best of a few, interleaved."""
    spec = {"face": a.face, "audio": a.audio, "box": list(a.box), "checkpoint": a.checkpoint, "batch": 16,
            "cache": str(model_cache), "int8": int8, "repeats": 3}
    p = subprocess.run([sys.executable, "-c", _BARE, json.dumps(spec), str(ROOT)], cwd=ROOT, env=_env(model_cache),
                       capture_output=True, text=True)
    if p.returncode != 0:
        print(f"bare forward failed: {p.stderr.strip()[-500:]}")
        return {}
    return json.loads(p.stdout.strip().splitlines()[-1])


# --- cold start --------------------------------------------------------------------------------

def cold_start_probes(n: int = 3) -> dict[str, float]:
    """Best-of-n seconds for what each new engine process pays before any work."""
    probes = {
        "python -c pass": [sys.executable, "-c", "pass"],
        "wav2lip --help": [sys.executable, "-m", "wav2lip_core", "--help"],
        "import wav2lip_core.sync.pipeline": [sys.executable, "-c", "import wav2lip_core.sync.pipeline"],
        "import openvino": [sys.executable, "-c", "import openvino"],
        "import torch": [sys.executable, "-c", "import torch"],
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


def cold_breakdown(r: dict) -> str:
    """Seconds from process start to the first synced frames, by what they were spent on."""
    m, s = r.get("marks", {}), r["spawned"]

    def at(key: str, default: float) -> float:
        return m.get(key, default)

    points = [("interpreter", r["started"]), ("imports", r["imported"]), ("audio", at("audio:end", r["imported"])),
              ("model load", at("load:end", r["imported"])), ("detect", at("detect:end", at("load:end", r["imported"]))),
              ("first batch", at("sync:first", at("sync:end", r["ended"])))]
    parts, prev = [], s
    for name, t in points:
        parts.append(f"{name} {max(t - prev, 0):.2f}")
        prev = max(t, prev)
    return f"{prev - s:.2f} s = " + " + ".join(parts)


# --- report ------------------------------------------------------------------------------------

def median_run(runs: list[dict]) -> dict:
    """The run with the median end-to-end time, with every run's time in `walls` (sorted)."""
    ordered = sorted(runs, key=lambda r: r["wall"])
    r = dict(ordered[(len(ordered) - 1) // 2])
    r["walls"] = [x["wall"] for x in ordered]
    return r


def _has_landmarks() -> bool:
    from wav2lip_core.faces import landmarks

    return landmarks.available()


def table(rows: list[tuple[str, dict]], original: dict | None) -> str:
    """One row per run; a run repeated shows its median time, with the best and the spread, and
    its speed-up as median/median (best/best)."""
    stages = [st for st in STAGES if any(st in r.get("stages", {}) for _, r in rows)]
    head = ["run", "frames", "end to end (s)", "vs original", "frames/s", *[f"{st} (s)" for st in stages],
            "peak RSS (MB)", "torch loaded"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, r in rows:
        walls = r.get("walls", [r["wall"]])
        wall = f"{r['wall']:.1f}" + (f" (best {walls[0]:.1f}, {len(walls)} runs: {walls[0]:.1f}-{walls[-1]:.1f})"
                                     if len(walls) > 1 else "")
        speed = "-"
        if original:
            best = original.get("walls", [original["wall"]])[0]
            speed = f"{original['wall'] / r['wall']:.2f}x" + (f" ({best / walls[0]:.2f}x)" if len(walls) > 1 else "")
        cells = [name, str(r["frames"]), wall, speed, f"{r['frames'] / r['wall']:.1f}"]
        cells += [f"{r['stages'][st]:.2f}" if st in r.get("stages", {}) else "-" for st in stages]
        cells += [f"{r['rss_mb']:.0f}", {True: "yes", False: "no"}.get(r.get("torch"), "yes")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--face", default=str(DEFAULT_FACE))
    ap.add_argument("--box", type=int, nargs=4, metavar=("T", "B", "L", "R"), help=f"default for the default clip: {DEFAULT_BOX}")
    ap.add_argument("--audio", default=str(DEFAULT_AUDIO))
    ap.add_argument("--checkpoint")
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--heights", type=int, nargs="*", default=[720, 1080], help="free-model runs on copies scaled to these heights")
    ap.add_argument("--skip", default="", help=f"comma-separated runs to leave out: {', '.join(SKIPPABLE)}")
    ap.add_argument("--repeats", type=int, default=1, help="runs of each cached configuration (rows show the median)")
    ap.add_argument("--model-cache", help="converted-model folder to use (default: a fresh temporary one)")
    ap.add_argument("--cold-start", action="store_true", help="also time interpreter start and imports alone")
    ap.add_argument("--detection", action="store_true", help="second table: OpenVINO fp32 with face detection")
    ap.add_argument("--detector-weights")
    ap.add_argument("--rss-durations", type=float, nargs="*", default=[], help="OpenVINO fp32 runs of these lengths (peak RSS flat?)")
    ap.add_argument("--s3fd-cost", action="store_true", help="S3FD's network at the clip's full resolution (ms/frame)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        _child(a.child)
        return
    if a.box is None:
        if Path(a.face).resolve() != DEFAULT_FACE.resolve():
            ap.error("--box is needed for a clip other than the default")
        a.box = list(DEFAULT_BOX)
    skip = {s.strip() for s in a.skip.split(",") if s.strip()}
    if skip - set(SKIPPABLE):
        ap.error(f"--skip takes {', '.join(SKIPPABLE)}")

    with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as tmp_name:
        tmp = Path(tmp_name)
        if a.checkpoint is None:
            a.checkpoint = conformance_checkpoint(tmp)
        cache = Path(a.model_cache) if a.model_cache else tmp / "models"
        print(f"{Path(a.face).name} + {Path(a.audio).name}, {a.duration:g} s, --box {' '.join(map(str, a.box))}, "
              f"checkpoint {a.checkpoint}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}")

        def request(name: str, **kw) -> dict:
            # --align off: the original's work. Without the landmarks extra (a default install)
            # --align auto does nothing, so this is also the default options' cost there.
            req = {"face": a.face, "audio": a.audio, "checkpoint": a.checkpoint, "out": str(tmp / f"{name}.mp4"),
                   "box": list(a.box), "duration": a.duration, "cache": False, "device": "cpu", "align": "off"}
            req.update(kw)
            return req

        def entries() -> int:
            return len([p for p in cache.iterdir() if p.is_dir() and not p.name.startswith(".")]) if cache.is_dir() else 0

        rows: list[tuple[str, dict]] = []
        # The first run on the checkpoint converts (fp32) or calibrates (int8) once; then the
        # cached runs go round --repeats times, interleaved so background load hits them alike.
        rounds: list[tuple[str, object]] = []
        if "original" not in skip:
            rounds.append((ORIGINAL, lambda: run_original(a, a.face, tmp)))
        if "torch" not in skip:
            rounds.append(("--runtime torch (fp32)", lambda: run_child(request("torch", runtime="torch", precision="fp32"), cache)))
        for precision in ("fp32", "int8"):
            if precision == "int8" and "int8" in skip:
                continue
            req = request(f"ov-{precision}", runtime="openvino", precision=precision)
            before = entries()
            first = run_child(req, cache)
            if entries() > before:
                what = "converts" if precision == "fp32" else "calibrates"
                rows.append((f"openvino {precision}, first run on the checkpoint ({what})", first))
            rounds.append((f"openvino {precision}", lambda req=req: run_child(req, cache)))
        if "align" not in skip and _has_landmarks():
            rounds.append(("openvino fp32, --align auto (landmarks extra)",
                           lambda: run_child(request("ov-align", runtime="openvino", precision="fp32", align="auto"), cache)))
        runs: dict[str, list[dict]] = {name: [] for name, _ in rounds}
        for _ in range(max(1, a.repeats)):
            for name, go in rounds:
                runs[name].append(go())
        for name, _ in rounds:
            rows.append((name, median_run(runs[name])))
        original = dict(rows).get(ORIGINAL)
        if "free" not in skip:
            rows.append((f"free model ({_size(a.face)})", run_child(request("free", runtime="openvino"), cache, free=True)))
            for height in a.heights:
                clip, *placement = scaled_clip(a.face, tmp / f"scaled{height}.mp4", height, a.duration)
                req = request(f"free{height}", face=str(clip), box=list(scaled_box(a.box, *placement)), runtime="openvino")
                rows.append((f"free model ({_size(clip)})", run_child(req, cache, free=True)))

        print("\n## End to end and per stage (busy seconds; decode..encode overlap inside the sync wall time)\n")
        print(table(rows, original))

        if "bare" not in skip:
            bare = bare_forward(a, cache, int8="int8" not in skip)
            if bare:
                print("\n## Model stage vs bare forward (batch 16, the clip's own inputs, best of 3)\n")
                print("| runtime | bare forward (ms/frame) | model stage (ms/frame) | model stage / bare |")
                print("|---|---|---|---|")
                for name, r in rows:
                    key = {"--runtime torch (fp32)": "torch", "openvino fp32": "openvino fp32",
                           "openvino int8": "openvino int8"}.get(name)
                    if key in bare and "model" in r["stages"]:
                        stage = 1000 * r["stages"]["model"] / r["frames"]
                        print(f"| {key} | {bare[key]:.1f} | {stage:.1f} | {stage / bare[key]:.2f}x |")

        print("\n## Cold start: process start to the first synced batch\n")
        for name, r in rows:
            if "marks" in r:
                print(f"- {name}: {cold_breakdown(r)}")
        if a.cold_start:
            print("\nalone (best of 3, s): " + ", ".join(f"{k} {v:.2f}" for k, v in cold_start_probes().items()))

        if a.detection:
            print("\n## With face detection (OpenVINO fp32, cached model, detection cache off)\n")
            det = [("openvino fp32, --box", next((r for n, r in rows if n == "openvino fp32"), None)),
                   ("openvino fp32, --detector auto", run_child(request("detect", box=None, detector="auto",
                                                                         detector_weights=a.detector_weights,
                                                                         runtime="openvino", precision="fp32"), cache))]
            print(table([(n, r) for n, r in det if r is not None], original))

        audio_s = _audio_seconds(a.audio)
        for dur in a.rss_durations:
            if dur > audio_s + 0.5:
                print(f"\nnote: the audio is {audio_s:.1f} s, so a {dur:g} s run holds the source mouth after it "
                      "(--silence hold) and skips the model there: use a longer --audio to measure memory")
            r = run_child(request(f"rss{dur:g}", duration=dur, runtime="openvino", precision="fp32"), cache)
            print(f"\nopenvino fp32, {dur:g} s ({r['frames']} frames): {r['wall']:.1f} s, "
                  f"{r['frames'] / r['wall']:.1f} frames/s, peak RSS {r['rss_mb']:.0f} MB")

        if a.s3fd_cost:
            print(f"\nS3FD network at full resolution: {1000 * s3fd_cost(a.face):.0f} ms/frame "
                  "(the original runs it on every frame)")


def _audio_seconds(path) -> float:
    import av

    with av.open(str(path)) as c:
        return float(c.duration or 0) / 1e6


def _size(path) -> str:
    from wav2lip_core.media.probe import probe_video

    info = probe_video(str(path))
    return f"{info.width}x{info.height}"


def s3fd_cost(face: str, n: int = 3) -> float:
    """Seconds per frame of S3FD's network at the clip's full resolution (random weights: a cost
    figure, not a detector)."""
    import torch
    from face_alignment.detection.sfd.net_s3fd import s3fd

    from wav2lip_core.media.probe import probe_video

    info = probe_video(face)
    net = s3fd().eval()
    x = torch.rand(1, 3, info.height, info.width)
    with torch.inference_mode():
        net(x)
        t = time.perf_counter()
        for _ in range(n):
            net(x)
    return (time.perf_counter() - t) / n


if __name__ == "__main__":
    main()
