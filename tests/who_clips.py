"""Small test clips built from the shared real footage, each with its ground truth, for the shot
cut tests and the "who speaks" tests: two people side by side whose sides swap at a cut, a person
who leaves the frame and comes back, flashes, a fast pan, and hard cuts between people and zooms.

Every builder writes an H.264 clip (x264 ultrafast, crf 14, yuv420p, 25 fps) into `dirpath` and
returns a `WhoClip`. Ground truth, all in output-frame pixels and frame indices:

* `cuts`: frames that start a new shot (never 0);
* `boxes`: person name -> one entry per frame: that person's tile (x1, y1, x2, y2; x2/y2
  exclusive, clipped to the frame) or None where the person is not in the picture. Names are the
  `SOURCES` keys ("face1", "katie", ...); a tile holds the whole source frame, so the face is
  inside it (where exactly is the detector's business);
* `flashes`: frames that are flashed (brightened / mixed towards white), not cuts;
* `window`: fast_pan only: per frame the crop window (x1, y1, x2, y2) in the panned scene.

`read_small` decodes a clip as the tracker sees it: RGB, area-downscaled to max side 256.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import av
import cv2
import numpy as np

from conftest import MEDIA

SOURCES = {
    "face1": MEDIA / "vretalk_face1.mp4",  # 700x700, 135 frames
    "face2": MEDIA / "vretalk_face2.mp4",  # 844x844, 125 frames
    "katie": MEDIA / "sadtalker_WDA_KatieHill_000.mp4",  # 512x512, 200 frames
    "portrait": MEDIA / "liveportrait_d13.mp4",  # 720x1280, 352 frames
}
FPS = 25
Box = tuple[int, int, int, int]


@dataclass
class WhoClip:
    path: Path
    n_frames: int
    width: int
    height: int
    cuts: list[int] = field(default_factory=list)
    boxes: dict[str, list[Box | None]] = field(default_factory=dict)
    flashes: list[int] = field(default_factory=list)
    window: list[Box] | None = None


def source_frames(name: str, count: int, start: int = 0) -> list[np.ndarray]:
    """`count` RGB frames of a shared clip from frame `start` (ping-pong past its end)."""
    frames = []
    with av.open(str(SOURCES[name])) as c:
        for f in c.decode(video=0):
            frames.append(f.to_ndarray(format="rgb24"))
            if len(frames) >= start + count:
                break
    period = 2 * len(frames) - 2 if len(frames) > 1 else 1
    out = []
    for k in range(start, start + count):  # bounce at the end instead of jumping (no cut)
        k %= period
        out.append(frames[k if k < len(frames) else period - k])
    return out


def _tiles(name: str, count: int, size: int, start: int = 0) -> list[np.ndarray]:
    return [_square(f, size) for f in source_frames(name, count, start)]


def _square(rgb: np.ndarray, size: int, zoom: float = 1.0) -> np.ndarray:
    """The centred square of the frame (a 1/zoom part of it), resized to size x size."""
    h, w = rgb.shape[:2]
    side = int(min(h, w) / zoom)
    y, x = (h - side) // 2, (w - side) // 2
    return cv2.resize(rgb[y:y + side, x:x + side], (size, size), interpolation=cv2.INTER_AREA)


def write_clip(path: Path, frames: list[np.ndarray]) -> Path:
    h, w = frames[0].shape[:2]
    with av.open(str(path), "w") as c:
        stream = c.add_stream("libx264", rate=FPS, options={"crf": "14", "preset": "ultrafast"})
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        for f in frames:
            c.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")))
        c.mux(stream.encode())
    return path


def read_small(path: Path, max_side: int = 256) -> Iterator[np.ndarray]:
    """The clip's frames as the tracker keeps them: RGB, area-downscaled to `max_side`."""
    with av.open(str(path)) as c:
        for f in c.decode(video=0):
            rgb = f.to_ndarray(format="rgb24")
            h, w = rgb.shape[:2]
            scale = min(1.0, max_side / max(h, w))
            if scale < 1.0:
                size = (max(1, round(w * scale)), max(1, round(h * scale)))
                rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
            yield rgb


def _clip_box(x1: int, y1: int, x2: int, y2: int, w: int, h: int) -> Box | None:
    b = (max(0, x1), max(0, y1), min(w, x2), min(h, y2))
    return b if b[2] > b[0] and b[3] > b[1] else None


def side_by_side_swap(dirpath: Path, frames: int = 60, cut_at: int = 30, size: int = 256,
                      left: str = "face1", right: str = "katie") -> WhoClip:
    """Two people side by side (each a size x size tile, frame 2*size x size); from `cut_at` on
    their sides are swapped: the same colours before and after, and a circular shift by half the
    width would explain the new frame."""
    a, b = _tiles(left, frames, size), _tiles(right, frames, size)
    out, boxes = [], {left: [], right: []}
    for i in range(frames):
        swap = i >= cut_at
        out.append(np.hstack([b[i], a[i]] if swap else [a[i], b[i]]))
        lbox, rbox = (0, 0, size, size), (size, 0, 2 * size, size)
        boxes[left].append(rbox if swap else lbox)
        boxes[right].append(lbox if swap else rbox)
    path = write_clip(Path(dirpath) / "side_by_side_swap.mp4", out)
    return WhoClip(path, frames, 2 * size, size, cuts=[cut_at], boxes=boxes)


def leave_and_return(dirpath: Path, frames: int = 80, gone: tuple[int, int] = (25, 55), slide: int = 6,
                     size: int = 256, person: str = "face1", other: str | None = "katie") -> WhoClip:
    """`person` in the left tile slides out to the left over `slide` frames ending at gone[0],
    is away (a blurred background tile shows) until gone[1], then slides back in over `slide`
    frames from gone[1]. `slide=0`: the person vanishes and reappears at once. `other`, if
    given, stays in the right tile all along. One camera shot: no cuts."""
    a = _tiles(person, frames, size)
    background = cv2.GaussianBlur(a[0], (0, 0), size / 8)
    right = _tiles(other, frames, size) if other else None
    out, boxes = [], {person: []}
    if other:
        boxes[other] = []
    for i in range(frames):
        if i < gone[0] - slide:
            x = 0
        elif i < gone[0]:  # sliding out: fully out at gone[0]
            x = -round(size * (i - (gone[0] - slide) + 1) / (slide + 1))
        elif i < gone[1]:
            x = -size
        elif i < gone[1] + slide:  # sliding in
            x = -size + round(size * (i - gone[1] + 1) / (slide + 1))
        else:
            x = 0
        tile = background.copy()
        if x > -size:
            tile[:, :size + x] = a[i][:, -x:]
        row = [tile] + ([right[i]] if right else [])
        out.append(np.hstack(row))
        boxes[person].append(_clip_box(x, 0, x + size, size, size, size))
        if other:
            boxes[other].append((size, 0, 2 * size, size))
    width = size * (2 if other else 1)
    path = write_clip(Path(dirpath) / "leave_and_return.mp4", out)
    return WhoClip(path, frames, width, size, cuts=[], boxes=boxes)


def flash(rgb: np.ndarray, kind: str) -> np.ndarray:
    """A flashed copy: "white" mixes 60 % towards white, "bright" doubles the brightness
    (clipping), "burn" mixes 90 % towards white (nearly washed out)."""
    f = rgb.astype(np.float32)
    if kind == "white":
        f = 0.4 * f + 0.6 * 255
    elif kind == "bright":
        f = 2.0 * f + 20
    elif kind == "burn":
        f = 0.1 * f + 0.9 * 255
    else:
        raise ValueError(f"unknown flash kind {kind!r}")
    return np.clip(f, 0, 255).astype(np.uint8)


def flashes(dirpath: Path, frames: int = 60, at: tuple[tuple[int, int, str], ...] = ((12, 1, "white"), (27, 2, "bright"), (44, 3, "burn")),
            size: int = 256, name: str = "katie") -> WhoClip:
    """A shared clip (size x size) with flashes: `at` holds (first frame, length, kind)."""
    src = _tiles(name, frames, size)
    flashed = {}
    for first, length, kind in at:
        for i in range(first, first + length):
            flashed[i] = kind
    out = [flash(f, flashed[i]) if i in flashed else f for i, f in enumerate(src)]
    path = write_clip(Path(dirpath) / f"flashes_{name}.mp4", out)
    full = (0, 0, size, size)
    return WhoClip(path, frames, size, size, boxes={name: [full] * frames}, flashes=sorted(flashed))


def fast_pan(dirpath: Path, frames: int = 60, step: float = 0.15, size: int = 256, name: str = "portrait",
             scene_width: int = 640) -> WhoClip:
    """A size x size window panning `step` of its width per frame across a real frame scaled to
    `scene_width` (bouncing at the sides; it also drifts down and up by step/3 of its height,
    starting near the face),
    so the content moves fast but the shot goes on: no cuts."""
    src = source_frames(name, frames)
    h, w = src[0].shape[:2]
    scene_h = round(h * scene_width / w)
    dx, dy = step * size, step * size / 3
    x, y = 0.0, (scene_h - size) / 2 - size / 2  # from the face's height (the portrait's middle)
    out, window = [], []
    for f in src:
        scene = cv2.resize(f, (scene_width, scene_h), interpolation=cv2.INTER_CUBIC)
        xi, yi = int(round(x)), int(round(y))
        out.append(scene[yi:yi + size, xi:xi + size])
        window.append((xi, yi, xi + size, yi + size))
        if not 0 <= x + dx <= scene_width - size:
            dx = -dx
        if not 0 <= y + dy <= scene_h - size:
            dy = -dy
        x, y = x + dx, y + dy
    path = write_clip(Path(dirpath) / f"fast_pan_{name}.mp4", out)
    return WhoClip(path, frames, size, size, window=window)


# (source, zoom, frames): face1, katie, face2, katie again at 1.8x zoom, face1 again (the same
# person as the first shot, later in its clip), the portrait clip's centred square.
HARD_CUT_SHOTS = (("face1", 1.0, 14), ("katie", 1.0, 14), ("face2", 1.0, 14), ("katie", 1.8, 14),
                  ("face1", 1.0, 14), ("portrait", 1.0, 14))


def hard_cuts(dirpath: Path, shots=HARD_CUT_SHOTS, size: int = 256) -> WhoClip:
    """Shots (source, zoom, frame count) one after the other, size x size; each starts where the
    source's previous shot stopped (a repeated source continues later in its clip)."""
    out, cuts, boxes = [], [], {name: [] for name, _, _ in shots}
    used: dict[str, int] = {}
    for name, zoom, count in shots:
        if out:
            cuts.append(len(out))
        start = used.get(name, 0)
        used[name] = start + count + 20  # skip a little so a repeat is not the same picture
        out += [_square(f, size, zoom) for f in source_frames(name, count, start)]
        for person in boxes:
            boxes[person] += [(0, 0, size, size) if person == name else None] * count
    path = write_clip(Path(dirpath) / "hard_cuts.mp4", out)
    return WhoClip(path, len(out), size, size, cuts=cuts, boxes=boxes)
