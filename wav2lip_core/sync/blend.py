"""Crop the face for the model and put the generated face back into the frame.

`hard` pastes the model's 96x96 output resized into the box, exactly as the original
inference.py does (including its truncating float->uint8 cast). `feather` composites only the
generated lower face through a soft mask, so no square edge shows and the eyes, forehead and
background keep the source's full resolution. `mouth` composites through a mask built from the
face's landmarks (mouth_mask.py), passed in as `mask`; a frame without one gets `feather`.
Pixels outside the box are never touched.

A frame whose crop was levelled (align.py) gives its Rotation to crop_face and paste: the model's
face is turned back, and without a mouth mask the feather mask is turned with it (and tapered to
0 at the box border); a mouth mask is cut to where the turned crop reaches (its corners leave
the box's corners uncovered, and a mouth near them would get black). `hard` is never turned: the original's paths stay exact.

Frames are BGR arrays or picture.Picture objects; a Picture converts just the box (and writes
back just what changed), with the same BGR in the box as the array path.

--enhance restores after the paste (restore_pasted): the generated face is pasted into a copy of
its box (composite), the restorer (quality.enhance) sharpens that, and the stage's blend puts it
back through the same mask. It lives here, beside the paste it repeats, so that quality never
imports sync.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

import cv2
import numpy as np

from ..faces import align, landmarks
from .. import protocol
from ..faces.mouth_mask import mouth_mask
from ..model.checkpoint import IMG_SIZE
from ..media.picture import Picture

if TYPE_CHECKING:
    from ..quality.enhance import Restorer

BLENDS = protocol.names(protocol.BLENDS)


def region_bgr(frame: np.ndarray | Picture, box: tuple[int, int, int, int]) -> np.ndarray:
    """The box's pixels as BGR (a view for an array, a converted copy for a Picture)."""
    y1, y2, x1, x2 = box
    return frame.region_bgr(y1, y2, x1, x2) if isinstance(frame, Picture) else frame[y1:y2, x1:x2]


def crop_face(frame: np.ndarray | Picture, box: tuple[int, int, int, int],
              rotation: align.Rotation | None = None) -> np.ndarray:
    """The 96x96 BGR model input for `box` = (y1, y2, x1, x2), resized as the original does, or
    levelled by `rotation` (made for this box)."""
    if rotation is not None:
        return align.crop(frame, rotation)
    return cv2.resize(region_bgr(frame, box), (IMG_SIZE, IMG_SIZE))


def model_inputs(faces: np.ndarray) -> np.ndarray:
    """(B, 96, 96, 3) uint8 crops -> (B, 6, 96, 96) float32: the crop with its lower half
    zeroed, then the crop itself, scaled to [0, 1] (the original's channel order)."""
    masked = faces.copy()
    masked[:, IMG_SIZE // 2:] = 0
    stacked = np.concatenate((masked, faces), axis=3).astype(np.float32) / 255.0
    return np.ascontiguousarray(stacked.transpose(0, 3, 1, 2))


def prediction_to_uint8(pred: np.ndarray) -> np.ndarray:
    """(3, 96, 96) float in [0, 1] -> (96, 96, 3) uint8 with the original's truncating cast."""
    return (pred.transpose(1, 2, 0) * 255.0).astype(np.uint8)


@lru_cache(maxsize=1)
def _feather_mask96() -> np.ndarray:
    """Soft weight over the model's 96x96 output: 1 on the mouth and jaw, fading to 0 at the
    box sides and bottom and above the middle (the model only regenerates the lower half; the
    upper half is a blurrier copy of the source)."""
    mask = np.zeros((IMG_SIZE, IMG_SIZE), np.float32)
    mask[IMG_SIZE // 2 - 4: IMG_SIZE - 6, 10: IMG_SIZE - 10] = 1.0
    mask = cv2.GaussianBlur(mask, (0, 0), sigmaX=5, sigmaY=5)
    mask /= mask.max()
    # Outside the box nothing may change, so the blurred edge must reach exactly 0 at the border.
    mask[:, 0] = mask[:, -1] = mask[0, :] = mask[-1, :] = 0.0
    return mask


@lru_cache(maxsize=8)
def _feather_weights(w: int, h: int) -> tuple[np.ndarray, np.ndarray]:
    """The feather mask at a box's size and its complement (boxes keep their size over a clip)."""
    alpha = cv2.resize(_feather_mask96(), (w, h))
    return alpha, 1.0 - alpha


@dataclass(frozen=True)
class FaceEdit:
    """How one face is cropped and pasted beyond its box: both None is the plain path."""

    mask: np.ndarray | None = None  # (h, w) float32 mouth mask over the box
    rotation: align.Rotation | None = None


PLAIN = FaceEdit()


def predictor_for(blend: str, align_mode: str) -> landmarks.Predictor | None:
    """The landmarks.Predictor a job needs, or None. Call at request time: `--blend mouth`
    without the landmarks extra raises landmarks.LandmarksUnavailable (one line with the pip
    command); `--align auto` alone without it gives None (levelling silently off)."""
    if blend == "mouth":
        landmarks.require("--blend mouth")
        return landmarks.load_predictor()
    if align.applies(align_mode, blend) and landmarks.available():
        return landmarks.load_predictor()
    return None


def face_edit(predictor: landmarks.Predictor | None, frame: np.ndarray | Picture,
              box: tuple[int, int, int, int], blend: str, align_mode: str,
              leveller: align.Leveller | None = None) -> FaceEdit:
    """The mouth mask (`blend` "mouth") and levelling rotation (align.applies) for one face,
    from its landmarks; PLAIN when neither is wanted, when `predictor` (a landmarks.Predictor)
    is None, or when the landmarks fail on this frame (the frame then gets feather, unturned).
    `leveller`: the job's align.Leveller (frames in output order), which decides the rotation
    over time; with levelling alone it measures only every few frames. Without one, each frame
    is decided by itself. Runs in the decode+crop stage: ~20-25 ms per measured face on an idle
    CPU core (landmarks.py)."""
    turn = align.applies(align_mode, blend)
    if predictor is None or not (blend == "mouth" or turn):
        return PLAIN
    if blend != "mouth" and leveller is not None:
        rotation = leveller.rotation(frame, box)
        return PLAIN if rotation is None else FaceEdit(rotation=rotation)
    points = predictor.points(frame, box)
    rotation = None
    if turn:
        rotation = leveller.from_points(points, box) if leveller is not None else align.rotation_for(points, box)
    if points is None:
        return PLAIN
    return FaceEdit(mask=mouth_mask(points, box) if blend == "mouth" else None, rotation=rotation)


def paste(frame: np.ndarray | Picture, pred_u8: np.ndarray, box: tuple[int, int, int, int],
          blend: str = "feather", *, mask: np.ndarray | None = None,
          rotation: align.Rotation | None = None, in_box: bool = False) -> None:
    """Put the generated face `pred_u8` (96x96x3 uint8) back into `frame` in place. `mask`: an
    (h, w) float32 weight over the box in [0, 1] (the mouth mask) used instead of the feather
    mask; `blend` "mouth" without one is `feather`. `rotation`: the one the crop was made with.
    `in_box`: `pred_u8` is already the box's size and orientation (a restored face, enhance.py);
    it is blended through the same mask, not resized or turned again."""
    y1, y2, x1, x2 = box
    h, w = y2 - y1, x2 - x1
    if blend == "hard" and (mask is not None or rotation is not None):
        raise ValueError("the hard paste takes no mask and no rotation")
    if in_box:
        if pred_u8.shape[:2] != (h, w):
            raise ValueError(f"a face of {pred_u8.shape[:2]} does not fit box {(h, w)}")
        face = pred_u8
    elif rotation is not None:
        if tuple(rotation.box) != tuple(box):
            raise ValueError(f"rotation made for box {rotation.box}, pasting into {box}")
        face = align.uncrop(pred_u8, rotation)
    else:
        face = cv2.resize(pred_u8, (w, h))
    if blend == "hard":
        def blended(region: np.ndarray) -> np.ndarray:
            return face
    else:
        if mask is not None:
            if mask.shape != (h, w):
                raise ValueError(f"mask {mask.shape} does not fit box {(h, w)}")
            alpha = mask.astype(np.float32, copy=False)
            if rotation is not None:  # the turned crop does not reach the box's corners
                alpha = alpha * _turned(_footprint96(), rotation)
            beta = 1.0 - alpha
        elif rotation is not None:
            alpha = _turned_feather(rotation)
            beta = 1.0 - alpha
        else:
            alpha, beta = _feather_weights(w, h)

        def blended(region: np.ndarray) -> np.ndarray:
            # One OpenCV pass (face * alpha + source * (1 - alpha), rounded): ~3x faster than the
            # same sum in numpy floats, which matters for big faces (a 1080p close-up's box is
            # ~700x700 pixels).
            return cv2.blendLinear(face, region, alpha, beta)
    if isinstance(frame, Picture):
        frame.edit_region(y1, y2, x1, x2, blended)  # converts the box once for reading and writing
    else:
        frame[y1:y2, x1:x2] = blended(frame[y1:y2, x1:x2])


@lru_cache(maxsize=1)
def _footprint96() -> np.ndarray:
    """Where the model's output has pixels, in crop pixels: 1, fading to 0 over the outer 6 (so
    a mouth mask cut off by a turned crop's edge fades into the source instead of a seam)."""
    return align.border_taper(IMG_SIZE, IMG_SIZE, 6.0)


def _turned(mask96: np.ndarray, rotation: align.Rotation) -> np.ndarray:
    """A smooth 96x96 crop-space mask turned back into the box. It is smooth, so it is turned on
    a grid of at most 192 px and resized (a 1080p close-up's box is ~700 px)."""
    y1, y2, x1, x2 = rotation.box
    h, w = y2 - y1, x2 - x1
    scale = min(1.0, 2 * IMG_SIZE / max(h, w))
    grid = (max(1, round(w * scale)), max(1, round(h * scale)))
    alpha = align.uncrop(mask96, rotation, grid)
    return cv2.resize(alpha, (w, h), interpolation=cv2.INTER_LINEAR) if grid != (w, h) else alpha


def _turned_feather(rotation: align.Rotation) -> np.ndarray:
    """The feather mask turned back with the face; its turned corners may reach the box's edge,
    so it is tapered to 0 there over 4% of the box."""
    y1, y2, x1, x2 = rotation.box
    h, w = y2 - y1, x2 - x1
    return _turned(_feather_mask96(), rotation) * align.border_taper(h, w, 0.04 * max(h, w))


def composite(region: np.ndarray, face96: np.ndarray, blend: str, edit=None) -> np.ndarray:
    """A copy of a box's source `region` with the generated 96x96 face pasted in as the sync
    pass pastes it into the frame (`paste` with the face's FaceEdit: mouth mask, levelling
    rotation), so the restorer sees the source's sharp eyes and skin around the
    generated mouth, as the forks that restore after pasting do."""
    c = np.array(region, dtype=np.uint8, copy=True)
    h, w = c.shape[:2]
    mask = getattr(edit, "mask", None)
    rotation = getattr(edit, "rotation", None)
    if rotation is not None:  # the same turn about the box centre, in the region's own pixels
        rotation = dataclasses.replace(rotation, box=(0, h, 0, w))
    paste(c, face96, (0, h, 0, w), blend, mask=mask, rotation=rotation)
    return c


def restore_pasted(restorer: Restorer, regions: Sequence[np.ndarray], faces96: Sequence[np.ndarray],
                   blend: str, edits: Sequence | None = None,
                   stop: Callable[[], bool] | None = None) -> list[np.ndarray]:
    """The sync pass's enhance step: for each face, its `composite` restored at the box's size,
    in the frame's orientation (`restorer`: a quality.enhance.Restorer). Blend each result into
    the frame through the same mask as the plain paste (`paste` with the box-sized face, the face's mask and no resizing or
    turning), so pixels the lip-sync leaves alone stay the source's."""
    edits = list(edits) if edits is not None else [None] * len(regions)
    composites = [composite(r, f, blend, e) for r, f, e in zip(regions, faces96, edits, strict=True)]
    return restorer.restore(composites, stop=stop)
