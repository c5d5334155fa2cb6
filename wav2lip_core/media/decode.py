"""Streaming video/image decoding with PyAV, for a clip described by probe.probe_video.

`read_frames` serves any schedule of frame indices with bounded memory: forward runs stream
straight through the decoder, descending runs (ping-pong looping) are decoded in chunks that fit
a byte budget and emitted reversed.

Frames are uint8 BGR (H, W, 3) arrays, or with `pictures=True` picture.Picture objects (the
decoder's YUV planes, converted only where the caller looks; see picture.py), upright (rotation
metadata applied), and each yielded frame is the caller's own (safe to modify in place).
"""

from __future__ import annotations

import bisect
import tempfile
from typing import Iterable, Iterator

import av
import numpy as np

from .colour import Colour, to_bgr
from ..errors import MediaError, reason
from .picture import Picture, rotate_upright
from .probe import VideoInfo, fail, load_image, open_container

__all__ = ["read_frames", "DEFAULT_BUFFER_BYTES", "DEFAULT_SPILL_BYTES"]

# Frames of a backward (ping-pong) run held in memory at once. Longer runs go to an unlinked
# temp file, up to DEFAULT_SPILL_BYTES a chunk: RAM stays flat however long the output, and a
# chunk spanning whole GOPs decodes each frame about once instead of re-decoding from the
# keyframe for every small chunk (at 1080p a 250-frame GOP would cost ~25 decodes per frame).
DEFAULT_BUFFER_BYTES = 64 * 1024 * 1024
DEFAULT_SPILL_BYTES = 1024 * 1024 * 1024


Frame = np.ndarray | Picture


def _upright(frame: av.VideoFrame, info: VideoInfo, pictures: bool) -> Frame:
    if pictures:
        return Picture.of_frame(frame, info.colour, info.rotation)
    return rotate_upright(to_bgr(frame, info.colour), info.rotation)


class _Decoder:
    """One open container whose position is tracked by frame index, so the reader can decide
    between continuing forward and seeking back to a keyframe."""

    def __init__(self, info: VideoInfo, pictures: bool = False):
        self.info = info
        self.pictures = pictures
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

    def decode_range(self, first: int, last: int) -> Iterator[tuple[int, Frame]]:
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
                raise fail(self.info.path, f"frame {expected} cannot be decoded (got frame {index}); "
                            "the file is damaged, re-export it")
            expected += 1
            yield index, _upright(frame, self.info, self.pictures)

    def _restart(self) -> None:
        self.close()
        self._container = open_container(self.info.path)
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
            raise fail(self.info.path, f"the video ended early at frame {self.next_index} of "
                        f"{self.info.frame_count}; the file is truncated, re-export it") from None
        except av.error.FFmpegError as exc:
            raise fail(self.info.path, f"decoding failed near frame {self.next_index} ({reason(exc)}); "
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

    def __init__(self, info: VideoInfo, frames: Iterable[tuple[int, Frame]], first: int, last: int):
        self._first, self._n = first, last - first + 1
        # Per frame: where its bytes start, the shapes of its arrays, and the Colour of a
        # Picture (None for a BGR array); a run can mix planes and BGR if the format changes.
        self._layout: list[tuple[int, list[tuple[int, ...]], Colour | None]] = []
        self._file = tempfile.TemporaryFile(prefix="wav2lip-reverse-")
        try:
            offset = 0
            for _, item in frames:
                arrays = item.arrays if isinstance(item, Picture) else (item,)
                self._layout.append((offset, [a.shape for a in arrays],
                                     item.colour if isinstance(item, Picture) else None))
                for a in arrays:
                    self._file.write(np.ascontiguousarray(a).data)
                    offset += a.nbytes
            self._layout.append((offset, [], None))
        except OSError as exc:
            self.close()
            raise fail(info.path, f"cannot stage frames for backward playback in {tempfile.gettempdir()} "
                        f"({reason(exc)}); free disk space there or set TMPDIR") from None
        except BaseException:
            self.close()
            raise

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, k: int) -> tuple[int, Frame]:
        j = self._n - 1 - k  # item k of the reversed run
        offset, shapes, colour = self._layout[j]
        buf = bytearray(self._layout[j + 1][0] - offset)
        self._file.seek(offset)
        self._file.readinto(buf)
        arrays, at = [], 0
        for shape in shapes:
            size = int(np.prod(shape))
            arrays.append(np.frombuffer(buf, np.uint8, size, at).reshape(shape))
            at += size
        return self._first + j, arrays[0] if colour is None else Picture.of_arrays(tuple(arrays), colour)

    def close(self) -> None:
        self._file.close()


def _chunk_frames(info: VideoInfo, budget_bytes: int) -> int:
    frame_bytes = max(info.width * info.height * 3, 1)
    return max(1, int(budget_bytes) // frame_bytes)


def read_frames(info: VideoInfo, indices: Iterable[int], *, max_buffer_bytes: int = DEFAULT_BUFFER_BYTES,
                spill_bytes: int = DEFAULT_SPILL_BYTES, stats: dict | None = None,
                pictures: bool = False) -> Iterator[tuple[int, Frame]]:
    """Yield (index, bgr) in the order of `indices`, with memory bounded by `max_buffer_bytes`.
    Backward runs longer than that are staged in a temp file of at most `spill_bytes` (0: never;
    then they are decoded in memory-sized chunks). With `pictures`, yield (index, Picture)
    instead (budgets still count 3 bytes a pixel, so a planar run holds fewer bytes).

    `stats`, if given, is filled with `max_held` (most frames in memory at once), `spilled`
    (frames staged on disk), `seeks` and `decoded` so callers and tests can check a schedule."""
    if stats is None:
        stats = {}
    stats.update(max_held=0, spilled=0, seeks=0, decoded=0)
    if info.is_image:
        yield from _read_image(info, indices, pictures)
        return
    ram_chunk = _chunk_frames(info, max_buffer_bytes)
    chunk = max(ram_chunk, _chunk_frames(info, spill_bytes)) if spill_bytes > 0 else ram_chunk
    decoder = _Decoder(info, pictures)
    try:
        pending = _Peekable(iter(indices))
        last: tuple[int, Frame] | None = None
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


def _read_image(info: VideoInfo, indices: Iterable[int], pictures: bool) -> Iterator[tuple[int, Frame]]:
    image = load_image(info.path)
    for index in indices:
        _check_index(info, index)
        yield index, Picture.of_bgr(image.copy(), info.colour) if pictures else image.copy()


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
