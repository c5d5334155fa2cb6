"""Real frames with the face boxes the pipeline would use (BlazeFace, padded and smoothed), and
tilted copies of a shared clip, for the landmark, mouth-mask and align tests."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import av
import cv2
import numpy as np

from conftest import BLAZEFACE, MEDIA
from wav2lip_core.media.decode import read_frames
from wav2lip_core.faces.detectors import DetectorSettings
from wav2lip_core.faces.tracking import track_faces
from wav2lip_core.media.probe import probe_video

KATIE = MEDIA / "sadtalker_WDA_KatieHill_000.mp4"  # 512x512
CLIPS = {
    "katie": KATIE,
    "face2": MEDIA / "vretalk_face2.mp4",  # 844x844
    "face1": MEDIA / "vretalk_face1.mp4",  # 700x700
    "portrait": MEDIA / "liveportrait_d13.mp4",  # 720x1280
}


def boxes_for(frames: list[np.ndarray]) -> list[tuple[int, int, int, int]]:
    settings = DetectorSettings(kind="blazeface", weights=str(BLAZEFACE / "blazeface.pth"))
    track = track_faces(enumerate(frames), len(frames), settings)
    assert track.has_face.all(), "BlazeFace lost the face in a test clip"
    return [tuple(int(v) for v in b) for b in track.boxes]


@lru_cache(maxsize=None)
def _faces(path: Path, indices: tuple[int, ...]):
    frames = [f for _, f in read_frames(probe_video(path), indices)]
    return tuple(zip(frames, boxes_for(frames)))


def faces(name: str, indices: tuple[int, ...] = (0, 40, 80)) -> list[tuple[np.ndarray, tuple[int, int, int, int]]]:
    """(BGR frame (a copy), face box y1 y2 x1 x2) for these frames of a shared clip."""
    return [(f.copy(), b) for f, b in _faces(CLIPS[name], indices)]


def face_centre(box) -> tuple[float, float]:
    y1, y2, x1, x2 = box
    return (x1 + x2 - 1) / 2.0, (y1 + y2 - 1) / 2.0


def write_rotated_clip(out: Path, angle: float, count: int, src: Path = KATIE) -> tuple[Path, list[np.ndarray]]:
    """The first `count` frames of `src` turned by `angle` degrees (counter-clockwise as seen)
    about the first frame's face centre, written with PyAV (x264, crf 12) and read back; also
    returns the 2x3 matrices used (source pixels -> tilted pixels), one per frame."""
    frames = [f for _, f in read_frames(probe_video(src), range(count))]
    turn = cv2.getRotationMatrix2D(face_centre(boxes_for(frames[:1])[0]), angle, 1.0)
    h, w = frames[0].shape[:2]
    with av.open(str(out), "w") as c:
        stream = c.add_stream("libx264", rate=25, options={"crf": "12", "preset": "ultrafast"})
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        for f in frames:
            tilted = cv2.warpAffine(f, turn, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
            for packet in stream.encode(av.VideoFrame.from_ndarray(tilted, format="bgr24")):
                c.mux(packet)
        for packet in stream.encode():
            c.mux(packet)
    return out, [turn] * count
