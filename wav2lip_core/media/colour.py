"""The one place where frames change between a clip's YUV and the BGR the pipeline works in.

Every reader turns YUV into RGB with some matrix and range: FFmpeg/PyAV and Blender use the
file's tags (untagged SD/HD YUV is read as BT.601, limited range), OpenCV ignores the matrix tag
and always uses BT.601. So the output must carry the source's own YUV, not just look right to
one reader: we convert back with the matrix and range the source was decoded with and copy its
tags (an untagged source gives an untagged output). Then each reader sees the output as it sees
the source, whatever its rule.

For 8-bit 4:2:0 sources (nearly every camera, phone and web clip) the conversion is done here
with OpenCV instead of swscale: chroma is repeated over its 2x2 block when decoding and averaged
over the same block when encoding, so decode -> encode gives back the source's samples (mean
error ~0.02 level) where swscale's interpolating up/down sampling blurs chroma each round trip
(~1 level, more on saturated colours). Other pixel formats go through swscale with the same
matrix and range.

The same maths also works on a window of a frame's planes (`planes_to_bgr` with a box, `luma` and
`chroma` on a region): picture.Picture converts only the face box this way and hands every other
sample from decoder to encoder unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import av
import cv2
import numpy as np
from av.video.reformatter import Interpolation

__all__ = ["Colour", "RGB_SOURCE", "to_bgr", "from_bgr", "tag", "has_420_planes", "planes",
           "planes_to_bgr", "luma", "chroma", "frame_of_planes", "pad_even"]

# FFmpeg's AVColorSpace / AVColorRange codes, as PyAV reports them.
UNSPECIFIED = 2
SMPTE170M = 6  # BT.601 (525 lines); same matrix as BT470BG (5)
RANGE_UNSPECIFIED, RANGE_LIMITED, RANGE_FULL = 0, 1, 2

# Luma weights (Kr, Kb) per matrix code; swscale has the same five.
_KR_KB = {
    1: (0.2126, 0.0722),  # BT.709
    4: (0.30, 0.11),  # FCC
    5: (0.299, 0.114),  # BT.470BG (BT.601 625 lines)
    6: (0.299, 0.114),  # SMPTE 170M (BT.601 525 lines)
    7: (0.212, 0.087),  # SMPTE 240M
    9: (0.2627, 0.0593),  # BT.2020 non-constant luminance
}
_BT601 = (0.299, 0.114)
_SWS_NAME = {(0.2126, 0.0722): "ITU709", (0.30, 0.11): "FCC", (0.299, 0.114): "ITU601",
             (0.212, 0.087): "SMPTE240M", (0.2627, 0.0593): "BT2020"}

# swscale path: accurate rounding (the default rounds down, ~2 levels dark) and full chroma
# interpolation.
_TO_BGR_FLAGS = Interpolation.BILINEAR | Interpolation.ACCURATE_RND | Interpolation.FULL_CHR_H_INT
_EXACT_FORMATS = {"yuv420p", "yuvj420p"}


@dataclass(frozen=True)
class Colour:
    """A clip's colour description, in FFmpeg's codes (`matrix`: AVColorSpace, `range`:
    AVColorRange, `primaries`, `trc`), as the decoder saw it on the first frame."""

    matrix: int = UNSPECIFIED
    range: int = RANGE_UNSPECIFIED
    primaries: int = UNSPECIFIED
    trc: int = UNSPECIFIED
    jpeg_format: bool = False  # yuvj* pixel format: full range whatever the range tag says
    rgb: bool = False  # stored as RGB (or a still image): there is no source matrix to keep

    @classmethod
    def of_frame(cls, frame: av.VideoFrame) -> "Colour":
        fmt = frame.format
        if fmt.is_rgb or fmt.has_palette:
            return cls(primaries=int(frame.color_primaries), trc=int(frame.color_trc), rgb=True)
        return cls(matrix=int(frame.colorspace), range=int(frame.color_range),
                   primaries=int(frame.color_primaries), trc=int(frame.color_trc),
                   jpeg_format=fmt.name.startswith("yuvj"))

    @property
    def full_range(self) -> bool:
        return self.jpeg_format or self.range == RANGE_FULL

    @property
    def coefficients(self) -> tuple[float, float]:
        # Untagged (and matrices swscale does not know) decode as BT.601, as FFmpeg does.
        return _KR_KB.get(self.matrix, _BT601)

    def same_yuv(self, other: "Colour") -> bool:
        """Whether YUV samples mean the same RGB under both descriptions (tags aside)."""
        return self.coefficients == other.coefficients and self.full_range == other.full_range

    def output(self) -> "Colour":
        """The description to encode and tag the result with."""
        if self.rgb:
            # No source matrix: BT.601 limited range, tagged, is read the same by readers that
            # follow tags and by those (OpenCV) that always assume BT.601.
            return Colour(SMPTE170M, RANGE_LIMITED, self.primaries, self.trc)
        if self.matrix != UNSPECIFIED and self.matrix not in _KR_KB:
            return Colour(SMPTE170M, self.range, self.primaries, self.trc, self.jpeg_format)
        return self


# What a source without its own description (an image, an RGB clip) is written as.
RGB_SOURCE = Colour(rgb=True)


def _matrices(colour: Colour) -> tuple[np.ndarray, np.ndarray]:
    """(to_yuv, to_bgr) as 3x4 affine matrices on 0..255 values, channel order B, G, R / Y, U, V."""
    kr, kb = colour.coefficients
    kg = 1.0 - kr - kb
    if colour.full_range:
        y_scale, c_scale, y_offset = 255.0, 255.0, 0.0
    else:
        y_scale, c_scale, y_offset = 219.0, 224.0, 16.0
    rgb_to_ypbpr = np.array([
        [kr, kg, kb],
        [-kr / (2 * (1 - kb)), -kg / (2 * (1 - kb)), 0.5],
        [0.5, -kg / (2 * (1 - kr)), -kb / (2 * (1 - kr))],
    ])
    forward = (np.diag([y_scale, c_scale, c_scale]) / 255.0) @ rgb_to_ypbpr[:, ::-1]  # BGR in
    offset = np.array([y_offset, 128.0, 128.0])
    inverse = np.linalg.inv(forward)
    to_yuv = np.hstack([forward, offset[:, None]]).astype(np.float32)
    to_rgb = np.hstack([inverse, (-inverse @ offset)[:, None]]).astype(np.float32)
    return to_yuv, to_rgb


_MATRIX_CACHE: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}


def _cached_matrices(colour: Colour) -> tuple[np.ndarray, np.ndarray]:
    key = (colour.coefficients, colour.full_range)
    if key not in _MATRIX_CACHE:
        _MATRIX_CACHE[key] = _matrices(colour)
    return _MATRIX_CACHE[key]


def _plane(frame: av.VideoFrame, k: int) -> np.ndarray:
    p = frame.planes[k]
    return np.frombuffer(p, np.uint8).reshape(p.height, p.line_size)[:, : p.width]


def has_420_planes(frame: av.VideoFrame, colour: Colour) -> bool:
    """Whether `frame` is 8-bit 4:2:0 YUV that `colour` decodes with this module's exact maths."""
    return not colour.rgb and frame.format.name in _EXACT_FORMATS


def planes(frame: av.VideoFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Writable copies of a 4:2:0 frame's Y, U and V planes (chroma ceil(w/2) x ceil(h/2), as
    FFmpeg sizes them). Copies: the decoder may still reference its buffers for later frames."""
    return tuple(_plane(frame, k).copy() for k in range(3))


def planes_to_bgr(y: np.ndarray, u: np.ndarray, v: np.ndarray, colour: Colour,
                  box: tuple[int, int, int, int] | None = None) -> np.ndarray:
    """uint8 BGR of the 4:2:0 planes inside `box` = (y1, y2, x1, x2) (default: all of them),
    identical to the same box of the whole frame's conversion: each chroma sample is repeated
    over its 2x2 block, counted from the frame's top-left corner."""
    y1, y2, x1, x2 = box if box is not None else (0, y.shape[0], 0, y.shape[1])
    h, w = y2 - y1, x2 - x1
    oy, ox = y1 % 2, x1 % 2
    window = (slice(y1 // 2, (y2 + 1) // 2), slice(x1 // 2, (x2 + 1) // 2))
    up = [cv2.resize(c[window], None, fx=2, fy=2, interpolation=cv2.INTER_NEAREST)[oy: oy + h, ox: ox + w]
          for c in (u, v)]
    return cv2.transform(cv2.merge([np.ascontiguousarray(y[y1:y2, x1:x2]), *up]), _cached_matrices(colour)[1])


def to_bgr(frame: av.VideoFrame, colour: Colour | None = None) -> np.ndarray:
    """A decoded frame as uint8 BGR (H, W, 3), converted as `colour` describes (default: the
    frame's own tags)."""
    if colour is None:
        colour = Colour.of_frame(frame)
    if colour.rgb or frame.format.is_rgb or frame.format.has_palette:
        return frame.to_ndarray(format="bgr24", interpolation=_TO_BGR_FLAGS)
    if frame.format.name not in _EXACT_FORMATS:
        return frame.to_ndarray(format="bgr24", interpolation=_TO_BGR_FLAGS,
                                src_colorspace=_SWS_NAME[colour.coefficients],
                                src_color_range="JPEG" if colour.full_range else "MPEG")
    return planes_to_bgr(*(_plane(frame, k) for k in range(3)), colour)


def luma(bgr: np.ndarray, colour: Colour) -> np.ndarray:
    """uint8 BGR (H, W, 3) -> its Y plane (H, W) in `colour`'s matrix and range."""
    h, w = bgr.shape[:2]
    # Rounded and saturated to uint8 by OpenCV.
    return cv2.transform(np.ascontiguousarray(bgr), _cached_matrices(colour)[0][:1]).reshape(h, w)


def chroma(bgr: np.ndarray, colour: Colour) -> tuple[np.ndarray, np.ndarray]:
    """uint8 BGR of even size -> its U and V planes (half size), each sample from the mean of
    its 2x2 block."""
    h, w = bgr.shape[:2]
    # Chroma is linear in RGB, so the 2x2 mean of the pixels' chroma is the chroma of their mean.
    half = cv2.resize(np.ascontiguousarray(bgr), (w // 2, h // 2), interpolation=cv2.INTER_AREA)
    uv = cv2.transform(half.reshape(h // 2, w // 2, 3), _cached_matrices(colour)[0][1:])
    return uv[:, :, 0], uv[:, :, 1]


def pad_even(image: np.ndarray) -> np.ndarray:
    """`image` grown to even height and width by repeating its last row/column (4:2:0 encoders
    need even sizes; see encode.py); returned as is when already even."""
    h, w = image.shape[:2]
    if h % 2 == 0 and w % 2 == 0:
        return image
    return cv2.copyMakeBorder(image, 0, h % 2, 0, w % 2, cv2.BORDER_REPLICATE)


def frame_of_planes(y: np.ndarray, u: np.ndarray, v: np.ndarray, colour: Colour) -> av.VideoFrame:
    """A yuv420p frame holding these samples, tagged with `colour` (use `colour.output()`). An odd
    luma size is padded to even with `pad_even`; the chroma planes already cover it."""
    y = pad_even(y)
    h, w = y.shape
    frame = av.VideoFrame(w, h, "yuv420p")
    for plane, data in zip(frame.planes, (y, u, v)):
        if plane.line_size == plane.width and data.flags.c_contiguous:
            plane.update(data)
        else:
            buf = np.empty((plane.height, plane.line_size), np.uint8)
            buf[:, : plane.width] = data
            plane.update(buf)
    frame.colorspace = colour.matrix
    frame.color_range = RANGE_FULL if colour.full_range else colour.range
    return frame


def from_bgr(bgr: np.ndarray, colour: Colour) -> av.VideoFrame:
    """uint8 BGR of even size -> a yuv420p frame in `colour`'s matrix and range (use
    `colour.output()`): the inverse of `to_bgr` for 4:2:0 sources."""
    h, w = bgr.shape[:2]
    if h % 2 or w % 2:
        raise ValueError(f"4:2:0 needs an even size, got {w}x{h}")
    return frame_of_planes(luma(bgr, colour), *chroma(bgr, colour), colour)


def tag(codec_context, colour: Colour) -> None:
    """Write `colour` (use `colour.output()`) into an encoder's colour description."""
    codec_context.colorspace = colour.matrix
    codec_context.color_range = RANGE_FULL if colour.full_range else colour.range
    codec_context.color_primaries = colour.primaries
    codec_context.color_trc = colour.trc
