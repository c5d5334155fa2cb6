"""A stand-in for `python -m wav2lip_core` for the add-on's tests: the same command line and the
same protocol, taken from the engine's own protocol module (wav2lip_core/protocol.py, standard
library only), so the two cannot drift apart.

It writes a real (tiny) H.264 file with ceil(duration * fps) frames at --fps, reports progress as
the core does with `--progress json`, and logs its arguments to $FAKE_ENGINE_LOG (JSON, with the
--source-times list read back). $FAKE_ENGINE_MODE:
  ok (default) | error (exit 1 with `error: ...`) | crash (dies with a traceback-like line)
  | slow (long progress, for cancel tests) | silent (exit 0 without writing anything)
  | other_protocol (says hello in protocol N+1, then carries on as if all was well)
  | refuse_protocol (what a newer engine does with our --protocol: exit 3)
  | old (an engine from before --protocol: argparse refuses the option, exit 2)
  | big_stderr (megabytes of stderr, the error line in the middle of them, exit 1)
  | note (a `note` event, as the real engine's detector choice)

`fake_engine.py serve` is the warm engine (`wav2lip serve`): the hello line, then JSON requests on
stdin (job/cancel/quit), every job run as above with its events tagged with the job's id; error
becomes an error event, crash kills the whole engine, slow stops at a cancel request; other_protocol
says hello in protocol N+1, refuse_protocol exits 3 before serving, old knows no `serve` (exit 2).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import sys
import time
from fractions import Fraction
from pathlib import Path

_PROTOCOL_PY = Path(__file__).resolve().parents[2] / "wav2lip_core" / "protocol.py"
_spec = importlib.util.spec_from_file_location("_fake_engine_protocol", _PROTOCOL_PY)
assert _spec is not None and _spec.loader is not None
P = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(P)

VERSION = "0.0.0-fake"
DETECTOR_NOTE = "face detector: haar (BlazeFace weights not found; install.py --detector-weights PATH records them)"


def emit(line: str) -> None:
    print(line, flush=True)


def parser(with_protocol: bool = True) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="wav2lip")
    ap.add_argument(P.OPT_FACE, required=True)
    ap.add_argument(P.OPT_AUDIO, required=True)
    ap.add_argument(P.OPT_CHECKPOINT, required=True)
    ap.add_argument(P.OPT_OUT, required=True)
    ap.add_argument(P.OPT_DETECTOR, choices=P.names(P.DETECTORS), default=P.DETECTOR_AUTO)
    ap.add_argument(P.OPT_DETECTOR_WEIGHTS)
    ap.add_argument(P.OPT_BOX, nargs=4, type=int)
    ap.add_argument(P.OPT_DEVICE, choices=P.names(P.DEVICES), default="auto")
    ap.add_argument(P.OPT_PRECISION, choices=P.names(P.PRECISIONS), default="auto")
    ap.add_argument(P.OPT_FPS, type=float, default=25.0)
    ap.add_argument(P.OPT_START_FRAME, type=int, default=0)
    ap.add_argument(P.OPT_FRAMES, type=int)
    ap.add_argument(P.OPT_SOURCE_TIMES)
    ap.add_argument(P.OPT_AUDIO_START, type=float, default=0.0)
    ap.add_argument(P.OPT_AUDIBLE, type=float, nargs=2)
    ap.add_argument(P.OPT_DURATION, type=float)
    ap.add_argument(P.OPT_BLEND, choices=P.names(P.BLENDS))
    ap.add_argument(P.OPT_SILENCE, choices=P.names(P.SILENCES))
    ap.add_argument(P.OPT_SYNC_OFFSET, type=float)
    ap.add_argument(P.OPT_ENHANCE)
    ap.add_argument(P.OPT_ENHANCE_FIDELITY, type=float)
    ap.add_argument(P.OPT_ALIGN, choices=P.names(P.ALIGNS))
    ap.add_argument(P.OPT_PROGRESS, default="bar")
    if with_protocol:
        ap.add_argument(P.OPT_PROTOCOL, type=int)
    return ap


def main(argv=None) -> int:
    mode = os.environ.get("FAKE_ENGINE_MODE", "ok")
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == [P.SERVE_COMMAND] and mode != "old":
        return serve(mode)
    args = parser(with_protocol=mode != "old").parse_args(argv)
    if mode == "refuse_protocol" or (args.protocol is not None and args.protocol != P.PROTOCOL_VERSION):
        theirs = P.PROTOCOL_VERSION + 1 if mode == "refuse_protocol" else P.PROTOCOL_VERSION
        print(f"error: this engine speaks protocol {theirs}, the caller {args.protocol}: re-run install.py",
              file=sys.stderr)
        return P.EXIT_PROTOCOL
    times = None
    if args.source_times:
        with open(args.source_times, encoding="utf-8") as f:
            times = json.load(f)
    log = os.environ.get("FAKE_ENGINE_LOG")
    if log:
        with open(log, "w") as f:
            json.dump({"argv": sys.argv[1:], "source_times_list": times,
                       **vars(args)}, f)
    json_mode = args.progress == P.PROGRESS_JSON
    if json_mode:
        emit(P.event(P.EVENT_HELLO, **{P.KEY_PROTOCOL: P.PROTOCOL_VERSION + 1, P.KEY_VERSION: "9.9"})
             if mode == "other_protocol" else P.hello(VERSION))
    print("some stray output that is not JSON", flush=True)
    if mode == "error":
        print("warming up", file=sys.stderr)
        print("error: cannot read the checkpoint: it is not a Wav2Lip model", file=sys.stderr)
        return P.EXIT_ERROR
    if mode == "big_stderr":
        junk = "x" * 1000
        for _ in range(3000):  # 3 MB of warnings before the error ...
            print(f"warning: {junk}", file=sys.stderr)
        print("y" * 2_000_000, file=sys.stderr)  # ... one runaway 2 MB line ...
        print("error: the clip's audio track is damaged at 3.2 s", file=sys.stderr)
        for _ in range(500):  # ... and more noise after it
            print(f"cleanup: {junk}", file=sys.stderr)
        return P.EXIT_ERROR
    if mode == "crash":
        emit(P.progress(P.STAGE_AUDIO, 1, 10))
        raise SystemExit("Segmentation fault (simulated)")
    if mode == "slow":
        for i in range(600):
            emit(P.progress(P.STAGE_SYNC, i, 600))
            time.sleep(0.1)
    if mode == "silent":
        return 0
    if mode == "note":
        emit(P.note(DETECTOR_NOTE))
    duration = args.duration if args.duration is not None else 1.0
    n = max(1, math.ceil(duration * args.fps - 1e-9))
    for stage in P.STAGES:
        for i in range(0, n + 1, max(1, n // 3)):
            emit(P.progress(stage, min(i, n), n))
    write_clip(args.out, n, args.fps)
    if json_mode:
        emit(P.event(P.EVENT_DONE, **{P.KEY_OUT: args.out, P.KEY_FRAMES: n, P.KEY_SECONDS: 0.1,
                                      P.KEY_DETECTOR: "haar"}))
    return 0


def write_clip(path: str, n: int, fps: float) -> None:
    import av
    import numpy as np

    tmp = path + ".tmp.mp4"
    with av.open(tmp, "w") as out:
        rate = Fraction(fps).limit_denominator(1001)
        st = out.add_stream("libx264", rate=rate)
        st.width, st.height, st.pix_fmt = 64, 64, "yuv420p"
        for i in range(n):
            img = np.full((64, 64, 3), (i * 7) % 256, dtype=np.uint8)
            for pkt in st.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(pkt)
        for pkt in st.encode():
            out.mux(pkt)
    os.replace(tmp, path)


def serve(mode: str) -> int:
    import threading
    from collections import deque

    if mode == "refuse_protocol":
        print(f"error: this engine speaks protocol {P.PROTOCOL_VERSION + 1}: re-run install.py", file=sys.stderr)
        return P.EXIT_PROTOCOL
    lock = threading.Lock()
    queue: deque = deque()
    cancelled: set = set()
    wake = threading.Event()
    state = {"stop": False}

    def read() -> None:
        for line in sys.stdin:
            req = json.loads(line)
            with lock:
                if req[P.KEY_OP] == P.OP_JOB:
                    queue.append(req)
                elif req[P.KEY_OP] == P.OP_CANCEL:
                    cancelled.add(req[P.KEY_ID])
                elif req[P.KEY_OP] == P.OP_QUIT:
                    state["stop"] = True
            wake.set()
        state["stop"] = True
        wake.set()

    emit(P.event(P.EVENT_HELLO, **{P.KEY_PROTOCOL: P.PROTOCOL_VERSION + 1, P.KEY_VERSION: "9.9"})
         if mode == "other_protocol" else P.hello(VERSION))
    threading.Thread(target=read, daemon=True).start()
    jobs_run = 0
    while not state["stop"]:
        wake.wait(0.1)
        wake.clear()
        with lock:
            req = queue.popleft() if queue else None
        if req is None:
            continue
        job = req[P.KEY_ID]

        def tagged(kind, **fields):
            emit(P.event(kind, **{P.KEY_JOB: job}, **fields))

        def stop() -> bool:
            with lock:
                return job in cancelled or state["stop"]

        args = parser().parse_args(req[P.KEY_ARGS])
        log = os.environ.get("FAKE_ENGINE_LOG")
        if log:
            times = None
            if args.source_times:
                with open(args.source_times, encoding="utf-8") as f:
                    times = json.load(f)
            with open(log, "w") as f:
                json.dump({"argv": req[P.KEY_ARGS], "source_times_list": times, **vars(args)}, f)
        if mode == "error":
            tagged(P.EVENT_ERROR, **{P.KEY_MESSAGE: "cannot read the checkpoint: it is not a Wav2Lip model"})
            continue
        if mode == "big_stderr":
            junk = "x" * 1000
            for _ in range(3000):
                print(f"warning: {junk}", file=sys.stderr)
            print("y" * 2_000_000, file=sys.stderr)
            tagged(P.EVENT_ERROR, **{P.KEY_MESSAGE: "the clip's audio track is damaged at 3.2 s"})
            continue
        if mode == "crash":
            tagged(P.EVENT_PROGRESS, **{P.KEY_STAGE: P.STAGE_AUDIO, P.KEY_DONE: 1, P.KEY_TOTAL: 10})
            print("Segmentation fault (simulated)", file=sys.stderr, flush=True)
            os._exit(1)
        if mode == "slow":
            for i in range(600):
                if stop():
                    break
                tagged(P.EVENT_PROGRESS, **{P.KEY_STAGE: P.STAGE_SYNC, P.KEY_DONE: i, P.KEY_TOTAL: 600})
                time.sleep(0.1)
        if stop():
            tagged(P.EVENT_CANCELLED)
            continue
        duration = args.duration if args.duration is not None else 1.0
        n = max(1, math.ceil(duration * args.fps - 1e-9))
        if mode == "note":
            tagged(P.EVENT_NOTE, **{P.KEY_MESSAGE: DETECTOR_NOTE})
        for stage in P.STAGES:
            for i in range(0, n + 1, max(1, n // 3)):
                tagged(P.EVENT_PROGRESS, **{P.KEY_STAGE: stage, P.KEY_DONE: min(i, n), P.KEY_TOTAL: n})
        if mode != "silent":
            write_clip(args.out, n, args.fps)
        tagged(P.EVENT_DONE, **{P.KEY_OUT: args.out, P.KEY_FRAMES: n, P.KEY_SECONDS: 0.1,
                                P.KEY_DETECTOR: "haar", P.KEY_WARM: jobs_run > 0})
        jobs_run += 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
