#!/usr/bin/env python3
"""The original Wav2Lip inference.py's `--box` path, as its algorithm runs, for benchmarking only.

What it keeps from the original: every frame read into a list first, no face detection (fixed
box), batches of 128, one model call per batch, the hard paste, frames written to an
intermediate AVI through cv2.VideoWriter, then a second step muxing the audio. What differs:
its `librosa.filters.mel(sr, n_fft)` call no longer runs, so the mel comes from our
(bit-identical) function; the final mux uses PyAV instead of an ffmpeg subprocess. Prints
peak RSS.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from wav2lip_core.audio import load_audio, mel_chunk_starts, melspectrogram  # noqa: E402
from wav2lip_core.model import load_checkpoint  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--face", required=True)
    ap.add_argument("--audio", required=True)
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--box", type=int, nargs=4, required=True)
    ap.add_argument("--duration", type=float)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()

    cap = cv2.VideoCapture(a.face)
    fps = cap.get(cv2.CAP_PROP_FPS)
    frames = []
    while True:
        ok, f = cap.read()
        if not ok:
            break
        frames.append(f)
    wav = load_audio(a.audio)
    if a.duration:
        wav = wav[: int(a.duration * 16000)]
    mel = melspectrogram(wav)
    mels = [mel[:, s: s + 16] for s in mel_chunk_starts(mel.shape[1], fps)]
    y1, y2, x1, x2 = a.box
    if y2 <= 0:
        y1, y2, x1, x2 = 0, frames[0].shape[0], 0, frames[0].shape[1]
    model = load_checkpoint(a.checkpoint)
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
            xb = torch.FloatTensor(np.transpose(x, (0, 3, 1, 2)))
            mb = torch.FloatTensor(m[:, None])
            with torch.no_grad():
                pred = model(mb, xb)
            pred = pred.cpu().numpy().transpose(0, 2, 3, 1) * 255.0
            for i, p in zip(idx, pred):
                f = frames[i % len(frames)].copy()
                f[y1:y2, x1:x2] = cv2.resize(p.astype(np.uint8), (x2 - x1, y2 - y1))
                out.write(f)
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
    print(f"frames {len(mels)}, peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main()
