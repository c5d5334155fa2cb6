#!/usr/bin/env python3
"""A 2 s job from minute 25 of a 30-minute 48 kHz recording against the same job from a 5 s
file: wall seconds and peak RSS of the one-shot CLI (`python -m wav2lip_core`, --box: no
detection), each in a fresh process. Prints figures, asserts nothing.

    python bench/bench_long_audio.py [--checkpoint CKPT] [--core DIR] [--rounds 2]

--core: the checkout whose wav2lip_core runs (default: this one), to compare another version
on the same files. The model cache is filled by one run first, so no row pays the conversion.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
FACE = SHARED / "media" / "vretalk_face2.mp4"
BOX = ("225", "608", "192", "565")


def write_recording(path: Path, seconds: int, rate: int = 48000) -> Path:
    """Stereo 16-bit wav of a gliding tone with noise, written a second at a time."""
    import av
    import numpy as np

    with av.open(str(path), "w") as out:
        stream = out.add_stream("pcm_s16le", rate=rate)
        stream.layout = "stereo"
        resampler = av.AudioResampler(format="s16", layout="stereo", rate=rate)
        rng = np.random.default_rng(0)
        for k in range(seconds):
            t = k + np.arange(rate) / rate
            mono = (0.3 * np.sin(2 * np.pi * (180 * t + 40 * np.sin(0.7 * t))) + 0.03 * rng.standard_normal(rate))
            frame = av.AudioFrame.from_ndarray(np.vstack([mono, mono]).astype(np.float32), format="fltp",
                                               layout="stereo")
            frame.sample_rate, frame.pts, frame.time_base = rate, k * rate, Fraction(1, rate)
            for f in resampler.resample(frame):
                for p in stream.encode(f):
                    out.mux(p)
        for p in stream.encode(None):
            out.mux(p)
    return path


def run_job(core: Path, env: dict, audio: Path, audio_start: float, checkpoint: Path, out: Path) -> tuple[float, float]:
    """(wall seconds, peak RSS in MB) of one CLI job in a fresh process."""
    cmd = [sys.executable, "-m", "wav2lip_core", "--face", str(FACE), "--audio", str(audio), "--checkpoint",
           str(checkpoint), "--out", str(out), "--box", *BOX, "--audio-start", str(audio_start), "--duration", "2",
           "--device", "cpu", "--no-cache", "--progress", "none"]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=core, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    err = proc.stderr.read().decode(errors="replace")
    proc.stderr.close()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"job failed:\n{err[-2000:]}")
    return wall, usage.ru_maxrss / 1024  # Linux: KiB


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", type=Path, help="default: the conformance checkpoint, made here")
    ap.add_argument("--core", type=Path, default=ROOT, help="checkout whose wav2lip_core runs")
    ap.add_argument("--rounds", type=int, default=2)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-long-audio-") as tmp:
        tmp = Path(tmp)
        checkpoint = a.checkpoint
        if checkpoint is None:
            checkpoint = tmp / "wav2lip_conformance.pth"
            subprocess.run([sys.executable, str(SHARED / "conformance" / "make_checkpoint.py"), str(checkpoint),
                            "--prefix", "module."], check=True, stdout=subprocess.DEVNULL)
        env = dict(os.environ, WAV2LIP_MODEL_CACHE=str(tmp / "models"), PYTHONPATH=str(a.core.resolve()))
        t = time.perf_counter()
        long_file = write_recording(tmp / "dialogue_30min.wav", 30 * 60)
        short_file = write_recording(tmp / "line_5s.wav", 5)
        print(f"recordings written in {time.perf_counter() - t:.1f} s: 30 min = "
              f"{long_file.stat().st_size / 1e6:.0f} MB, 5 s = {short_file.stat().st_size / 1e6:.1f} MB")
        run_job(a.core, env, short_file, 1.0, checkpoint, tmp / "warm.mp4")  # fills the model cache
        cases = (("2 s from minute 25 of 30 min", long_file, 25 * 60.0), ("2 s from a 5 s file", short_file, 1.0))
        rows: dict[str, list[tuple[float, float]]] = {name: [] for name, _, _ in cases}
        for _ in range(a.rounds):  # interleaved: a busy machine slows both alike
            for name, audio, start in cases:
                rows[name].append(run_job(a.core, env, audio, start, checkpoint, tmp / "out.mp4"))
        where = subprocess.run([sys.executable, "-c", "import wav2lip_core; print(wav2lip_core.__file__)"], cwd=a.core,
                               env=env, capture_output=True, text=True).stdout.strip()
        print(f"core: {where}")
        print(f"{'job':32} {'wall s (best)':>14} {'peak RSS MB (max)':>18}")
        for name, results in rows.items():
            print(f"{name:32} {min(w for w, _ in results):14.2f} {max(r for _, r in results):18.0f}")


if __name__ == "__main__":
    main()
