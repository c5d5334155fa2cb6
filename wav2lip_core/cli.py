"""Command line: `python -m wav2lip_core --face F --audio A --checkpoint C --out O.mp4`.

Exit codes: 0 success, 1 a problem with the inputs or the run (one line on stderr, starting
`error:`), 2 bad arguments, 130 cancelled (Ctrl+C). No traceback for anything a user can fix.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from .errors import Cancelled, Wav2LipError

STAGE_LABELS = {"audio": "audio", "detect": "detect faces", "sync": "lip-sync"}


def build_parser() -> argparse.ArgumentParser:
    from .blend import BLENDS
    from .device import DEVICES, PRECISIONS
    from .faces import KINDS

    p = argparse.ArgumentParser(prog="wav2lip", description="Lip-sync a face video (or still image) to an audio file with Wav2Lip.")
    p.add_argument("--face", required=True, help="video or still image of the speaker")
    p.add_argument("--audio", required=True, help="driving audio (wav/mp3/flac or a video's sound)")
    p.add_argument("--checkpoint", required=True, help="wav2lip.pth or wav2lip_gan.pth")
    p.add_argument("--out", required=True, help="output .mp4 (H.264 + AAC); never one of the inputs")
    d = p.add_argument_group("face detection")
    d.add_argument("--detector", choices=[k for k in KINDS if k != "box"], default="blazeface")
    d.add_argument("--detector-weights", metavar="PATH", help="detector weights (.pth; BlazeFace anchors .npy beside it)")
    d.add_argument("--box", type=int, nargs=4, metavar=("TOP", "BOTTOM", "LEFT", "RIGHT"), help="fixed face box: no detection, no padding")
    d.add_argument("--pads", type=int, nargs=4, metavar=("TOP", "BOTTOM", "LEFT", "RIGHT"), default=[0, 10, 0, 0])
    d.add_argument("--no-smooth", action="store_true", help="do not smooth face boxes over time")
    d.add_argument("--face-at", type=int, nargs=2, metavar=("X", "Y"), help="with several faces: follow the one at this pixel of the first frame (default: the largest)")
    d.add_argument("--no-cache", action="store_true", help="ignore and do not write the detection cache")
    d.add_argument("--cache-dir", metavar="DIR", help="detection cache folder (default: the user cache dir)")
    m = p.add_argument_group("model and output")
    m.add_argument("--blend", choices=BLENDS, default="feather", help="feather (soft mask, default) or hard (the original's paste)")
    m.add_argument("--batch-size", type=int, help="frames per model batch (default: chosen for the device)")
    m.add_argument("--device", choices=DEVICES, default="auto")
    m.add_argument("--precision", choices=PRECISIONS, default="auto")
    m.add_argument("--crf", type=int, default=18, help="H.264 quality (lower is better, default 18)")
    t = p.add_argument_group("timing")
    t.add_argument("--fps", type=float, help="output frame rate: for an image its rate (default 25); for a video, show one source frame per output frame at this rate")
    t.add_argument("--start-frame", type=int, default=0, help="first source frame to use (0-based)")
    t.add_argument("--frames", type=int, help="number of source frames to use (default: to the end)")
    t.add_argument("--audio-start", type=float, default=0.0, metavar="SEC", help="audio time heard at output time 0 (negative: leading silence)")
    t.add_argument("--duration", type=float, metavar="SEC", help="output length (default: the audio's, from --audio-start)")
    p.add_argument("--progress", choices=("bar", "json", "none"), default="bar", help="tqdm bars (default), JSON lines on stdout, or nothing")
    return p


class _Bars:
    """One tqdm bar per stage, on stderr."""

    def __init__(self):
        from tqdm import tqdm

        self._tqdm = tqdm
        self.bars: dict[str, object] = {}

    def __call__(self, stage: str, done: int, total: int) -> None:
        bar = self.bars.get(stage)
        if bar is None:
            bar = self.bars[stage] = self._tqdm(total=total, desc=STAGE_LABELS.get(stage, stage), unit="frame" if stage != "audio" else "step", leave=True)
        bar.total = total
        bar.update(done - bar.n)

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()


def _json_progress(stage: str, done: int, total: int) -> None:
    print(json.dumps({"stage": stage, "done": int(done), "total": int(total)}), flush=True)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .pipeline import LipSyncRequest, run

    req = LipSyncRequest(
        face=args.face, audio=args.audio, checkpoint=args.checkpoint, out=args.out, detector=args.detector,
        detector_weights=args.detector_weights, box=tuple(args.box) if args.box else None, pads=tuple(args.pads),
        smooth=not args.no_smooth, face_at=tuple(args.face_at) if args.face_at else None, blend=args.blend, batch_size=args.batch_size, device=args.device,
        precision=args.precision, fps=args.fps, start_frame=args.start_frame, frames=args.frames,
        audio_start=args.audio_start, duration=args.duration, cache=not args.no_cache, cache_dir=args.cache_dir,
        crf=args.crf,
    )
    bars = _Bars() if args.progress == "bar" else None
    progress = bars if bars is not None else _json_progress if args.progress == "json" else None
    t0 = time.perf_counter()
    try:
        result = run(req, progress=progress)
    except KeyboardInterrupt:
        print("error: cancelled; no output was written", file=sys.stderr)
        return 130
    except Cancelled:
        print("error: cancelled; no output was written", file=sys.stderr)
        return 130
    except Wav2LipError as e:
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        return 1
    finally:
        if bars is not None:
            bars.close()
    if args.progress == "json":
        print(json.dumps({"stage": "done", "out": result.out, "frames": result.frames,
                          "seconds": round(time.perf_counter() - t0, 3), "cache_hit": result.cache_hit,
                          "frames_with_face": result.frames_with_face}), flush=True)
    elif args.progress == "bar":
        cache = " (face boxes from cache)" if result.cache_hit else ""
        print(f"wrote {result.out}: {result.frames} frames at {result.fps:g} fps, {result.duration:.2f} s, "
              f"{result.seconds:.1f} s on {result.device}/{result.precision}{cache}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
