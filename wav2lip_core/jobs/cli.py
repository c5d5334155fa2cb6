"""Command line: `python -m wav2lip_core --face F --audio A --checkpoint C --out O.mp4`, or
`python -m wav2lip_core serve` for the warm engine that takes the same arguments per job (serve.py),
or `python -m wav2lip_core batch JOBS` (batch.py), or `python -m wav2lip_core fetch URL`
(fetch_command.py). `--face` and `--audio` may be http(s) addresses (url_inputs.py). The top dispatcher: nothing imports it; the
parser and the request it builds are in request.py, shared with serve and batch.

Exit codes (protocol.EXIT_*): 0 success, 1 a problem with the inputs or the run (one line on
stderr, starting `error:`), 2 bad arguments, 3 a caller speaking another protocol version,
130 cancelled (Ctrl+C or SIGTERM). No traceback for anything a user can fix.

Nothing here imports torch, numpy or OpenCV before the arguments are parsed, so `--help` and
argument errors answer at once; the pipeline is imported only to run.
"""

from __future__ import annotations

import signal
import sys
import time

from .. import protocol as P
from .console import emit, greet, interrupt_on_sigterm
from ..errors import Cancelled, Wav2LipError
from .request import done_event, make_request, parse_args, sync_line


class _Bars:
    """One tqdm bar per stage, on stderr; a stage's bar closes when the next stage starts, so its
    elapsed time and rate are the stage's own."""

    def __init__(self):
        from tqdm import tqdm

        self._tqdm = tqdm
        self._stage: str | None = None
        self._bar = None

    def __call__(self, stage: str, done: int, total: int) -> None:
        if stage != self._stage:
            self.close()
            self._stage = stage
            unit = "frame" if stage in (P.STAGE_DETECT, P.STAGE_SYNC) else "B" if stage == P.STAGE_FETCH else "step"
            self._bar = self._tqdm(total=total or None, desc=P.STAGE_LABELS.get(stage, stage), unit=unit,
                                   unit_scale=unit == "B", leave=True)
        bar = self._bar
        bar.total = total or None  # (a fetch's size may not be known)
        bar.update(done - bar.n)
        if total and done >= total:
            self.close()

    def note(self, line: str) -> None:
        self._tqdm.write(line, file=sys.stderr)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None




def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == [P.SERVE_COMMAND]:
        from .serve import main as serve_main

        return serve_main(argv[1:])
    if argv[:1] == [P.BATCH_COMMAND]:
        from .batch import main as batch_main

        return batch_main(argv[1:])
    if argv[:1] == [P.FETCH_COMMAND]:
        from .fetch_command import main as fetch_main

        return fetch_main(argv[1:])
    if argv[:1] == [P.FACES_COMMAND]:
        from .faces_command import main as faces_main

        return faces_main(argv[1:])
    if argv[:1] == [P.METER_COMMAND]:
        from .meter_command import main as meter_main

        return meter_main(argv[1:])
    args = parse_args(argv)
    json_mode = args.progress == P.PROGRESS_JSON
    refused = greet(args.protocol, json_mode)
    if refused is not None:
        return refused
    signal.signal(signal.SIGTERM, interrupt_on_sigterm)
    bars = _Bars() if args.progress == "bar" else None
    if json_mode:
        def progress(stage: str, done: int, total: int) -> None:
            emit(P.Progress(stage=stage, done=int(done), total=int(total)).to_json())

        def note(line: str) -> None:
            emit(P.Note(message=line).to_json())
    else:
        progress = bars
        note = bars.note if bars is not None else None
    t0 = time.perf_counter()
    try:
        from ..sync.pipeline import run
        from .url_inputs import fetch_inputs

        fetch_inputs(args, progress, note=note)  # --face/--audio given as URLs: the files, first
        req = make_request(args)
        result = run(req, progress=progress, note=note)
    except (KeyboardInterrupt, Cancelled):
        if bars is not None:
            bars.close()
        print("error: cancelled; no output was written", file=sys.stderr)
        return P.EXIT_CANCELLED
    except Wav2LipError as e:
        if bars is not None:
            bars.close()
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        return P.EXIT_ERROR
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if bars is not None:
        bars.close()
    if json_mode:
        emit(done_event(result, time.perf_counter() - t0).to_json())
    elif args.progress == "bar":
        cache = " (face boxes from cache)" if result.cache_hit else ""
        print(f"wrote {result.out}: {result.frames} frames at {result.fps:g} fps, {result.duration:.2f} s, "
              f"{result.seconds:.1f} s on {result.device}/{result.runtime}/{result.precision}, detector {result.detector}{cache}",
              file=sys.stderr)
        line = sync_line(result)
        if line:
            print(line, file=sys.stderr)
    return P.EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
