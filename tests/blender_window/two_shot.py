"""A two-person clip made only of public-domain pictures, for Pick Face's window tests and the
README's picture (docs/pick_face.png): scikit-image's astronaut (NASA, public domain) on the left
and its cameraman (`skimage.data.camera()`, CC0) on the right, still, side by side; and speech
cut into pieces for each of them. Runs in the test's own Python (numpy, PyAV, scikit-image)."""

from __future__ import annotations

import wave
from pathlib import Path

import av
import numpy as np

FPS, SIDE = 25, 256  # the clip: 2 * SIDE x SIDE at FPS
RATE = 16000  # the speech's sample rate


def people() -> "tuple[np.ndarray, np.ndarray]":
    """(astronaut, cameraman) as SIDE x SIDE RGB pictures."""
    import skimage.data as data
    from skimage.transform import resize

    def square(img: np.ndarray) -> np.ndarray:
        img = img if img.ndim == 3 else np.stack([img] * 3, -1)
        return (resize(img, (SIDE, SIDE), anti_aliasing=True) * 255).round().astype(np.uint8)

    return square(data.astronaut()), square(data.camera())


def write_clip(path: Path, seconds: float) -> Path:
    """The still two-shot, H.264 lossless (crf 0) in yuv420p, as the engine writes its output."""
    left, right = people()
    rgb = np.ascontiguousarray(np.hstack([left, right]))
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=FPS, options={"crf": "0", "preset": "ultrafast"})
        s.width, s.height, s.pix_fmt = 2 * SIDE, SIDE, "yuv420p"
        for _ in range(int(round(seconds * FPS))):
            c.mux(s.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
        c.mux(s.encode())
    return path


def read_speech(path: Path) -> np.ndarray:
    """A 16 kHz mono PCM16 wav's samples (int16)."""
    with wave.open(str(path), "rb") as f:
        assert (f.getframerate(), f.getnchannels(), f.getsampwidth()) == (RATE, 1, 2), path
        return np.frombuffer(f.readframes(f.getnframes()), "<i2")


def write_wav(path: Path, samples: np.ndarray) -> Path:
    with wave.open(str(path), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(RATE)
        f.writeframes(np.asarray(samples, "<i2").tobytes())
    return path


def frames_of(path: Path) -> "list[np.ndarray]":
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
