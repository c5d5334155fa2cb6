"""Learn a clip's frames before decoding them: `probe_video` gives the exact frame count, every
frame's presentation time, where the keyframes are, the rotation and the colour description.

MP4/MOV and Matroska/WebM index every packet's timestamp, so for them one demux pass (no
decoding) is enough. Other containers (MPEG-TS camcorder clips, AVI, raw .h264 streams) and
files whose timestamps are missing or repeated are decoded once instead: the frames the decoder
really outputs are the frame list, identified by their timestamps when those are usable and by
decode order when not (decode.py then restarts from the beginning for every backward jump,
since seeking such files lands anywhere). Still images are a one-frame clip.
"""

from __future__ import annotations

import bisect
import os
from dataclasses import dataclass, field
from fractions import Fraction

import av
import cv2
import numpy as np

from .colour import RGB_SOURCE, Colour
from ..errors import MediaError, reason

__all__ = ["VideoInfo", "probe_video", "open_container", "load_image", "fail"]

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".jp2"}

# Spread (longest minus shortest frame interval, in time-base ticks) still called constant-rate:
# a millisecond time base stores 30 fps as 33/34/33 ticks, which is constant-rate footage.
_CFR_SPREAD_TICKS = 2

# Containers whose index gives every packet's presentation time: demuxing is enough to list the
# frames. Anything else is decoded once at probe time.
_INDEXED_FORMATS = {"mov", "mp4", "matroska", "webm"}


@dataclass(frozen=True)
class VideoInfo:
    path: str
    width: int  # display size after rotation metadata is applied
    height: int
    fps: float
    frame_count: int
    frame_times: tuple[float, ...]
    duration: float
    variable_frame_rate: bool
    is_image: bool
    rotation: int  # degrees counter-clockwise (FFmpeg's display-matrix convention); frames come back upright
    # How the source's YUV maps to RGB; the writer encodes with the same (see colour.py).
    colour: Colour = RGB_SOURCE
    # Decoder bookkeeping: pts of each frame in presentation order and the indices of keyframes
    # (seek targets); with `by_order`, frames are identified by decode order from the start
    # (timestamps missing or repeated) and `pts` is empty. Not part of the public contract.
    pts: tuple[int, ...] = field(default=(), repr=False, compare=False)
    keyframes: tuple[int, ...] = field(default=(0,), repr=False, compare=False)
    by_order: bool = field(default=False, repr=False, compare=False)


def fail(path: str, what: str) -> MediaError:
    return MediaError(f"{path}: {what}")


def open_container(path: str) -> av.container.InputContainer:
    try:
        return av.open(path, "r")
    except av.error.FileNotFoundError:
        raise fail(path, "file not found; check the path") from None
    except (av.error.FFmpegError, OSError, UnicodeDecodeError) as exc:
        raise fail(path, f"not a readable video or image ({reason(exc)}); use an mp4/mov/mkv video or a jpg/png image") from None


def _is_image_format(container) -> bool:
    names = set(container.format.name.split(","))
    return any(n == "image2" or n.endswith("_pipe") for n in names)


def probe_video(path, *, image_fps: float = 25.0) -> VideoInfo:
    """Describe a video or still image. MP4/MOV/MKV/WebM: demuxes packets and decodes the first
    frame; other containers and unusable timestamps: decodes the stream once."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise fail(path, "file not found; check the path")
    if os.path.splitext(path)[1].lower() in IMAGE_EXTENSIONS:
        return _probe_image(path, image_fps)
    with open_container(path) as container:
        if not container.streams.video:
            kinds = sorted({s.type for s in container.streams}) or ["no streams"]
            raise fail(path, f"has no video stream (only {', '.join(kinds)}); give a video or image file as the face input")
        if _is_image_format(container):
            return _probe_image(path, image_fps)
        return _probe_stream(path, container, container.streams.video[0])


def _probe_image(path: str, image_fps: float) -> VideoInfo:
    image = load_image(path)
    h, w = image.shape[:2]
    fps = float(image_fps)
    return VideoInfo(path=path, width=w, height=h, fps=fps, frame_count=1, frame_times=(0.0,),
                     duration=1.0 / fps, variable_frame_rate=False, is_image=True, rotation=0,
                     pts=(0,), keyframes=(0,))


def load_image(path: str) -> np.ndarray:
    # imdecode from bytes instead of imread: imread cannot open non-ASCII paths on Windows.
    # IMREAD_COLOR applies EXIF orientation, so phone photos come back upright.
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as exc:
        raise fail(path, f"cannot read the image ({reason(exc)})") from None
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if image is None:
        raise fail(path, "not a readable image; re-export it as png or jpg")
    return image


def _demux_timestamps(path: str, container, stream) -> tuple[list[int | None], list[int | None], int]:
    """Packet pts (decode order; None where the packet has none), keyframe pts and the last
    shown packet's duration, without decoding."""
    pts, key_pts, last_duration, latest = [], [], 0, None
    try:
        for packet in container.demux(stream):
            if packet.size == 0 or packet.is_discard:  # flush packet / edit-list-trimmed packet
                continue
            stamp = packet.pts
            pts.append(stamp)
            if packet.is_keyframe:
                key_pts.append(stamp)
            if stamp is not None and (latest is None or stamp >= latest):  # the last frame shown, not the last decoded
                latest, last_duration = stamp, packet.duration or 0
    except av.error.FFmpegError as exc:
        raise fail(path, f"the video is damaged ({reason(exc)}); re-export or re-download it") from None
    return pts, key_pts, last_duration


@dataclass
class _Decoded:
    """What decoding from the start showed: the first frame's geometry and colours, and (for a
    full scan) every output frame's pts, keyframe flag and the last frame's duration."""

    rotation: int
    width: int
    height: int
    colour: Colour
    pts: list = field(default_factory=list)
    keys: list = field(default_factory=list)
    last_duration: int = 0


def _decode_from_start(path: str, *, scan: bool) -> _Decoded:
    # A fresh open, not a seek to 0: raw streams cannot seek and MPEG-TS seeks land anywhere.
    with open_container(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        result = None
        try:
            for frame in container.decode(stream):
                if result is None:
                    rotation = _normalise_rotation(frame.rotation)
                    w, h = frame.width, frame.height
                    if rotation in (90, 270):
                        w, h = h, w
                    result = _Decoded(rotation, w, h, Colour.of_frame(frame))
                result.pts.append(frame.pts)
                result.keys.append(bool(frame.key_frame))
                result.last_duration = int(getattr(frame, "duration", 0) or 0)
                if not scan:
                    break
        except av.error.FFmpegError as exc:
            raise fail(path, f"the video cannot be decoded ({reason(exc)}); re-export it as H.264 mp4") from None
    if result is None:
        raise fail(path, "no frame could be decoded; re-export the video")
    return result


def _usable(pts: list) -> bool:
    """Timestamps that can identify frames: all present and distinct."""
    return bool(pts) and None not in pts and len(set(pts)) == len(pts)


def _probe_stream(path: str, container, stream) -> VideoInfo:
    tb = stream.time_base or Fraction(1, 90000)
    nominal = stream.guessed_rate or stream.average_rate or stream.base_rate
    indexed = bool(_INDEXED_FORMATS & set(container.format.name.split(",")))
    if indexed:
        raw_pts, key_pts, last_duration = _demux_timestamps(path, container, stream)
        if not raw_pts:
            raise fail(path, "the video stream has no frames; re-export the video")
        first = _decode_from_start(path, scan=False)
        # The decoder must start at the first listed frame (it drops undecodable leading
        # frames); otherwise the packet list is not the frame list.
        if _usable(raw_pts) and first.pts[0] == min(raw_pts):
            pts = sorted(raw_pts)
            fps, duration, times, variable = _timeline(pts, tb, nominal, last_duration)
            index_of = {p: i for i, p in enumerate(pts)}
            keyframes = tuple(sorted({index_of[k] for k in key_pts if k in index_of} | {0}))
            return _info(path, first, fps, duration, times, variable, pts, keyframes, by_order=False)
    scan = _decode_from_start(path, scan=True)
    if _usable(scan.pts) and all(b > a for a, b in zip(scan.pts, scan.pts[1:])):
        pts = scan.pts
        fps, duration, times, variable = _timeline(pts, tb, nominal, scan.last_duration)
        keyframes = tuple(sorted({i for i, key in enumerate(scan.keys) if key} | {0}))
        return _info(path, scan, fps, duration, times, variable, pts, keyframes, by_order=False)
    # Timestamps missing (raw streams), repeated or out of order (AVI with B-frames): frames are
    # what the decoder outputs, in order, at the stream's nominal rate.
    n = len(scan.pts)
    stamps = sorted(p for p in scan.pts if p is not None)
    measured = (n - 1) / float((stamps[-1] - stamps[0]) * tb) if len(stamps) == n > 1 and stamps[-1] > stamps[0] else None
    fps = _pick_cfr_rate(nominal if nominal and 1 <= float(nominal) <= 300 else None, measured)
    times = tuple(i / fps for i in range(n))
    return _info(path, scan, fps, n / fps, times, False, (), (0,), by_order=True)


def _timeline(pts: list[int], tb, nominal, last_duration: int) -> tuple[float, float, tuple[float, ...], bool]:
    """(fps, duration, frame times from 0, variable) of frames with these sorted pts."""
    n = len(pts)
    deltas = np.diff(np.asarray(pts, dtype=np.int64))
    variable = bool(deltas.size) and int(deltas.max() - deltas.min()) > _CFR_SPREAD_TICKS
    if variable:
        tail = last_duration if last_duration > 0 else int(np.median(deltas))
        duration = float((pts[-1] - pts[0] + tail) * tb)
        return n / duration, duration, tuple(float((p - pts[0]) * tb) for p in pts), True
    measured = 1.0 / float(deltas.mean() * tb) if deltas.size else None
    fps = _pick_cfr_rate(nominal, measured)
    return fps, n / fps, tuple(i / fps for i in range(n)), False


def _info(path, decoded: _Decoded, fps, duration, times, variable, pts, keyframes, *, by_order) -> VideoInfo:
    return VideoInfo(path=path, width=decoded.width, height=decoded.height, fps=fps, frame_count=len(times),
                     frame_times=times, duration=duration, variable_frame_rate=variable, is_image=False,
                     rotation=decoded.rotation, colour=decoded.colour, pts=tuple(pts), keyframes=keyframes,
                     by_order=by_order)


def _pick_cfr_rate(nominal, measured: float | None) -> float:
    # Prefer the container's exact rational (29.97 stays 30000/1001) when it agrees with the
    # packet spacing; the header can lie (e.g. a 1000 fps "timebase" rate), the packets cannot.
    if nominal and (measured is None or abs(float(nominal) - measured) <= 0.01 * measured):
        return float(nominal)
    if measured:
        return measured
    return 25.0


def _normalise_rotation(value) -> int:
    try:
        degrees = int(round(float(value or 0) / 90.0)) * 90
    except (TypeError, ValueError):
        return 0
    return degrees % 360


# Clip times come from another program's arithmetic (an editor's frame -> seconds); a frame that
# starts within a millisecond after the asked time counts as already on screen.
_TIME_TOLERANCE = 1e-3


def frame_at(info: VideoInfo, t: float) -> int:
    """The clip frame on screen at `t` seconds from the first frame: the last one that started
    by then; the first before the start, the last (held) after the end."""
    i = bisect.bisect_right(info.frame_times, t + _TIME_TOLERANCE) - 1
    return min(max(i, 0), info.frame_count - 1)
