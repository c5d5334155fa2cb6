#!/usr/bin/env python3
"""CPU cost per output frame of the quality options, and what --silence hold saves. Prints
figures, asserts nothing.

    python bench/bench_quality.py [--repeats 5] [--only silence offset fade]

Sources: ../shared/media speech (musetalk_eng.wav 60 s with natural pauses, the SadTalker clip's
own track, vretalk_face2's track) and ../shared/conformance/speech_16k.wav with a 1.5 s pause
written into it. Per option:

  silence   the detector (silence.frame_weights: 50 ms RMS per mel column, per-frame window
            maxima, hangover, fades) in us per output frame at 25 fps; the frames it holds and so
            the model forwards it saves, per track
  offset    plan.window(k) for a fractional --sync-offset (two columns interpolated) against the
            whole-frame slice, us per frame
  fade      the blend of a fade frame (paste, then mixed with the source) against a plain paste,
            ms per frame, for a 384x384 face box (a 1080p close-up) on a BGR frame

Best of --repeats for times (the machine is shared; the best is the least disturbed).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
sys.path.insert(0, str(ROOT))

from wav2lip_core import silence  # noqa: E402
from wav2lip_core.audio import load_audio, mel_chunk_starts, melspectrogram  # noqa: E402

FPS = 25.0
TRACKS = {
    "musetalk_eng.wav (60 s, natural pauses)": SHARED / "media" / "musetalk_eng.wav",
    "KatieHill own track (8 s)": SHARED / "media" / "sadtalker_WDA_KatieHill_000.mp4",
    "vretalk_face2 own track (5 s)": SHARED / "media" / "vretalk_face2.mp4",
    "sadtalker_imagine.wav (5.6 s)": SHARED / "media" / "sadtalker_imagine.wav",
}


def best(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def with_pause(wav: np.ndarray, at: float, seconds: float) -> np.ndarray:
    i = int(at * 16000)
    return np.concatenate([wav[:i], np.zeros(int(seconds * 16000), np.float32), wav[i:]])


def bench_silence(repeats: int) -> None:
    print("--silence hold: detector cost and model forwards saved (25 fps)")
    tracks = {name: load_audio(path) for name, path in TRACKS.items()}
    speech = load_audio(SHARED / "conformance" / "speech_16k.wav")
    tracks["speech_16k + one 1.5 s pause (6.5 s)"] = with_pause(speech, 2.5, 1.5)
    print(f"  {'track':42s} {'frames':>6s} {'held':>6s} {'fading':>6s} {'forwards saved':>14s} {'us/frame':>9s}")
    for name, wav in tracks.items():
        starts = mel_chunk_starts(melspectrogram(wav).shape[1], FPS)
        found = silence.frame_weights(wav, starts, None, FPS)
        n = len(starts)
        s = best(lambda: silence.frame_weights(wav, starts, None, FPS), repeats)
        fading = int(np.count_nonzero((found.weights > 0) & (found.weights < 1)))
        print(f"  {name:42s} {n:6d} {found.held:6d} {fading:6d} {found.held / n:13.1%} {s / n * 1e6:9.1f}")


def bench_offset(repeats: int) -> None:
    from wav2lip_core.plan import Plan

    wav = load_audio(SHARED / "media" / "musetalk_eng.wav")
    mel = melspectrogram(wav)
    starts = mel_chunk_starts(mel.shape[1], FPS)
    n = len(starts)
    whole = Plan(info=None, start=0, used=1, fps=FPS, duration=0, sources=[], times=[], mel_starts=starts, mel=mel)
    half = Plan(info=None, start=0, used=1, fps=FPS, duration=0, sources=[], times=[],
                mel_starts=[max(s - 2, 0) for s in starts], mel=mel, mel_fracs=[0.4] * n)
    t_whole = best(lambda: [np.ascontiguousarray(whole.window(k)) for k in range(n)], repeats)
    t_frac = best(lambda: [half.window(k) for k in range(n)], repeats)
    print("--sync-offset: the mel window per frame")
    print(f"  whole-frame offset (a slice, copied as the model input takes it) {t_whole / n * 1e6:7.1f} us/frame")
    print(f"  fractional offset (two columns interpolated)                    {t_frac / n * 1e6:7.1f} us/frame")


def bench_fade(repeats: int) -> None:
    import av

    from wav2lip_core.blend import paste
    from wav2lip_core.sync import _faded_paste

    with av.open(str(SHARED / "media" / "sadtalker_WDA_KatieHill_000.mp4")) as c:
        face = next(c.decode(video=0)).to_ndarray(format="bgr24")
    import cv2

    frame = np.zeros((1080, 1920, 3), np.uint8)
    frame[300:684, 700:1084] = cv2.resize(face, (384, 384))
    box = (300, 684, 700, 1084)
    pred = cv2.resize(face[250:450, 150:350], (96, 96))
    frames = [frame.copy() for _ in range(20)]
    print("--silence hold fades: blend per frame, 384x384 box in a 1080p BGR frame")
    for blend in ("feather", "hard"):
        t_paste = best(lambda: [paste(f, pred, box, blend) for f in frames], repeats) / len(frames)
        t_fade = best(lambda: [_faded_paste(f, pred, box, blend, 0.5) for f in frames], repeats) / len(frames)
        print(f"  {blend:8s} paste {t_paste * 1e3:6.2f} ms   fade {t_fade * 1e3:6.2f} ms (only the ~6 frames around each hold)")


BENCHES = {"silence": bench_silence, "offset": bench_offset, "fade": bench_fade}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--only", nargs="+", choices=sorted(BENCHES), default=list(BENCHES))
    args = p.parse_args()
    for name in args.only:
        BENCHES[name](args.repeats)


if __name__ == "__main__":
    main()
