"""`wav2lip meter VIDEO [--audio AUDIO] [--from SEC --to SEC] [--json]`: how far the mouth lags
its sound (quality.meter), per shot and for the range. Prints one line per shot and a summary,
or with --json one object on stdout. Errors are one `error: ...` line on stderr and exit code 2;
no tracebacks.
"""

from __future__ import annotations

import argparse
import json
import sys

from .. import protocol as P
from .console import answer
from ..quality import meter


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=f"wav2lip {P.METER_COMMAND}",
        description="Measure how far the mouth moves later (+) or earlier (-) than its sound, in frames and ms.")
    p.add_argument("video", help="the clip to measure (its own sound unless --audio is given)")
    p.add_argument("--audio", help="measure against this sound instead, heard from the video's time 0")
    p.add_argument("--audio-start", type=float, default=0.0, metavar="SEC",
                   help="with --audio: the sound's time heard at the video's time 0 (negative: it starts later)")
    p.add_argument("--from", dest="start", type=float, default=None, metavar="SEC", help="start of the range (s)")
    p.add_argument("--to", dest="end", type=float, default=None, metavar="SEC", help="end of the range (s)")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.add_argument("--no-landmarks", action="store_true",
                   help="use the landmark-free mouth signal even when the landmarks extra is installed")
    p.add_argument("--detector", default="auto", help="face detector (auto, blazeface, blazeface-back, s3fd, haar)")
    p.add_argument("--detector-weights", default=None, metavar="PATH", help="the detector's weights file")
    return p


def _line(label: str, offset: float | None, ms: float | None, confidence: float, verdict: str) -> str:
    if offset is None:
        return f"{label}: {verdict} (confidence {confidence:.2f})"
    return f"{label}: {offset:+.2f} frames ({ms:+.0f} ms), {verdict} (confidence {confidence:.2f})"


def measure_args(args: argparse.Namespace, progress=None, cancel=None) -> meter.SyncMeasure:
    """The measure parsed arguments ask for (the command's and a serve meter job's)."""
    if args.start is not None and args.end is not None and args.end <= args.start:
        raise meter.MeterError(f"--to {args.end} is not after --from {args.start}: give a range that is")
    return meter.measure(args.video, args.audio, args.start, args.end,
                         use_landmarks=False if args.no_landmarks else None,
                         detector=meter.detector_settings(args.detector, args.detector_weights),
                         progress=progress, cancel=cancel, audio_start=args.audio_start)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result = answer(lambda: measure_args(args))
    if isinstance(result, int):
        return result
    if args.json:
        print(json.dumps(result.to_json()))
        return 0
    if len(result.shots) > 1:
        for k, s in enumerate(result.shots, 1):
            print(_line(f"shot {k} ({s.start:.2f}-{s.end:.2f} s)", s.offset_frames, s.offset_ms, s.confidence,
                        s.verdict))
    print(_line(f"sync ({result.method}, {result.fps:.3g} fps)", result.offset_frames, result.offset_ms,
                result.confidence, result.verdict))
    return 0


if __name__ == "__main__":
    sys.exit(main())
