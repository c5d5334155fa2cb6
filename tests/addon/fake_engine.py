"""A stand-in for `python -m wav2lip_core` with the same command line, for the add-on's tests.

It writes a real (tiny) H.264 file with ceil(duration * fps) frames at --fps, reports progress as
the core does with `--progress json`, and logs its arguments to $FAKE_ENGINE_LOG (JSON).
$FAKE_ENGINE_MODE: ok (default) | error (exit 2 with `error: ...`) | crash (dies with a traceback)
| slow (long progress, for cancel tests) | silent (exit 0 without writing anything).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from fractions import Fraction


def emit(obj: dict) -> None:
    print(json.dumps(obj), flush=True)


def _rms(path: str):
    """RMS per 0.1 s of a mono/stereo 16-bit WAV (None for anything else)."""
    import wave

    try:
        with wave.open(path) as w:
            import numpy as np

            rate, ch = w.getframerate(), w.getnchannels()
            a = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16).astype(float)
    except Exception:
        return None
    a = a.reshape(-1, ch).mean(axis=1)
    step = rate // 10
    return [float(np.sqrt((a[i:i + step] ** 2).mean())) for i in range(0, len(a) - step + 1, step)]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--face", required=True)
    ap.add_argument("--audio", required=True)
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--detector")
    ap.add_argument("--detector-weights")
    ap.add_argument("--box", nargs=4, type=int)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--fps", type=float, default=25.0)
    ap.add_argument("--start-frame", type=int, default=0)
    ap.add_argument("--frames", type=int)
    ap.add_argument("--audio-start", type=float, default=0.0)
    ap.add_argument("--duration", type=float)
    ap.add_argument("--progress", default="bar")
    args = ap.parse_args(argv)
    log = os.environ.get("FAKE_ENGINE_LOG")
    if log:
        with open(log, "w") as f:
            json.dump({"argv": sys.argv[1:], "audio_rms": _rms(args.audio), **vars(args)}, f)
    mode = os.environ.get("FAKE_ENGINE_MODE", "ok")
    print("some stray output that is not JSON", flush=True)
    if mode == "error":
        print("warming up", file=sys.stderr)
        print("error: cannot read the checkpoint: it is not a Wav2Lip model", file=sys.stderr)
        return 2
    if mode == "crash":
        emit({"stage": "decode", "done": 1, "total": 10})
        raise SystemExit("Segmentation fault (simulated)")
    if mode == "slow":
        for i in range(600):
            emit({"stage": "model", "done": i, "total": 600})
            time.sleep(0.1)
    if mode == "silent":
        return 0
    duration = args.duration if args.duration is not None else 1.0
    n = max(1, math.ceil(duration * args.fps - 1e-9))
    for stage in ("decode", "detect", "model"):
        for i in range(0, n + 1, max(1, n // 3)):
            emit({"stage": stage, "done": min(i, n), "total": n})
    import av
    import numpy as np

    tmp = args.out + ".tmp.mp4"
    with av.open(tmp, "w") as out:
        rate = Fraction(args.fps).limit_denominator(1001)
        st = out.add_stream("libx264", rate=rate)
        st.width, st.height, st.pix_fmt = 64, 64, "yuv420p"
        for i in range(n):
            img = np.full((64, 64, 3), (i * 7) % 256, dtype=np.uint8)
            for pkt in st.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(pkt)
            if i % 10 == 0:
                emit({"stage": "encode", "done": i, "total": n})
        for pkt in st.encode():
            out.mux(pkt)
    os.replace(tmp, args.out)
    emit({"stage": "done", "out": args.out, "frames": n, "seconds": 0.1})
    return 0


if __name__ == "__main__":
    sys.exit(main())
