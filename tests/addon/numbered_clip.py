"""Clips whose every frame shows its own index (8 black/white stripes = 8 bits), and a reader
that gets the index back from any picture of it: Blender's render, the engine's output. Frame
content comparison is then exact, whatever the colour conversions on the way."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np

SIZE = 64
BITS = 8


def numbered_frame(k: int, size: int = SIZE) -> np.ndarray:
    img = np.zeros((size, size, 3), np.uint8)
    w = size // BITS
    for b in range(BITS):
        if (k >> (BITS - 1 - b)) & 1:
            img[:, b * w:(b + 1) * w] = 255
    return img


def read_number(img: np.ndarray, rows: Optional[slice] = None) -> int:
    """The index shown in an RGB(A) picture (any size, rows top to bottom; `rows`: where to read,
    default the middle half)."""
    h, w = img.shape[:2]
    rows = rows if rows is not None else slice(h // 4, 3 * h // 4)
    row = img[rows, :, :3].astype(float).mean(axis=(0, 2))
    k = 0
    for b in range(BITS):
        x0, x1 = b * w // BITS, (b + 1) * w // BITS
        cell = row[x0 + (x1 - x0) // 4: x1 - (x1 - x0) // 4]
        level = cell.mean() / (255.0 if img.dtype == np.uint8 else 1.0)
        k = (k << 1) | (1 if level > 0.5 else 0)
    return k


def write_numbered_clip(path: Path, *, fps: Optional[float] = None, n: int = 0,
                        pts: Optional[Sequence[int]] = None, time_base: Fraction = Fraction(1, 15360),
                        nominal_rate: Fraction = Fraction(30)) -> Path:
    """A lossless H.264 MP4: `n` frames at constant `fps`, or one frame per entry of `pts`
    (in `time_base` units: a variable-rate clip)."""
    import av

    if pts is None:
        assert fps is not None and n > 0
        rate = Fraction(fps).limit_denominator(1001)
        tb = Fraction(1, int(rate.numerator * 512))
        step = tb.denominator * rate.denominator // rate.numerator
        pts = [k * step for k in range(n)]
        time_base = tb
        nominal_rate = rate
    with av.open(str(path), "w") as out:
        st = out.add_stream("libx264", rate=nominal_rate)
        st.width = st.height = SIZE
        st.pix_fmt = "yuv444p"
        st.options = {"qp": "0", "bf": "0"}
        st.codec_context.time_base = time_base
        st.time_base = time_base
        for k, p in enumerate(pts):
            frame = av.VideoFrame.from_ndarray(numbered_frame(k), format="rgb24")
            frame.pts = int(p)
            frame.time_base = time_base
            for packet in st.encode(frame):
                out.mux(packet)
        for packet in st.encode():
            out.mux(packet)
    return path


def clip_numbers(path: Path) -> List[int]:
    """The index shown by each decoded frame of a video, in order."""
    import av

    with av.open(str(path)) as c:
        return [read_number(f.to_ndarray(format="rgb24")) for f in c.decode(c.streams.video[0])]


def clip_frame_times(path: Path) -> List[float]:
    """Each frame's presentation time in seconds from the first frame."""
    import av

    with av.open(str(path)) as c:
        s = c.streams.video[0]
        pts = [f.pts for f in c.decode(s)]
        return [float((p - pts[0]) * s.time_base) for p in pts]


def render_sequencer(bpy, scene, frames: Sequence[int], folder: Path) -> List[np.ndarray]:
    """The sequencer's picture (RGBA floats, top row first) at each scene frame, as Blender
    renders it (at the scene's resolution: set it before adding strips, which are fitted to it)."""
    r = scene.render
    r.use_sequencer = True
    settings = r.image_settings
    if hasattr(settings, "media_type"):
        settings.media_type = "IMAGE"
    settings.file_format = "PNG"
    scene.view_settings.view_transform = "Standard"
    folder.mkdir(parents=True, exist_ok=True)
    out: List[np.ndarray] = []
    for f in frames:
        scene.frame_set(f)
        path = folder / f"f{f:05d}.png"
        r.filepath = str(path)
        bpy.ops.render.render(write_still=True, scene=scene.name)
        img = bpy.data.images.load(str(path))
        w, h = img.size
        px = np.array(img.pixels[:], dtype=np.float32).reshape(h, w, 4)[::-1]
        bpy.data.images.remove(img)
        out.append(px)
    return out
