"""One lip-sync job as plain data (`SyncRequest`: what to run and where the result goes) and the
engine's command line for it (the core's CLI options, protocol.py's names). No bpy here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional, Tuple

from .wire import protocol


@dataclass(frozen=True)
class Speaker:
    """A face picked in the clip (Pick Face) and the sound that drives it."""

    x: int  # clip pixel, x right
    y: int  # clip pixel, y down
    face_time: float  # clip seconds of the frame it was picked on
    audio_path: str = ""
    audio_at: float = 0.0  # output seconds where the sound file's time 0 is heard (may be negative)
    # Output seconds the sound strip plays in, when its trims silence part of its file there.
    heard: Optional[Tuple[float, float]] = None


@dataclass(frozen=True)
class SyncRequest:
    """The job, as plain data: what to run and where to put the result."""

    source_name: str
    source_channel: int
    face_path: str
    is_image: bool
    scene_fps: float
    insert_frame: int  # V0
    used_frames: int  # V1 - V0
    start_frame: Optional[int]  # clip frame index at V0 (None for a still image)
    audio_path: str
    audio_start: float  # file time heard at V0 (seconds)
    duration: float  # (V1 - V0) / scene_fps
    sound_name: str = ""
    audible: Optional[Tuple[float, float]] = None  # output seconds the sound plays (trimmed strip)
    notes: Tuple[str, ...] = field(default_factory=tuple)
    # Clip time (s from the clip's first frame) Blender shows at V0, V0 + 1, ...; None for an
    # image, or a movie whose rate Blender does not report (then start_frame/used_frames).
    source_times: Optional[Tuple[float, ...]] = None
    # Picked faces: one follows that face with the usual --audio; two or more each get their own
    # sound (--speaker) and the output's sound is the engine's mix of them.
    speakers: Tuple[Speaker, ...] = ()

    def engine_args(
        self,
        *,
        checkpoint: str,
        out: str,
        source_times_path: Optional[str] = None,
        detector: str = "",
        detector_weights: str = "",
        box: Optional[Tuple[int, int, int, int]] = None,
        device: str = "auto",
        precision: str = "",
        extra: Tuple[str, ...] = (),
    ) -> List[str]:
        """Arguments after `python -m wav2lip_core` (see the core's CLI). With source times, the
        caller writes them (`source_times_json`) to `source_times_path`."""
        P = protocol
        many = len(self.speakers) > 1  # (their own sounds: no --audio, --audio-start, --audible)
        args = [P.OPT_FACE, self.face_path]
        if not many:
            args += [P.OPT_AUDIO, self.audio_path]
        args += [
            P.OPT_CHECKPOINT, checkpoint,
            P.OPT_OUT, out,
            P.OPT_FPS, _num(self.scene_fps),
        ]
        if not many:
            args += [P.OPT_AUDIO_START, _num(self.audio_start)]
        args += [
            P.OPT_DURATION, _num(self.duration),
            P.OPT_PROGRESS, P.PROGRESS_JSON,
            P.OPT_PROTOCOL, str(P.PROTOCOL_VERSION),
        ]
        if self.audible is not None and not many:
            args += [P.OPT_AUDIBLE, _num(self.audible[0]), _num(self.audible[1])]
        args += self.speaker_args()
        if not self.is_image:
            if self.source_times is not None:
                if not source_times_path:
                    raise ValueError("engine_args: this request has source times; give source_times_path")
                args += [P.OPT_SOURCE_TIMES, source_times_path]
            elif self.start_frame is not None:
                args += [P.OPT_START_FRAME, str(self.start_frame), P.OPT_FRAMES, str(self.used_frames)]
        if box is not None:
            args += [P.OPT_BOX] + [str(int(v)) for v in box]
        elif detector:
            args += [P.OPT_DETECTOR, detector]
            if detector_weights:
                args += [P.OPT_DETECTOR_WEIGHTS, detector_weights]
        if device:
            args += [P.OPT_DEVICE, device]
        if precision:
            args += [P.OPT_PRECISION, precision]
        args += list(extra)
        return args

    def speaker_args(self) -> List[str]:
        """One pick: `--face-at X Y --face-time T`; more: `--speaker X Y AUDIO@SEC T [FROM TO]` each."""
        P = protocol
        if len(self.speakers) == 1:
            k = self.speakers[0]
            return [P.OPT_FACE_AT, str(int(k.x)), str(int(k.y)), P.OPT_FACE_TIME, _num(k.face_time)]
        args: List[str] = []
        for k in self.speakers:
            args += [P.OPT_SPEAKER, str(int(k.x)), str(int(k.y)),
                     f"{k.audio_path}{P.SPEAKER_AT}{_num(k.audio_at)}", _num(k.face_time)]
            if k.heard is not None:
                args += [_num(k.heard[0]), _num(k.heard[1])]
        return args

    def source_times_json(self) -> str:
        return "[" + ", ".join(repr(float(t)) for t in (self.source_times or ())) + "]"


def _num(x: float) -> str:
    """A float for the command line: a round value as a whole number, else its exact digits
    without an exponent (the engine's argparse would take `-3.3e-05` for an option)."""
    r = round(x)
    if abs(x - r) < 1e-12:
        return str(int(r))
    return protocol.plain_number(x)
