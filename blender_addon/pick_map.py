"""Where a point of the Sequencer's preview lies in a movie strip's clip, and back: the pure
arithmetic of Pick Face (pick_face.py), no bpy, so a test checks it with numbers.

Coordinates:
- view: the preview's View2D coordinates (`region.view2d.region_to_view`), in render pixels
  at 100 % with (0, 0) at the render frame's centre, y up;
- frame: render-frame pixels, (0, 0) at the bottom left corner, y up;
- clip: the clip's own upright pixels, (0, 0) at the top left corner, x right, y down (what the
  engine's `--face-at X Y` and the faces request's boxes use).

How Blender places a strip's image in the frame (the sequencer's render code, 3.x to 5.x): the
image, `w` x `h`, is centred (offset (W - w) / 2 in whole pixels, as C's integer division), moved
by the transform's offset, and scaled and rotated (counter-clockwise, radians) about its origin
(a fraction of the image; 0.5, 0.5 where Blender has no origin); Add Movie's fit method is only
the scale it set. Crop masks the image's borders without moving it. Flip mirrors the whole frame
after the transform (`flip_in_image` False: 3.x/4.x) or the image before it (`flip_in_image`
True). The render size percentage scales all of this alike, so the view, in 100 % pixels, does
not change with it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

Point = Tuple[float, float]
Box = Tuple[int, int, int, int]  # x1, y1, x2, y2 in clip pixels (the faces request's)


@dataclass(frozen=True)
class Placement:
    """One strip's image in the render frame, as plain numbers (compat.placement reads them)."""

    clip_w: int
    clip_h: int
    frame_w: int  # the scene's resolution at 100 %
    frame_h: int
    offset_x: float = 0.0
    offset_y: float = 0.0
    scale_x: float = 1.0
    scale_y: float = 1.0
    rotation: float = 0.0  # radians, counter-clockwise
    origin: Point = (0.5, 0.5)
    flip_x: bool = False
    flip_y: bool = False
    flip_in_image: bool = False
    crop: Tuple[int, int, int, int] = (0, 0, 0, 0)  # left, right, top, bottom (image pixels)

    def _translate(self) -> Point:
        # (out - in) / 2 in C's integer division (truncates toward zero), then the offset.
        return (math.trunc((self.frame_w - self.clip_w) / 2) + self.offset_x,
                math.trunc((self.frame_h - self.clip_h) / 2) + self.offset_y)

    def _pivot(self) -> Point:
        return self.clip_w * self.origin[0], self.clip_h * self.origin[1]


def _flip_image(p: Placement, ix: float, iy: float) -> Point:
    if p.flip_in_image:
        ix = p.clip_w - ix if p.flip_x else ix
        iy = p.clip_h - iy if p.flip_y else iy
    return ix, iy


def _flip_frame(p: Placement, fx: float, fy: float) -> Point:
    if not p.flip_in_image:
        fx = p.frame_w - fx if p.flip_x else fx
        fy = p.frame_h - fy if p.flip_y else fy
    return fx, fy


def clip_to_frame(p: Placement, x: float, y: float) -> Point:
    """The render-frame point (y up) where clip point (x, y) (y down) is shown."""
    ix, iy = _flip_image(p, x, p.clip_h - y)  # image coordinates: y up
    (tx, ty), (px, py) = p._translate(), p._pivot()
    dx, dy = (ix - px) * p.scale_x, (iy - py) * p.scale_y
    c, s = math.cos(p.rotation), math.sin(p.rotation)
    return _flip_frame(p, tx + px + c * dx - s * dy, ty + py + s * dx + c * dy)


def frame_to_clip(p: Placement, fx: float, fy: float) -> Optional[Point]:
    """The clip point (y down) shown at render-frame point (fx, fy), or None where the strip
    shows nothing there (outside the image or cropped off, or a zero scale)."""
    if p.scale_x == 0 or p.scale_y == 0:
        return None
    fx, fy = _flip_frame(p, fx, fy)
    (tx, ty), (px, py) = p._translate(), p._pivot()
    qx, qy = fx - tx - px, fy - ty - py
    c, s = math.cos(p.rotation), math.sin(p.rotation)
    ix = px + (c * qx + s * qy) / p.scale_x
    iy = py + (-s * qx + c * qy) / p.scale_y
    left, right, top, bottom = p.crop
    if not (left <= ix <= p.clip_w - right and bottom <= iy <= p.clip_h - top):
        return None  # (crop applies to the image the transform takes: after an image-space flip)
    ix, iy = _flip_image(p, ix, iy)
    return ix, p.clip_h - iy


def view_to_frame(p: Placement, vx: float, vy: float) -> Point:
    return vx + p.frame_w / 2.0, vy + p.frame_h / 2.0


def frame_to_view(p: Placement, fx: float, fy: float) -> Point:
    return fx - p.frame_w / 2.0, fy - p.frame_h / 2.0


def view_to_clip(p: Placement, vx: float, vy: float) -> Optional[Point]:
    return frame_to_clip(p, *view_to_frame(p, vx, vy))


def clip_to_view(p: Placement, x: float, y: float) -> Point:
    return frame_to_view(p, *clip_to_frame(p, x, y))


def pixel(point: Point, p: Placement) -> Tuple[int, int]:
    """The clip pixel a point falls in (clamped to the clip)."""
    return (min(max(int(math.floor(point[0])), 0), p.clip_w - 1),
            min(max(int(math.floor(point[1])), 0), p.clip_h - 1))


def box_outline(p: Placement, box: Sequence[float]) -> List[Point]:
    """A clip box's four corners in view coordinates (a rotated strip turns it into a quad)."""
    x1, y1, x2, y2 = box
    return [clip_to_view(p, x, y) for x, y in ((x1, y1), (x2, y1), (x2, y2), (x1, y2))]


def box_at(boxes: Sequence[Sequence[int]], x: float, y: float) -> Optional[int]:
    """The index of the smallest box holding clip point (x, y) (a face inside another's box is
    the one meant), None when none does."""
    inside = [i for i, (x1, y1, x2, y2) in enumerate(boxes) if x1 <= x <= x2 and y1 <= y <= y2]
    return min(inside, key=lambda i: (boxes[i][2] - boxes[i][0]) * (boxes[i][3] - boxes[i][1])) if inside else None


def box_centre(box: Sequence[int]) -> Tuple[int, int]:
    return (int(box[0]) + int(box[2])) // 2, (int(box[1]) + int(box[3])) // 2


def side(x: float, clip_w: int) -> str:
    """Where in the clip a pick lies, for its label: left, centre or right third."""
    third = clip_w / 3.0 if clip_w > 0 else 1.0
    return "left" if x < third else ("right" if x >= 2 * third else "centre")
