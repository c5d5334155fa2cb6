#!/usr/bin/env python3
"""The original Wav2Lip inference.py's `--box` path, as its algorithm runs, for benchmarking only.

What it keeps from the original: every frame read into a list first, no face detection (fixed
box), batches of 128, one model call per batch, the hard paste, frames written to an
intermediate AVI through cv2.VideoWriter, then a second step re-encoding it to H.264. What
differs: its `librosa.filters.mel(sr, n_fft)` call no longer runs, so the mel comes from our
(bit-identical) function; the final step uses PyAV instead of an ffmpeg subprocess and leaves
the sound out (AAC for a few seconds of audio is a rounding error next to the rest). Prints one
JSON line: frames, seconds per step, peak RSS (MB).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from wav2lip_core.media.audio import load_audio, mel_chunk_starts, melspectrogram  # noqa: E402
from wav2lip_core.model.checkpoint import load_checkpoint  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--face", required=True)
    ap.add_argument("--audio", required=True)
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--box", type=int, nargs=4, required=True)
    ap.add_argument("--duration", type=float)
    ap.add_argument("--out", required=True)
    ap.add_argument("--device", default="cpu", help="cpu, or cuda: where the original's model runs (it picks cuda when present)")
    a = ap.parse_args()
    steps: dict[str, float] = {}
    t = time.perf_counter()

    def step(name: str) -> None:
        nonlocal t
        now = time.perf_counter()
        steps[name] = steps.get(name, 0.0) + now - t
        t = now

    cap = cv2.VideoCapture(a.face)
    fps = cap.get(cv2.CAP_PROP_FPS)
    frames = []
    while True:
        ok, f = cap.read()
        if not ok:
            break
        frames.append(f)
    step("decode")
    wav = load_audio(a.audio)
    if a.duration:
        wav = wav[: int(a.duration * 16000)]
    mel = melspectrogram(wav)
    mels = [mel[:, s: s + 16] for s in mel_chunk_starts(mel.shape[1], fps)]
    step("audio")
    y1, y2, x1, x2 = a.box
    if y2 <= 0:
        y1, y2, x1, x2 = 0, frames[0].shape[0], 0, frames[0].shape[1]
    model = load_checkpoint(a.checkpoint, device=a.device)
    step("load")
    h, w = frames[0].shape[:2]
    with tempfile.TemporaryDirectory() as tmp:
        avi = f"{tmp}/result.avi"
        out = cv2.VideoWriter(avi, cv2.VideoWriter_fourcc(*"DIVX"), fps, (w, h))
        for b in range(0, len(mels), 128):
            idx = range(b, min(b + 128, len(mels)))
            img = np.asarray([cv2.resize(frames[i % len(frames)][y1:y2, x1:x2], (96, 96)) for i in idx])
            m = np.asarray([mels[i] for i in idx])
            masked = img.copy()
            masked[:, 48:] = 0
            x = np.concatenate((masked, img), axis=3) / 255.0
            xb = torch.FloatTensor(np.transpose(x, (0, 3, 1, 2))).to(a.device)
            mb = torch.FloatTensor(m[:, None]).to(a.device)
            step("crop")
            with torch.no_grad():
                pred = model(mb, xb)
            pred = pred.cpu().numpy().transpose(0, 2, 3, 1) * 255.0
            step("model")
            for i, p in zip(idx, pred):
                f = frames[i % len(frames)].copy()
                f[y1:y2, x1:x2] = cv2.resize(p.astype(np.uint8), (x2 - x1, y2 - y1))
                step("blend")
                out.write(f)
                step("encode")
        out.release()
        import av

        with av.open(avi) as src, av.open(a.out, "w") as dst:
            vs = dst.add_stream("libx264", rate=round(fps))
            vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
            for fr in src.decode(video=0):
                for p in vs.encode(fr.reformat(format="yuv420p")):
                    dst.mux(p)
            for p in vs.encode(None):
                dst.mux(p)
        step("encode")
    print(json.dumps({"frames": len(mels), "stages": steps,
                      "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


if __name__ == "__main__":
    main()
