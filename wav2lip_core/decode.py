"""Streaming video/image decoding with PyAV.

`probe_video` learns the exact frame count, every frame's presentation time and where the
keyframes are. MP4/MOV and Matroska/WebM index every packet's timestamp, so for them one demux
pass (no decoding) is enough. Other containers (MPEG-TS camcorder clips, AVI, raw .h264 streams)
and files whose timestamps are missing or repeated are decoded once instead: the frames the
decoder really outputs are the frame list, identified by their timestamps when those are usable
and by decode order when not (then every backward jump restarts from the beginning, since
seeking such files lands anywhere).

`read_frames` then serves any schedule of frame indices with bounded memory: forward runs
stream straight through the decoder, descending runs (ping-pong looping) are decoded in chunks
that fit a byte budget and emitted reversed.

Frames are uint8 BGR (H, W, 3) arrays, upright (rotation metadata applied), and each yielded
array is the caller's own (safe to modify in place).
"""

from __future__ import annotations

import bisect
import os
import tempfile
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Iterable, Iterator

import av
import cv2
import numpy as np

from .colour import RGB_SOURCE, Colour, to_bgr
from .errors import MediaError, reason

__all__ = ["VideoInfo", "probe_video", "read_frames", "iter_frames", "DEFAULT_BUFFER_BYTES", "DEFAULT_SPILL_BYTES"]

# Frames of a backward (ping-pong) run held in memory at once. Longer runs go to an unlinked
# temp file, up to DEFAULT_SPILL_BYTES a chunk: RAM stays flat however long the output, and a
# chunk spanning whole GOPs decodes each frame about once instead of re-decoding from the
# keyframe for every small chunk (at 1080p a 250-frame GOP would cost ~25 decodes per frame).
DEFAULT_BUFFER_BYTES = 64 * 1024 * 1024
DEFAULT_SPILL_BYTES = 1024 * 1024 * 1024

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


def _fail(path: str, what: str) -> MediaError:
    return MediaError(f"{path}: {what}")


def _open(path: str) -> av.container.InputContainer:
    try:
        return av.open(path, "r")
    except av.error.FileNotFoundError:
        raise _fail(path, "file not found; check the path") from None
    except (av.error.FFmpegError, OSError, UnicodeDecodeError) as exc:
        raise _fail(path, f"not a readable video or image ({reason(exc)}); use an mp4/mov/mkv video or a jpg/png image") from None


def _is_image_format(container) -> bool:
    names = set(container.format.name.split(","))
    return any(n == "image2" or n.endswith("_pipe") for n in names)


def probe_video(path, *, image_fps: float = 25.0) -> VideoInfo:
    """Describe a video or still image. MP4/MOV/MKV/WebM: demuxes packets and decodes the first
    frame; other containers and unusable timestamps: decodes the stream once."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise _fail(path, "file not found; check the path")
    if os.path.splitext(path)[1].lower() in IMAGE_EXTENSIONS:
        return _probe_image(path, image_fps)
    with _open(path) as container:
        if not container.streams.video:
            kinds = sorted({s.type for s in container.streams}) or ["no streams"]
            raise _fail(path, f"has no video stream (only {', '.join(kinds)}); give a video or image file as the face input")
        if _is_image_format(container):
            return _probe_image(path, image_fps)
        return _probe_stream(path, container, container.streams.video[0])


def _probe_image(path: str, image_fps: float) -> VideoInfo:
    image = _load_image(path)
    h, w = image.shape[:2]
    fps = float(image_fps)
    return VideoInfo(path=path, width=w, height=h, fps=fps, frame_count=1, frame_times=(0.0,),
                     duration=1.0 / fps, variable_frame_rate=False, is_image=True, rotation=0,
                     pts=(0,), keyframes=(0,))


def _load_image(path: str) -> np.ndarray:
    # imdecode from bytes instead of imread: imread cannot open non-ASCII paths on Windows.
    # IMREAD_COLOR applies EXIF orientation, so phone photos come back upright.
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as exc:
        raise _fail(path, f"cannot read the image ({reason(exc)})") from None
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if image is None:
        raise _fail(path, "not a readable image; re-export it as png or jpg")
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
        raise _fail(path, f"the video is damaged ({reason(exc)}); re-export or re-download it") from None
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
    with _open(path) as container:
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
            raise _fail(path, f"the video cannot be decoded ({reason(exc)}); re-export it as H.264 mp4") from None
    if result is None:
        raise _fail(path, "no frame could be decoded; re-export the video")
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
            raise _fail(path, "the video stream has no frames; re-export the video")
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


def _upright(frame: av.VideoFrame, info: VideoInfo) -> np.ndarray:
    bgr = to_bgr(frame, info.colour)
    rotation = info.rotation
    if rotation == 90:  # counter-clockwise, as av_display_rotation_get reports it
        return cv2.rotate(bgr, cv2.ROTATE_90_COUNTERCLOCKWISE)
    if rotation == 180:
        return cv2.rotate(bgr, cv2.ROTATE_180)
    if rotation == 270:
        return cv2.rotate(bgr, cv2.ROTATE_90_CLOCKWISE)
    return bgr


class _Decoder:
    """One open container whose position is tracked by frame index, so the reader can decide
    between continuing forward and seeking back to a keyframe."""

    def __init__(self, info: VideoInfo):
        self.info = info
        self._index_of = {p: i for i, p in enumerate(info.pts)}
        self._container = None
        self._frames: Iterator | None = None
        self._pending: tuple[int, av.VideoFrame] | None = None
        self.next_index = 0  # index of the frame the decoder would output next
        self.seeks = 0  # bookkeeping, so tests can verify the reverse strategy
        self.decoded = 0

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None

    def keyframe_before(self, index: int) -> int:
        keys = self.info.keyframes
        return keys[max(bisect.bisect_right(keys, index) - 1, 0)]

    def decode_range(self, first: int, last: int) -> Iterator[tuple[int, np.ndarray]]:
        """Yield frames first..last (inclusive), seeking only if continuing forward is not possible
        or costs more than restarting at the keyframe before `first`."""
        key = self.keyframe_before(first)
        if not (self._frames is not None and key <= self.next_index <= first):
            self._seek(key)
        retried = False
        expected = first
        while expected <= last:
            index, frame = self._next_frame()
            if index < first:
                continue
            if index != expected:
                if not retried and expected == first:
                    # A seek landed where the decoder cannot show this frame (open GOP,
                    # MPEG-TS); decoding from the very start always can.
                    retried = True
                    self._restart()
                    continue
                raise _fail(self.info.path, f"frame {expected} cannot be decoded (got frame {index}); "
                            "the file is damaged, re-export it")
            expected += 1
            yield index, _upright(frame, self.info)

    def _restart(self) -> None:
        self.close()
        self._container = _open(self.info.path)
        stream = self._container.streams.video[0]
        stream.thread_type = "AUTO"
        self._frames = self._container.decode(stream)
        self._pending = None
        self.next_index = 0

    def _seek(self, key: int) -> None:
        self.seeks += 1
        if key == 0 or self.info.by_order:
            self._restart()
            return
        if self._container is None:
            self._restart()
        stream = self._container.streams.video[0]
        self.next_index = key  # corrected from the first decoded frame's pts
        self._pending = None
        try:
            self._container.seek(self.info.pts[key], stream=stream, backward=True, any_frame=False)
            self._frames = self._container.decode(stream)
            first_index, frame = self._raw_next()
        except (av.error.FFmpegError, MediaError):
            # MPEG-TS and other unindexed files can land past the end or nowhere useful.
            self._restart()
            return
        if first_index > key:
            # The demuxer landed after our keyframe (odd index tables); restart from the top.
            self._restart()
            return
        self._pending = (first_index, frame)

    def _raw_next(self) -> tuple[int, av.VideoFrame]:
        try:
            frame = next(self._frames)
        except StopIteration:
            raise _fail(self.info.path, f"the video ended early at frame {self.next_index} of "
                        f"{self.info.frame_count}; the file is truncated, re-export it") from None
        except av.error.FFmpegError as exc:
            raise _fail(self.info.path, f"decoding failed near frame {self.next_index} ({reason(exc)}); "
                        "the file is damaged, re-export it") from None
        index = None if self.info.by_order else self._index_of.get(frame.pts)
        if index is None:  # identified by decode order
            index = self.next_index
        return index, frame

    def _next_frame(self) -> tuple[int, av.VideoFrame]:
        if self._pending is not None:
            index, frame = self._pending
            self._pending = None
        else:
            index, frame = self._raw_next()
        self.next_index = index + 1
        self.decoded += 1
        return index, frame


class _SpilledRun:
    """A descending run staged in an unlinked temp file and read back in reverse with plain
    file I/O (not mmap: mapped pages would count as the process's resident memory)."""

    def __init__(self, info: VideoInfo, frames: Iterable[tuple[int, np.ndarray]], first: int, last: int):
        self._first, self._n = first, last - first + 1
        self._shape: tuple[int, ...] | None = None
        self._file = tempfile.TemporaryFile(prefix="wav2lip-reverse-")
        try:
            for _, bgr in frames:
                self._shape = bgr.shape
                self._file.write(np.ascontiguousarray(bgr).data)
        except OSError as exc:
            self.close()
            raise _fail(info.path, f"cannot stage frames for backward playback in {tempfile.gettempdir()} "
                        f"({reason(exc)}); free disk space there or set TMPDIR") from None
        except BaseException:
            self.close()
            raise
        self._bytes = int(np.prod(self._shape))

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, k: int) -> tuple[int, np.ndarray]:
        j = self._n - 1 - k  # item k of the reversed run
        buf = bytearray(self._bytes)
        self._file.seek(j * self._bytes)
        self._file.readinto(buf)
        return self._first + j, np.frombuffer(buf, np.uint8).reshape(self._shape)

    def close(self) -> None:
        self._file.close()


def _chunk_frames(info: VideoInfo, budget_bytes: int) -> int:
    frame_bytes = max(info.width * info.height * 3, 1)
    return max(1, int(budget_bytes) // frame_bytes)


def read_frames(info: VideoInfo, indices: Iterable[int], *, max_buffer_bytes: int = DEFAULT_BUFFER_BYTES,
                spill_bytes: int = DEFAULT_SPILL_BYTES, stats: dict | None = None) -> Iterator[tuple[int, np.ndarray]]:
    """Yield (index, bgr) in the order of `indices`, with memory bounded by `max_buffer_bytes`.
    Backward runs longer than that are staged in a temp file of at most `spill_bytes` (0: never;
    then they are decoded in memory-sized chunks).

    `stats`, if given, is filled with `max_held` (most frames in memory at once), `spilled`
    (frames staged on disk), `seeks` and `decoded` so callers and tests can check a schedule."""
    if stats is None:
        stats = {}
    stats.update(max_held=0, spilled=0, seeks=0, decoded=0)
    if info.is_image:
        yield from _read_image(info, indices)
        return
    ram_chunk = _chunk_frames(info, max_buffer_bytes)
    chunk = max(ram_chunk, _chunk_frames(info, spill_bytes)) if spill_bytes > 0 else ram_chunk
    decoder = _Decoder(info)
    try:
        pending = _Peekable(iter(indices))
        last: tuple[int, np.ndarray] | None = None
        for index in pending:
            _check_index(info, index)
            if last is not None and index == last[0]:
                run_items = [last]  # a repeat is served from memory, never re-decoded
            else:
                run = [index]
                while len(run) < chunk and pending.peek() == run[-1] - 1:
                    run.append(next(pending))
                # A descending run is decoded forward over its span and emitted reversed; a
                # single index is the degenerate case.
                if len(run) <= ram_chunk:
                    run_items = list(decoder.decode_range(run[-1], run[0]))[::-1]
                    stats["max_held"] = max(stats["max_held"], len(run_items))
                else:
                    run_items = _SpilledRun(info, decoder.decode_range(run[-1], run[0]), run[-1], run[0])
                    stats["max_held"] = max(stats["max_held"], 1)
                    stats["spilled"] += len(run_items)
                stats["seeks"], stats["decoded"] = decoder.seeks, decoder.decoded
            for k in range(len(run_items) - 1):
                yield run_items[k]
            # Keep the last frame pristine only when the next index repeats it, so a caller
            # that draws into a yielded frame never corrupts a later repeat.
            last = run_items[len(run_items) - 1]
            if isinstance(run_items, _SpilledRun):
                run_items.close()
            del run_items
            yield (last[0], last[1].copy()) if pending.peek() == last[0] else last
    finally:
        decoder.close()


def _check_index(info: VideoInfo, index: int) -> None:
    if not 0 <= index < info.frame_count:
        raise IndexError(f"frame {index} out of range for {info.path} ({info.frame_count} frames)")


def _read_image(info: VideoInfo, indices: Iterable[int]) -> Iterator[tuple[int, np.ndarray]]:
    image = _load_image(info.path)
    for index in indices:
        _check_index(info, index)
        yield index, image.copy()


def iter_frames(info: VideoInfo, start: int = 0, stop: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
    """Forward helper: frames start..stop-1."""
    stop = info.frame_count if stop is None else min(stop, info.frame_count)
    return read_frames(info, range(start, stop))


class _Peekable:
    """Iterator with one item of lookahead; peek() returns None at the end."""

    _EMPTY = object()
    _DONE = object()

    def __init__(self, it: Iterator[int]):
        self._it = it
        self._head = self._EMPTY

    def __iter__(self):
        return self

    def __next__(self) -> int:
        head = self.peek_raw()
        self._head = self._EMPTY
        if head is self._DONE:
            self._head = self._DONE
            raise StopIteration
        return head

    def peek_raw(self):
        if self._head is self._EMPTY:
            self._head = next(self._it, self._DONE)
        return self._head

    def peek(self):
        head = self.peek_raw()
        return None if head is self._DONE else head
