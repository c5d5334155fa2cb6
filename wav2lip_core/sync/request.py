"""What a lip-sync pass is asked (`LipSyncRequest`), what it gives back (`LipSyncResult`), and the
request's check before any slow work (`check_request`).

The types live apart from pipeline.py so that the steps below it (plan, stages) never need the
entry point: each takes the request's fields it reads, and only pipeline.run holds a request.
`wav2lip_core.pipeline` and `wav2lip_core.sync.pipeline` export both types, as the README
documents.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from .. import protocol
from ..errors import AudioError, MediaError, Wav2LipError
from ..faces import landmarks
from ..media.encode import check_output
from .blend import BLENDS
from .speakers import Speaker, check_speakers

__all__ = ["LipSyncRequest", "LipSyncResult", "check_request"]


@dataclass
class LipSyncRequest:
    face: str  # video or still image of the speaker
    audio: str  # the driving audio (any format PyAV reads)
    checkpoint: str  # wav2lip.pth / wav2lip_gan.pth
    out: str  # .mp4 to write (never one of the inputs)
    detector: str = protocol.DETECTOR_AUTO  # see protocol.DETECTORS
    detector_weights: str | None = None
    box: tuple[int, int, int, int] | None = None  # TOP BOTTOM LEFT RIGHT: no detection
    pads: tuple[int, int, int, int] = (0, 10, 0, 0)
    smooth: bool = True
    face_at: tuple[int, int] | None = None  # (x, y) on the face to follow; None: the largest
    face_time: float = 0.0  # clip seconds at which face_at (and speakers without their own) point
    face_auto: bool = False  # --face-at auto: per shot, the face whose mouth follows the audio best
    # --speaker: several faces, each driven by its own audio (speakers.py); `audio` is then the
    # output's sound (out_audio, or the engine's mix of the speakers' audios) and may be "".
    speakers: tuple[Speaker, ...] = ()
    out_audio: str | None = None
    blend: str = "feather"
    batch_size: int | None = None  # None: chosen for the device
    device: str = "auto"
    precision: str = "auto"
    runtime: str = "auto"  # see protocol.RUNTIMES: OpenVINO on a CPU, torch on a GPU
    fps: float | None = None  # output rate; for a video: one source frame per output frame at this rate
    start_frame: int = 0  # first source frame used
    frames: int | None = None  # number of source frames used (None: to the end)
    # Per output frame, the clip time (s from its first frame) whose frame is shown, as an editor
    # shows a clip by time; past the clip's end the last frame is held. Overrides start_frame/frames.
    source_times: tuple[float, ...] | None = None
    audio_start: float = 0.0  # audio-file time heard at output time 0 (negative: leading silence)
    audible: tuple[float, float] | None = None  # output seconds where the sound plays; silence elsewhere
    duration: float | None = None  # output seconds (None: the audio's length from audio_start)
    cache: bool = True
    cache_dir: str | None = None
    crf: int = protocol.CRF_DEFAULT
    encoder: str = protocol.ENCODER_AUTO  # see protocol.ENCODERS: NVENC on CUDA when it works, else x264
    preset: str | None = None  # x264 preset (protocol.PRESETS); None: the measured default
    silence: str = protocol.SILENCE_HOLD  # protocol.SILENCES: keep the source mouth in silences, or not
    sync_offset: float = 0.0  # frames: shift of the audio window driving each frame (negative: mouth earlier)
    enhance: str | None = None  # face restorer weights (spandrel: GFPGAN, RestoreFormer, CodeFormer)
    enhance_fidelity: float = protocol.ENHANCE_FIDELITY_DEFAULT  # CodeFormer's w
    align: str = protocol.ALIGN_AUTO  # protocol.ALIGNS: level tilted heads when landmarks are available
    # The sync meter (quality.meter_live): measure the output's lip lag as it is made (--no-meter: off).
    meter: bool = True
    # --sync-offset auto: sync a probe stretch first, measure it, and use the correction instead of
    # sync_offset (sync/autooffset.py).
    sync_offset_auto: bool = False


@dataclass
class LipSyncResult:
    out: str
    frames: int  # output frames
    fps: float
    duration: float  # output seconds
    frames_with_face: int
    detected_frames: int  # frames the detector ran on (0 on a cache hit or with --box)
    cache_hit: bool
    device: str
    precision: str
    batch_size: int  # the batch size the run ended with (smaller after a GPU out-of-memory)
    seconds: float  # wall clock, end to end
    detector: str = ""  # what ran ("box" for a fixed box; "auto" resolved)
    runtime: str = ""  # what ran the model ("torch" or "openvino")
    warm: bool = False  # the model was already loaded (given, or kept by a long-lived engine)
    notes: list[str] = field(default_factory=list)
    stage_seconds: dict[str, float] = field(default_factory=dict)
    # The sync meter's reading of the output (None with meter off): frames the mouth comes later
    # (+) than its sound (None when no sync was found), its confidence 0-1 and its verdict.
    sync_offset_measured: float | None = None
    sync_confidence: float | None = None
    sync_verdict: str | None = None
    sync_offset: float = 0.0  # the --sync-offset the output was made with (auto: the correction)


def check_request(req: LipSyncRequest) -> None:
    """Wav2LipError (or its AudioError/MediaError) with one line for the first thing wrong in
    `req`: missing inputs, an output that would overwrite one, options out of range. Run before
    detection, so a mistake costs seconds, not minutes."""
    inputs = [("face video/image", req.face, MediaError)]
    if req.speakers:
        inputs += [("--out-audio", req.out_audio, AudioError)] if req.out_audio else []
    else:
        inputs.append(("audio", req.audio, AudioError))
    for what, p, error in inputs:
        if not Path(p).expanduser().is_file():
            raise error(f"{what} file not found: {p}. Check the path.")
    sources = [req.face, req.audio, req.out_audio, *(s.audio for s in req.speakers)]
    check_output(req.out, tuple(p for p in sources if p))  # fail before detection, not minutes later
    check_who(req)
    if req.blend not in BLENDS:
        raise Wav2LipError(f"unknown blend {req.blend!r}: use one of {', '.join(BLENDS)}")
    if req.align not in protocol.names(protocol.ALIGNS):
        raise Wav2LipError(f"unknown --align {req.align!r}: use one of {', '.join(protocol.names(protocol.ALIGNS))}")
    if req.blend == "mouth":  # at request time, not after detection
        landmarks.require("--blend mouth")
    if not (math.isfinite(req.enhance_fidelity) and 0.0 <= req.enhance_fidelity <= 1.0):
        raise Wav2LipError(f"--enhance-fidelity must be between 0 and 1, got {req.enhance_fidelity}")
    if req.batch_size is not None and req.batch_size < 1:
        raise Wav2LipError(f"batch size must be at least 1, got {req.batch_size}")
    if req.fps is not None and not (0 < req.fps <= 1000):
        raise Wav2LipError(f"--fps must be between 0 and 1000, got {req.fps}")
    if req.duration is not None and not req.duration > 0:
        raise Wav2LipError(f"--duration must be positive, got {req.duration}")
    if req.start_frame < 0 or (req.frames is not None and req.frames < 1):
        raise Wav2LipError("--start-frame must be >= 0 and --frames >= 1")
    if req.audible is not None and not (len(req.audible) == 2 and all(math.isfinite(t) for t in req.audible)
                                        and req.audible[0] < req.audible[1]):
        raise Wav2LipError(f"--audible needs two output times FROM < TO in seconds, got {req.audible}")
    if req.silence not in protocol.names(protocol.SILENCES):
        raise Wav2LipError(f"unknown --silence {req.silence!r}: use one of {', '.join(protocol.names(protocol.SILENCES))}")
    if not (math.isfinite(req.sync_offset) and abs(req.sync_offset) <= protocol.SYNC_OFFSET_MAX):
        raise Wav2LipError(f"--sync-offset must be a number of frames within ±{protocol.SYNC_OFFSET_MAX:g}, "
                           f"got {req.sync_offset}")
    if req.source_times is not None:
        if not req.source_times or not all(math.isfinite(t) for t in req.source_times):
            raise Wav2LipError("--source-times needs a non-empty list of finite clip times in seconds")
        if req.fps is None:
            raise Wav2LipError("--source-times needs --fps (the output frame rate)")


def check_who(req: LipSyncRequest) -> None:
    """The options choosing whom to sync agree with each other and with the other options."""
    if req.speakers and (req.face_at is not None or req.face_auto):
        raise Wav2LipError(f"{protocol.OPT_SPEAKER} gives each face its own pixel: leave out {protocol.OPT_FACE_AT}")
    if req.speakers and req.box is not None:
        raise Wav2LipError(f"{protocol.OPT_SPEAKER} follows detected faces: leave out {protocol.OPT_BOX}")
    if req.speakers and req.sync_offset_auto:
        raise Wav2LipError(f"{protocol.OPT_SYNC_OFFSET} {protocol.SYNC_OFFSET_AUTO} measures one face: "
                           f"give a number of frames with {protocol.OPT_SPEAKER}")
    if req.face_auto and req.box is not None:
        raise Wav2LipError(f"{protocol.OPT_FACE_AT} {protocol.FACE_AT_AUTO} chooses among detected faces: leave out {protocol.OPT_BOX}")
    if not math.isfinite(req.face_time) or req.face_time < 0:
        raise Wav2LipError(f"{protocol.OPT_FACE_TIME} is clip seconds >= 0, got {req.face_time}")
    check_speakers(req.speakers)
