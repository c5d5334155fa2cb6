"""A stand-in for `python -m wav2lip_core` for the add-on's tests: the same command line and the
same protocol, taken from the engine's own modules (wav2lip_core/jobs/request.py's parser and
wav2lip_core/protocol.py's events and requests, neither of which imports torch), so the two cannot
drift apart: an argument list the engine would refuse is refused here too.

It writes a real (tiny) H.264 file with ceil(duration * fps) frames at --fps, reports progress as
the core does with `--progress json`, and logs its arguments to $FAKE_ENGINE_LOG (JSON: the
parsed options, None for those not given, and the --source-times list read back). $FAKE_ENGINE_MODE:
  ok (default) | error (exit 1 with `error: ...`) | crash (dies with a traceback-like line)
  | slow (long progress, for cancel tests) | silent (exit 0 without writing anything)
  | other_protocol (says hello in protocol N+1, then carries on as if all was well)
  | refuse_protocol (what a newer engine does with our --protocol: exit 3)
  | old (an engine from before --protocol: argparse refuses the option, exit 2)
  | big_stderr (megabytes of stderr, the error line in the middle of them, exit 1)
  | note (a `note` event, as the real engine's detector choice)
  | slow_load (serve: the first job "loads the model" for $FAKE_ENGINE_LOAD seconds, default 3,
    without looking at cancel requests, as the real engine cannot while it loads or converts)

`fake_engine.py serve` is the warm engine (`wav2lip serve`): the hello line, then JSON requests on
stdin (job/cancel/quit), every job run as above with its events tagged with the job's id; error
becomes an error event, crash kills the whole engine, slow stops at a cancel request; other_protocol
says hello in protocol N+1, refuse_protocol exits 3 before serving, old knows no `serve` (exit 2).
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from fractions import Fraction
from pathlib import Path

# The checkout's core, whatever the interpreter has installed (its request and protocol modules
# import nothing outside the standard library).
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from wav2lip_core import protocol as P  # noqa: E402
from wav2lip_core.jobs import request  # noqa: E402

VERSION = "0.0.0-fake"
DETECTOR_NOTE = "face detector: haar (BlazeFace weights not found; install.py --detector-weights PATH records them)"


def emit(event: P.Message) -> None:
    print(event.to_json(), flush=True)


def hello(mode: str) -> P.Hello:
    return P.Hello(protocol=P.PROTOCOL_VERSION + 1, version="9.9") if mode == "other_protocol" else P.Hello(version=VERSION)


def parse(argv: list, mode: str):
    """The engine's own parsing (request.parse_args); `old` is an engine from before --protocol."""
    if mode == "old" and P.OPT_PROTOCOL in argv:
        request.build_parser().error(f"unrecognized arguments: {P.OPT_PROTOCOL}")
    return request.parse_args(argv)


def sent(args, argv: list) -> dict:
    """The parsed options for the log, None for each option the command line did not give (the
    parser's defaults would hide what the add-on left out)."""
    given = {a.split("=", 1)[0] for a in argv if str(a).startswith("--")}
    logged = vars(args).copy()
    for action in request.build_parser()._actions:
        if action.option_strings and not given & set(action.option_strings):
            logged[action.dest] = None
    return logged


def main(argv=None) -> int:
    mode = os.environ.get("FAKE_ENGINE_MODE", "ok")
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == [P.SERVE_COMMAND] and mode != "old":
        return serve(mode)
    args = parse(argv, mode)
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
            json.dump({"argv": sys.argv[1:], "source_times_list": times, **sent(args, argv)}, f)
    json_mode = args.progress == P.PROGRESS_JSON
    if json_mode:
        emit(hello(mode))
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
        emit(P.Progress(stage=P.STAGE_AUDIO, done=1, total=10))
        raise SystemExit("Segmentation fault (simulated)")
    if mode == "slow":
        for i in range(600):
            emit(P.Progress(stage=P.STAGE_SYNC, done=i, total=600))
            time.sleep(0.1)
    if mode == "silent":
        return 0
    if mode == "note":
        emit(P.Note(message=DETECTOR_NOTE))
    fps = args.fps or 25.0
    duration = args.duration if args.duration is not None else 1.0
    n = max(1, math.ceil(duration * fps - 1e-9))
    for stage in P.STAGES:
        for i in range(0, n + 1, max(1, n // 3)):
            emit(P.Progress(stage=stage, done=min(i, n), total=n))
    write_clip(args.out, n, fps)
    if json_mode:
        emit(P.Done(out=args.out, frames=n, seconds=0.1, detector="haar"))
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
            req = P.parse_request(line)
            with lock:
                if isinstance(req, P.JobRequest):
                    queue.append(req)
                elif isinstance(req, P.CancelRequest):
                    cancelled.add(req.id)
                else:
                    state["stop"] = True
            wake.set()
        state["stop"] = True
        wake.set()

    emit(hello(mode))
    threading.Thread(target=read, daemon=True).start()
    jobs_run = 0
    while not state["stop"]:
        wake.wait(0.1)
        wake.clear()
        with lock:
            req = queue.popleft() if queue else None
        if req is None:
            continue
        job = req.id

        def stop() -> bool:
            with lock:
                return job in cancelled or state["stop"]

        try:
            args = request.parse_args(req.args)
        except SystemExit:  # argparse said why on stderr; the real serve answers an error event
            emit(P.Error(job=job, message="bad job arguments (see the engine's stderr)"))
            continue
        log = os.environ.get("FAKE_ENGINE_LOG")
        if log:
            times = None
            if args.source_times:
                with open(args.source_times, encoding="utf-8") as f:
                    times = json.load(f)
            with open(log, "w") as f:
                json.dump({"argv": req.args, "source_times_list": times, **sent(args, req.args)}, f)
        if mode == "error":
            emit(P.Error(job=job, message="cannot read the checkpoint: it is not a Wav2Lip model"))
            continue
        if mode == "big_stderr":
            junk = "x" * 1000
            for _ in range(3000):
                print(f"warning: {junk}", file=sys.stderr)
            print("y" * 2_000_000, file=sys.stderr)
            emit(P.Error(job=job, message="the clip's audio track is damaged at 3.2 s"))
            continue
        if mode == "crash":
            emit(P.Progress(stage=P.STAGE_AUDIO, done=1, total=10, job=job))
            print("Segmentation fault (simulated)", file=sys.stderr, flush=True)
            os._exit(1)
        if mode == "slow_load" and not state.get("loaded"):
            emit(P.Progress(stage=P.STAGE_LOAD, done=0, total=1, job=job))
            time.sleep(float(os.environ.get("FAKE_ENGINE_LOAD", "3")))  # deaf to cancel, as a model load
            state["loaded"] = True
        if mode == "slow":
            for i in range(600):
                if stop():
                    break
                emit(P.Progress(stage=P.STAGE_SYNC, done=i, total=600, job=job))
                time.sleep(0.1)
        if stop():
            emit(P.Cancelled(job=job))
            continue
        fps = args.fps or 25.0
        duration = args.duration if args.duration is not None else 1.0
        n = max(1, math.ceil(duration * fps - 1e-9))
        if mode == "note":
            emit(P.Note(message=DETECTOR_NOTE, job=job))
        for stage in P.STAGES:
            for i in range(0, n + 1, max(1, n // 3)):
                emit(P.Progress(stage=stage, done=min(i, n), total=n, job=job))
        if mode != "silent":
            write_clip(args.out, n, fps)
        emit(P.Done(job=job, out=args.out, frames=n, seconds=0.1, detector="haar", warm=jobs_run > 0))
        jobs_run += 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
