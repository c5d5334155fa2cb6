"""The request building that the one-shot CLI, `serve` and `batch` share: the argument parser, a
job's arguments checked as serve takes them, parsed arguments as the pipeline's LipSyncRequest,
and a result as the done event. Nothing here imports torch, numpy or OpenCV until make_request
(the pipeline), so `--help` and argument errors answer at once.
"""

from __future__ import annotations

import argparse
import json
import math

from .. import __version__, protocol as P
from ..errors import Wav2LipError


class BadJob(Exception):
    """A job's arguments the engine refuses before running it (one line for the error event)."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="wav2lip", description="Lip-sync a face video (or still image) to an audio file with Wav2Lip.",
                                epilog=f"`wav2lip {P.SERVE_COMMAND}` starts the warm engine: jobs with these arguments as JSON lines on stdin. "
                                       f"`wav2lip {P.BATCH_COMMAND} JOBS` runs a JSON-lines file of jobs (see `wav2lip {P.BATCH_COMMAND} --help`).")
    p.add_argument(P.OPT_FACE, required=True, help="video or still image of the speaker")
    p.add_argument(P.OPT_AUDIO, help=f"driving audio (wav/mp3/flac or a video's sound); not needed with {P.OPT_SPEAKER}")
    p.add_argument(P.OPT_CHECKPOINT, required=True, help="wav2lip.pth or wav2lip_gan.pth")
    p.add_argument(P.OPT_OUT, required=True, help="output .mp4 (H.264 + AAC); never one of the inputs")
    d = p.add_argument_group("face detection")
    d.add_argument(P.OPT_DETECTOR, choices=P.names(P.DETECTORS), default=P.DETECTOR_AUTO,
                   help="auto (default): BlazeFace when its weights are found, else OpenCV's Haar cascade")
    d.add_argument(P.OPT_DETECTOR_WEIGHTS, metavar="PATH", help="detector weights (.pth; BlazeFace anchors .npy beside it)")
    d.add_argument(P.OPT_BOX, type=int, nargs=4, metavar=("TOP", "BOTTOM", "LEFT", "RIGHT"), help="fixed face box: no detection, no padding")
    d.add_argument("--pads", type=int, nargs=4, metavar=("TOP", "BOTTOM", "LEFT", "RIGHT"), default=[0, 10, 0, 0])
    d.add_argument("--no-smooth", action="store_true", help="do not smooth face boxes over time")
    w = p.add_argument_group("who speaks")
    w.add_argument(P.OPT_FACE_AT, nargs="+", metavar="X Y | auto",
                   help=f"with several faces: follow the person at this clip pixel at {P.OPT_FACE_TIME} (through cuts, by "
                        f"identity with the identity extra); {P.FACE_AT_AUTO}: per shot, the face whose mouth follows the "
                        f"audio best; default: the largest face of each shot. `wav2lip {P.FACES_COMMAND} VIDEO --time SEC` lists the pixels")
    w.add_argument(P.OPT_FACE_TIME, type=float, default=0.0, metavar="SEC", help=f"clip time at which {P.OPT_FACE_AT} (and {P.OPT_SPEAKER}) point (default 0)")
    w.add_argument(P.OPT_SPEAKER, nargs="+", action="append", metavar="X Y AUDIO[@SEC] [FACE_TIME [FROM TO]]",
                   help="repeatable: the person at clip pixel X Y is driven by AUDIO, heard from SEC seconds into the output "
                        f"(default 0); FACE_TIME: when that pixel is on them (default {P.OPT_FACE_TIME}); FROM TO: the output "
                        f"seconds it is heard in (default: wherever it plays). The output's sound is the audios mixed, or {P.OPT_OUT_AUDIO}")
    w.add_argument(P.OPT_OUT_AUDIO, metavar="FILE", help=f"with {P.OPT_SPEAKER}: the output's sound instead of the speakers' mix")
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
    q.add_argument(P.OPT_SYNC_OFFSET, type=sync_offset_value, default=0.0, metavar="FRAMES",
                   help="shift the audio that drives each frame, in frames (fractions allowed; negative: mouth earlier); "
                        f"{P.SYNC_OFFSET_AUTO}: measure a probe stretch and correct (within ±{P.SYNC_OFFSET_AUTO_MAX:g})")
    q.add_argument(P.OPT_NO_METER, action="store_true",
                   help="do not measure the output's lip sync (the sync meter; it costs a few %% of the sync)")
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


def caller_mismatch_message(caller_protocol: object) -> str:
    """What the engine says to a caller speaking another version."""
    return (f"this engine speaks protocol {P.PROTOCOL_VERSION}, the caller {caller_protocol}: "
            "the add-on and the engine come from different versions; re-run install.py from the same download")


def make_request(args: argparse.Namespace):
    """The pipeline's LipSyncRequest for parsed arguments (imports the pipeline)."""
    from ..sync.pipeline import LipSyncRequest

    return LipSyncRequest(
        face=args.face, audio=args.audio or "", checkpoint=args.checkpoint, out=args.out, detector=args.detector,
        detector_weights=args.detector_weights, box=tuple(args.box) if args.box else None, pads=tuple(args.pads),
        smooth=not args.no_smooth, blend=args.blend,
        batch_size=args.batch_size, device=args.device, precision=args.precision, runtime=args.runtime, fps=args.fps,
        start_frame=args.start_frame, frames=args.frames,
        source_times=_load_source_times(args.source_times) if args.source_times else None,
        audio_start=args.audio_start, audible=tuple(args.audible) if args.audible else None, duration=args.duration,
        cache=not args.no_cache, cache_dir=args.cache_dir, crf=args.crf, encoder=args.encoder, preset=args.preset,
        silence=args.silence, enhance=args.enhance, enhance_fidelity=args.enhance_fidelity, align=args.align,
        **meter_fields(args), **who_fields(args),
    )


def done_event(result, seconds: float, job: str | None = None, warm: bool | None = None) -> P.Done:
    """The done event for a pipeline result (the CLI's; serve's names the job and says `warm`)."""
    return P.Done(job=job, out=result.out, frames=result.frames, seconds=round(seconds, 3),
                  cache_hit=result.cache_hit, frames_with_face=result.frames_with_face, detector=result.detector,
                  warm=warm, **done_meter_fields(result))


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


def parse_job(args: list[str], protocol: object = None) -> argparse.Namespace:
    """A serve or batch job's arguments through the CLI's own parser, and the caller's protocol
    (the request's, or `--protocol` in them) checked; BadJob instead of exiting."""
    return parse_strict(build_parser(), join_negative_values(args), protocol)


def parse_strict(parser: argparse.ArgumentParser, args: list[str], protocol: object = None) -> argparse.Namespace:
    """`args` through `parser` as a job's (serve's jobs and fetches): BadJob instead of exiting,
    and the caller's protocol (the request's, or `--protocol` in them) checked."""

    def refuse(message: str):
        raise BadJob(f"bad job arguments: {message}")

    def no_exit(status: int = 0, message: str | None = None):
        raise BadJob("--help and --version are not jobs")

    parser.error = refuse  # type: ignore[method-assign]
    parser.exit = no_exit  # type: ignore[method-assign]
    parsed = parser.parse_args(args)
    for caller in (protocol, getattr(parsed, "protocol", None)):
        if caller is not None and caller != P.PROTOCOL_VERSION:
            raise BadJob(caller_mismatch_message(caller))
    return parsed


# --- the sync meter's options and fields (quality/meter_live.py, sync/autooffset.py) ------------

def sync_offset_value(text: str) -> float | str:
    """--sync-offset's value: a number of frames, or `auto`."""
    if text.strip().lower() == P.SYNC_OFFSET_AUTO:
        return P.SYNC_OFFSET_AUTO
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is neither a number of frames nor {P.SYNC_OFFSET_AUTO}") from None


def meter_fields(args: argparse.Namespace) -> dict:
    """The LipSyncRequest fields of --sync-offset (a number or auto) and --no-meter."""
    auto = args.sync_offset == P.SYNC_OFFSET_AUTO
    return {"sync_offset": 0.0 if auto else args.sync_offset, "sync_offset_auto": auto, "meter": not args.no_meter}


def done_meter_fields(result) -> dict:
    """The done event's sync meter keys for a LipSyncResult (none without a reading)."""
    if result.sync_verdict is None:
        return {"sync_offset": result.sync_offset if result.sync_offset else None}
    return {"sync_offset_measured": result.sync_offset_measured, "sync_confidence": result.sync_confidence,
            "sync_verdict": result.sync_verdict, "sync_offset": result.sync_offset}


def sync_line(result) -> str | None:
    """The CLI's one line about the output's sync, e.g. "sync: +0.30 frames (in sync, confidence
    0.71)" or "sync: no sync found (confidence 0.12)"; None without a reading."""
    if result.sync_verdict is None:
        return None
    from ..quality.meter import reading_text  # (after a run: numpy is loaded by then)

    return "sync: " + reading_text(result.sync_offset_measured, result.sync_verdict, result.sync_confidence)


# --- who speaks (sync/who.py, sync/speakers.py, sync/autoface.py) ---------------------------

def who_fields(args: argparse.Namespace) -> dict:
    """The LipSyncRequest fields of --face-at (X Y or auto), --face-time, --speaker and
    --out-audio; Wav2LipError with one line for a malformed one."""
    from ..sync.speakers import parse_speaker

    face_at, auto = None, False
    if args.face_at:
        if [v.lower() for v in args.face_at] == [P.FACE_AT_AUTO]:
            auto = True
        else:
            try:
                x, y = (int(v) for v in args.face_at)
            except ValueError:
                raise Wav2LipError(f"{P.OPT_FACE_AT} takes X Y (clip pixels) or {P.FACE_AT_AUTO}, "
                                   f"got {' '.join(args.face_at)!r}") from None
            face_at = (x, y)
    speakers = tuple(parse_speaker(v) for v in (args.speaker or []))
    if not speakers and not args.audio:
        raise Wav2LipError(f"give the driving audio with {P.OPT_AUDIO} FILE (or one {P.OPT_SPEAKER} per face)")
    if speakers and args.audio:
        raise Wav2LipError(f"with {P.OPT_SPEAKER} each face has its own audio: leave out {P.OPT_AUDIO} "
                           f"({P.OPT_OUT_AUDIO} FILE sets the output's sound)")
    if args.out_audio and not speakers:
        raise Wav2LipError(f"{P.OPT_OUT_AUDIO} goes with {P.OPT_SPEAKER}; without it {P.OPT_AUDIO} is the output's sound")
    return {"face_at": face_at, "face_auto": auto, "face_time": args.face_time, "speakers": speakers,
            "out_audio": args.out_audio}
