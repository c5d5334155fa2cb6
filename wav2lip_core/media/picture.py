"""A decoded frame kept as the encoder wants it, converted to BGR only where it is looked at.

The sync pass changes only the face box. For 8-bit 4:2:0 sources (nearly every clip) a `Picture`
holds the decoder's own Y, U and V samples; the model's input is converted from just the box,
the generated face is written back into just the samples it changed, and the writer takes the
planes as they are. Every other sample goes from decoder to encoder untouched, whatever the
source's matrix and range, and the two full-frame conversions per frame are gone.

Other sources (4:2:2, 4:4:4, 10-bit, RGB, still images) and rotated frames of odd size (their
upright chroma blocks would not start at the top-left corner) hold BGR instead and are converted
by the writer as before: same interface, same result as the BGR path. The maths is colour.py's.
"""

from __future__ import annotations

from collections.abc import Callable

import av
import cv2
import numpy as np

from .colour import (Colour, RGB_SOURCE, chroma, frame_of_planes, from_bgr, has_420_planes, luma, pad_even,
                     planes, planes_to_bgr, to_bgr)

__all__ = ["Picture", "rotate_upright"]

_ROTATE = {90: cv2.ROTATE_90_COUNTERCLOCKWISE, 180: cv2.ROTATE_180, 270: cv2.ROTATE_90_CLOCKWISE}


def rotate_upright(image: np.ndarray, rotation: int) -> np.ndarray:
    """`image` turned upright for a display rotation of `rotation` degrees counter-clockwise
    (av_display_rotation_get's convention, as probe.VideoInfo.rotation reports it)."""
    return cv2.rotate(image, _ROTATE[rotation]) if rotation in _ROTATE else image


class Picture:
    """One upright frame: 4:2:0 planes (`planar`) or a BGR array, with the Colour it was decoded
    with. Boxes are (y1, y2, x1, x2) inside the frame, as blend.crop_face/paste take them."""

    __slots__ = ("colour", "_planes", "_bgr")

    def __init__(self, colour: Colour, *, planes: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
                 bgr: np.ndarray | None = None):
        if (planes is None) == (bgr is None):
            raise ValueError("a Picture holds either planes or bgr")
        self.colour = colour
        self._planes = planes
        self._bgr = bgr

    @classmethod
    def of_frame(cls, frame: av.VideoFrame, colour: Colour, rotation: int = 0) -> "Picture":
        """A decoded frame, upright, as planes when its format allows, as BGR otherwise."""
        odd = frame.width % 2 or frame.height % 2
        if has_420_planes(frame, colour) and not (odd and rotation in _ROTATE):
            return cls(colour, planes=tuple(rotate_upright(p, rotation) for p in planes(frame)))
        return cls(colour, bgr=rotate_upright(to_bgr(frame, colour), rotation))

    @classmethod
    def of_bgr(cls, bgr: np.ndarray, colour: Colour = RGB_SOURCE) -> "Picture":
        """A BGR picture (an image, a fallback frame); it is used, not copied."""
        return cls(colour, bgr=bgr)

    @property
    def planar(self) -> bool:
        return self._planes is not None

    @property
    def height(self) -> int:
        return (self._planes[0] if self._planes is not None else self._bgr).shape[0]

    @property
    def width(self) -> int:
        return (self._planes[0] if self._planes is not None else self._bgr).shape[1]

    @property
    def arrays(self) -> tuple[np.ndarray, ...]:
        """The backing arrays (Y, U, V or the one BGR array), for staging on disk."""
        return self._planes if self._planes is not None else (self._bgr,)

    @classmethod
    def of_arrays(cls, arrays: tuple[np.ndarray, ...], colour: Colour) -> "Picture":
        """The inverse of `arrays`."""
        return cls(colour, planes=tuple(arrays)) if len(arrays) == 3 else cls(colour, bgr=arrays[0])

    def copy(self) -> "Picture":
        return Picture.of_arrays(tuple(a.copy() for a in self.arrays), self.colour)

    def to_bgr(self) -> np.ndarray:
        """The whole frame as a new uint8 BGR array."""
        if self._planes is None:
            return self._bgr.copy()
        return planes_to_bgr(*self._planes, self.colour)

    def region_bgr(self, y1: int, y2: int, x1: int, x2: int) -> np.ndarray:
        """A new uint8 BGR array of the box, identical to `to_bgr()[y1:y2, x1:x2]`."""
        self._check_box(y1, y2, x1, x2)
        if self._planes is None:
            return self._bgr[y1:y2, x1:x2].copy()
        return planes_to_bgr(*self._planes, self.colour, (y1, y2, x1, x2))

    def put_region_bgr(self, y1: int, y2: int, x1: int, x2: int, bgr: np.ndarray) -> None:
        """Write `bgr` into the box. Planes change only where the picture did: Y of each changed
        pixel, and the chroma of each 2x2 block holding one, from the mean of the block's new BGR
        (its pixels outside the box included), as colour.from_bgr computes it."""
        self.edit_region(y1, y2, x1, x2, lambda current: bgr)

    def edit_region(self, y1: int, y2: int, x1: int, x2: int,
                    edit: Callable[[np.ndarray], np.ndarray]) -> None:
        """Replace the box by `edit(current BGR of the box)` (which must not change its argument),
        written back as put_region_bgr writes: the box is converted once, for both."""
        self._check_box(y1, y2, x1, x2)
        if self._planes is None:
            self._bgr[y1:y2, x1:x2] = self._checked(edit(self._bgr[y1:y2, x1:x2]), y1, y2, x1, x2)
            return
        y, u, v = self._planes
        # The whole 2x2 blocks the box touches (a block at an odd frame edge is one pixel short).
        ay1, ax1 = y1 - y1 % 2, x1 - x1 % 2
        ay2, ax2 = min(y2 + y2 % 2, self.height), min(x2 + x2 % 2, self.width)
        blocks = planes_to_bgr(y, u, v, self.colour, (ay1, ay2, ax1, ax2))
        inside = blocks[y1 - ay1: y2 - ay1, x1 - ax1: x2 - ax1]
        bgr = self._checked(edit(inside), y1, y2, x1, x2)
        # Nonzero where any channel differs: a 255 in any channel makes a grey of at least 29
        # (OpenCV's BGR->grey weights are all positive). ~20x faster than numpy's any(axis=2).
        changed = cv2.cvtColor(cv2.compare(inside, bgr, cv2.CMP_NE), cv2.COLOR_BGR2GRAY)
        if not cv2.countNonZero(changed):
            return
        cv2.copyTo(luma(bgr, self.colour), changed, y[y1:y2, x1:x2])
        inside[...] = bgr
        touched = np.zeros(blocks.shape[:2], np.uint8)
        touched[y1 - ay1: y2 - ay1, x1 - ax1: x2 - ax1] = changed
        # An odd edge is averaged over its repeated last row/column, as the writer pads the frame.
        blocks, touched = pad_even(blocks), pad_even(touched)
        h2, w2 = touched.shape[0] // 2, touched.shape[1] // 2
        # A block's mean is nonzero when any of its four is (each is at least 29).
        touched = cv2.resize(touched, (w2, h2), interpolation=cv2.INTER_AREA)
        window = (slice(ay1 // 2, ay1 // 2 + h2), slice(ax1 // 2, ax1 // 2 + w2))
        for plane, new in zip((u, v), chroma(blocks, self.colour)):
            cv2.copyTo(np.ascontiguousarray(new), touched, plane[window])

    def video_frame(self, colour: Colour) -> av.VideoFrame:
        """The yuv420p frame (even size; odd sizes padded by repeating the last row/column) an
        encoder in `colour` (its output description) takes: the planes themselves when they are
        in that colour's YUV, else converted from BGR as colour.from_bgr does."""
        if self._planes is not None and self.colour.same_yuv(colour):
            return frame_of_planes(*self._planes, colour)
        return from_bgr(np.ascontiguousarray(pad_even(self.to_bgr() if self._bgr is None else self._bgr)), colour)

    @staticmethod
    def _checked(bgr: np.ndarray, y1: int, y2: int, x1: int, x2: int) -> np.ndarray:
        if bgr.shape != (y2 - y1, x2 - x1, 3) or bgr.dtype != np.uint8:
            raise ValueError(f"region must be uint8 {(y2 - y1, x2 - x1, 3)}, got {bgr.dtype} {bgr.shape}")
        return bgr

    def _check_box(self, y1: int, y2: int, x1: int, x2: int) -> None:
        if not (0 <= y1 < y2 <= self.height and 0 <= x1 < x2 <= self.width):
            raise ValueError(f"box {(y1, y2, x1, x2)} is not inside the {self.width}x{self.height} frame")
