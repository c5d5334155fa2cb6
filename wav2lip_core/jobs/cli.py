"""Command line: `python -m wav2lip_core --face F --audio A --checkpoint C --out O.mp4`, or
`python -m wav2lip_core serve` for the warm engine that takes the same arguments per job (serve.py).

Exit codes (protocol.EXIT_*): 0 success, 1 a problem with the inputs or the run (one line on
stderr, starting `error:`), 2 bad arguments, 3 a caller speaking another protocol version,
130 cancelled (Ctrl+C or SIGTERM). No traceback for anything a user can fix.

Nothing here imports torch, numpy or OpenCV before the arguments are parsed, so `--help` and
argument errors answer at once; the pipeline is imported only to run.
"""

from __future__ import annotations

import argparse
import json
import math
import signal
import sys
import time

from .. import __version__, protocol as P
from ..errors import Cancelled, Wav2LipError

STAGE_LABELS = {P.STAGE_AUDIO: "audio", P.STAGE_LOAD: "load model", P.STAGE_DETECT: "detect faces",
                P.STAGE_SYNC: "lip-sync"}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="wav2lip", description="Lip-sync a face video (or still image) to an audio file with Wav2Lip.",
                                epilog=f"`wav2lip {P.SERVE_COMMAND}` starts the warm engine: jobs with these arguments as JSON lines on stdin. "
                                       f"`wav2lip {P.BATCH_COMMAND} JOBS` runs a JSON-lines file of jobs (see `wav2lip {P.BATCH_COMMAND} --help`).")
    p.add_argument(P.OPT_FACE, required=True, help="video or still image of the speaker")
    p.add_argument(P.OPT_AUDIO, required=True, help="driving audio (wav/mp3/flac or a video's sound)")
    p.add_argument(P.OPT_CHECKPOINT, required=True, help="wav2lip.pth or wav2lip_gan.pth")
    p.add_argument(P.OPT_OUT, required=True, help="output .mp4 (H.264 + AAC); never one of the inputs")
    d = p.add_argument_group("face detection")
    d.add_argument(P.OPT_DETECTOR, choices=P.names(P.DETECTORS), default=P.DETECTOR_AUTO,
                   help="auto (default): BlazeFace when its weights are found, else OpenCV's Haar cascade")
    d.add_argument(P.OPT_DETECTOR_WEIGHTS, metavar="PATH", help="detector weights (.pth; BlazeFace anchors .npy beside it)")
    d.add_argument(P.OPT_BOX, type=int, nargs=4, metavar=("TOP", "BOTTOM", "LEFT", "RIGHT"), help="fixed face box: no detection, no padding")
    d.add_argument("--pads", type=int, nargs=4, metavar=("TOP", "BOTTOM", "LEFT", "RIGHT"), default=[0, 10, 0, 0])
    d.add_argument("--no-smooth", action="store_true", help="do not smooth face boxes over time")
    d.add_argument("--face-at", type=int, nargs=2, metavar=("X", "Y"), help="with several faces: follow the one at this pixel of the first frame (default: the largest)")
    d.add_argument("--no-cache", action="store_true", help="ignore and do not write the detection cache")
    d.add_argument("--cache-dir", metavar="DIR", help="detection cache folder (default: the user cache dir)")
    m = p.add_argument_group("model and output")
    m.add_argument(P.OPT_BLEND, choices=P.names(P.BLENDS), default=P.BLENDS[0][0],
                   help="feather (soft mask, default), hard (the original's paste) or mouth (landmarks extra)")
    m.add_argument("--batch-size", type=int, help="frames per model batch (default: chosen for the device)")
    m.add_argument(P.OPT_DEVICE, choices=P.names(P.DEVICES), default="auto")
    m.add_argument(P.OPT_PRECISION, choices=P.names(P.PRECISIONS), default="auto",
                   help="auto (default): fp16 on CUDA, else fp32 (bf16 on CPUs with native bf16); "
                        "int8: opt-in, OpenVINO on CPU, needs the int8 extra")
    m.add_argument(P.OPT_RUNTIME, choices=P.names(P.RUNTIMES), default="auto",
                   help="auto (default): OpenVINO on a CPU when installed, torch on a GPU")
    m.add_argument("--crf", type=_crf, default=P.CRF_DEFAULT,
                   help=f"H.264 quality, {P.CRF_RANGE[0]} (lossless) to {P.CRF_RANGE[1]}; lower is better (default {P.CRF_DEFAULT})")
    m.add_argument(P.OPT_ENCODER, choices=P.names(P.ENCODERS), default=P.ENCODER_AUTO,
                   help="auto (default): NVENC when the model runs on CUDA and NVENC works, else libx264")
    m.add_argument(P.OPT_PRESET, choices=P.names(P.PRESETS), metavar="PRESET",
                   help=f"x264 speed/size preset: {', '.join(P.names(P.PRESETS))} "
                        f"(default {P.PRESET_DEFAULT}, from a measured table); NVENC uses its own")
    q = p.add_argument_group("quality")
    q.add_argument(P.OPT_SILENCE, choices=P.names(P.SILENCES), default=P.SILENCE_HOLD,
                   help="hold (default): keep the source mouth where the audio is silent; sync: the original")
    q.add_argument(P.OPT_SYNC_OFFSET, type=float, default=0.0, metavar="FRAMES",
                   help="shift the audio that drives each frame, in frames (fractions allowed; negative: mouth earlier)")
    q.add_argument(P.OPT_ENHANCE, metavar="PATH", help="face restorer weights (GFPGAN, RestoreFormer, CodeFormer; enhance extra)")
    q.add_argument(P.OPT_ENHANCE_FIDELITY, type=float, default=P.ENHANCE_FIDELITY_DEFAULT, metavar="W",
                   help="CodeFormer only: 0 (most restored) to 1 (closest to the input)")
    q.add_argument(P.OPT_ALIGN, choices=P.names(P.ALIGNS), default=P.ALIGN_AUTO,
                   help="auto (default): level tilted heads when landmarks are available; off: never")
    t = p.add_argument_group("timing")
    t.add_argument(P.OPT_FPS, type=float, help="output frame rate: for an image its rate (default 25); for a video, show one source frame per output frame at this rate")
    t.add_argument(P.OPT_START_FRAME, type=int, default=0, help="first source frame to use (0-based)")
    t.add_argument(P.OPT_FRAMES, type=int, help="number of source frames to use (default: to the end)")
    t.add_argument(P.OPT_SOURCE_TIMES, metavar="FILE", help="JSON list, one clip time (s) per output frame: show the frame on screen at that time, hold the last past the end (needs --fps)")
    t.add_argument(P.OPT_AUDIO_START, type=float, default=0.0, metavar="SEC", help="audio time heard at output time 0 (negative: leading silence)")
    t.add_argument(P.OPT_AUDIBLE, type=float, nargs=2, metavar=("FROM", "TO"), help="output seconds where the sound plays; silence before and after")
    t.add_argument(P.OPT_DURATION, type=float, metavar="SEC", help="output length (default: the audio's, from --audio-start)")
    p.add_argument(P.OPT_PROGRESS, choices=("bar", P.PROGRESS_JSON, "none"), default="bar", help="tqdm bars (default), JSON lines on stdout, or nothing")
    p.add_argument(P.OPT_PROTOCOL, type=int, help=argparse.SUPPRESS)  # what the caller speaks (the add-on)
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__} (protocol {P.PROTOCOL_VERSION})")
    return p


def _crf(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not P.CRF_RANGE[0] <= value <= P.CRF_RANGE[1]:
        raise argparse.ArgumentTypeError(f"{value} is out of range: use {P.CRF_RANGE[0]} (lossless) to {P.CRF_RANGE[1]}")
    return value


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
            self._bar = self._tqdm(total=total, desc=STAGE_LABELS.get(stage, stage),
                                   unit="frame" if stage in (P.STAGE_DETECT, P.STAGE_SYNC) else "step", leave=True)
        bar = self._bar
        bar.total = total
        bar.update(done - bar.n)
        if total and done >= total:
            self.close()

    def note(self, line: str) -> None:
        self._tqdm.write(line, file=sys.stderr)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def _emit(line: str) -> None:
    print(line, flush=True)


def _load_source_times(path: str) -> tuple[float, ...]:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except OSError as exc:
        raise Wav2LipError(f"cannot read {P.OPT_SOURCE_TIMES} {path}: {exc.strerror or exc}") from None
    except ValueError:
        raise Wav2LipError(f"{P.OPT_SOURCE_TIMES} {path} is not JSON: give a list of seconds") from None
    if not isinstance(data, list) or not data or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in data):
        raise Wav2LipError(f"{P.OPT_SOURCE_TIMES} {path} must hold a non-empty list of seconds")
    return tuple(float(v) for v in data)


def _on_sigterm(signum, frame) -> None:
    # A caller (the add-on's Cancel) stopping us: unwind like Ctrl+C so the writer deletes its
    # temp file instead of the process vanishing with a half-written one.
    raise KeyboardInterrupt


def make_request(args: argparse.Namespace):
    """The pipeline's LipSyncRequest for parsed arguments (imports the pipeline)."""
    from ..sync.pipeline import LipSyncRequest

    return LipSyncRequest(
        face=args.face, audio=args.audio, checkpoint=args.checkpoint, out=args.out, detector=args.detector,
        detector_weights=args.detector_weights, box=tuple(args.box) if args.box else None, pads=tuple(args.pads),
        smooth=not args.no_smooth, face_at=tuple(args.face_at) if args.face_at else None, blend=args.blend,
        batch_size=args.batch_size, device=args.device, precision=args.precision, runtime=args.runtime, fps=args.fps,
        start_frame=args.start_frame, frames=args.frames,
        source_times=_load_source_times(args.source_times) if args.source_times else None,
        audio_start=args.audio_start, audible=tuple(args.audible) if args.audible else None, duration=args.duration,
        cache=not args.no_cache, cache_dir=args.cache_dir, crf=args.crf, encoder=args.encoder, preset=args.preset,
        silence=args.silence, sync_offset=args.sync_offset, enhance=args.enhance,
        enhance_fidelity=args.enhance_fidelity, align=args.align,
    )


def done_fields(result, seconds: float) -> dict:
    """The done event's fields for a pipeline result (the CLI's and serve's)."""
    return {P.KEY_OUT: result.out, P.KEY_FRAMES: result.frames, P.KEY_SECONDS: round(seconds, 3),
            P.KEY_CACHE_HIT: result.cache_hit, P.KEY_FRAMES_WITH_FACE: result.frames_with_face,
            P.KEY_DETECTOR: result.detector}


# Options with one number as their value (--audible takes two: the add-on writes them without
# an exponent, protocol.plain_number).
_NUMBER_OPTIONS = (P.OPT_FPS, P.OPT_AUDIO_START, P.OPT_DURATION, P.OPT_SYNC_OFFSET, P.OPT_ENHANCE_FIDELITY)


def join_negative_values(argv: list[str]) -> list[str]:
    """argparse reads a value that starts with '-' but is not a plain negative number
    (`--audio-start -3.3e-05`, `--sync-offset -.5e1`) as an unknown option; as
    `--audio-start=-3.3e-05` it is a value, so such pairs are joined."""
    joined: list[str] = []
    k = 0
    while k < len(argv):
        if argv[k] in _NUMBER_OPTIONS and k + 1 < len(argv) and str(argv[k + 1]).startswith("-"):
            try:
                float(argv[k + 1])
            except ValueError:
                pass
            else:
                joined.append(f"{argv[k]}={argv[k + 1]}")
                k += 2
                continue
        joined.append(argv[k])
        k += 1
    return joined


def parse_args(argv: list[str]) -> argparse.Namespace:
    """The one-shot command's arguments (what `wav2lip serve` jobs take too)."""
    return build_parser().parse_args(join_negative_values(argv))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == [P.SERVE_COMMAND]:
        from .serve import main as serve_main

        return serve_main(argv[1:])
    if argv[:1] == [P.BATCH_COMMAND]:
        from .batch import main as batch_main

        return batch_main(argv[1:])
    args = parse_args(argv)
    if args.protocol is not None and args.protocol != P.PROTOCOL_VERSION:
        print(f"error: {P.caller_mismatch_message(args.protocol)}", file=sys.stderr)
        return P.EXIT_PROTOCOL
    json_mode = args.progress == P.PROGRESS_JSON
    if json_mode:
        _emit(P.hello(__version__))
    signal.signal(signal.SIGTERM, _on_sigterm)
    bars = _Bars() if args.progress == "bar" else None
    if json_mode:
        def progress(stage: str, done: int, total: int) -> None:
            _emit(P.progress(stage, done, total))

        def note(line: str) -> None:
            _emit(P.note(line))
    else:
        progress = bars
        note = bars.note if bars is not None else None
    t0 = time.perf_counter()
    try:
        from ..sync.pipeline import run

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
        _emit(P.event(P.EVENT_DONE, **done_fields(result, time.perf_counter() - t0)))
    elif args.progress == "bar":
        cache = " (face boxes from cache)" if result.cache_hit else ""
        print(f"wrote {result.out}: {result.frames} frames at {result.fps:g} fps, {result.duration:.2f} s, "
              f"{result.seconds:.1f} s on {result.device}/{result.runtime}/{result.precision}, detector {result.detector}{cache}",
              file=sys.stderr)
    return P.EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
