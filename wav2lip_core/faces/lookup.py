"""The faces on one frame of a clip: what `wav2lip faces VIDEO --time SEC` lists and serve's faces
request answers (Blender's Pick Face outlines them), so a user can choose whom `--face-at X Y
--face-time SEC` or `--speaker X Y AUDIO` means. Boxes are in the clip's upright pixels (x
right, y down), the coordinates those options take.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from ..errors import DetectorError, MediaError
from ..media.decode import read_frames
from ..media.probe import VideoInfo, frame_at, probe_video
from .detectors import Detector, DetectorSettings, detect_faces_in, make_detector


@dataclass(frozen=True)
class FacesFound:
    path: str
    width: int  # the clip's upright size
    height: int
    frame: int  # the clip frame on screen at `time`
    time: float
    boxes: tuple[tuple[int, int, int, int], ...]  # (x1, y1, x2, y2), largest first

    def centre(self, k: int) -> tuple[int, int]:
        x1, y1, x2, y2 = self.boxes[k]
        return (x1 + x2) // 2, (y1 + y2) // 2

    def to_json(self) -> dict:
        return {"video": self.path, "width": self.width, "height": self.height, "frame": self.frame,
                "time": self.time, "faces": [list(b) for b in self.boxes]}


def faces_at(path: str | os.PathLike, time: float, settings: DetectorSettings) -> FacesFound:
    """The faces on the frame shown `time` seconds into the clip (its first frame for an image)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise MediaError(f"video not found: {path}. Check the path.")
    info = probe_video(path)
    if settings.kind == "box":
        raise DetectorError("a fixed --box finds no faces: choose a detector")
    index, _, rows = frame_rows(info, time, make_detector(settings), settings.max_side)
    boxes = []
    for x1, y1, x2, y2 in rows[:, :4]:
        b = (max(0, int(round(x1))), max(0, int(round(y1))), min(info.width, int(round(x2))),
             min(info.height, int(round(y2))))
        if b[2] > b[0] and b[3] > b[1]:
            boxes.append(b)
    boxes.sort(key=lambda b: -(b[2] - b[0]) * (b[3] - b[1]))
    return FacesFound(path=path, width=info.width, height=info.height, frame=index,
                      time=0.0 if info.is_image else float(info.frame_times[index]), boxes=tuple(boxes))


def face_containing(found: FacesFound, x: float, y: float) -> int | None:
    """The index of the face whose box holds (x, y), the smallest when boxes overlap; else the
    nearest whose box is within its own size of the point; else None."""
    best, best_d = None, None
    for k, (x1, y1, x2, y2) in enumerate(found.boxes):
        if x1 <= x <= x2 and y1 <= y <= y2:
            d = -1.0 / max(1, (x2 - x1) * (y2 - y1))  # inside: smaller boxes first
        else:
            cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
            d = float(np.hypot(x - cx, y - cy))
            if d > max(x2 - x1, y2 - y1):
                continue
        if best_d is None or d < best_d:
            best, best_d = k, d
    return best


def frame_rows(info: VideoInfo, time: float, detector: Detector, max_side: int) -> tuple[int, np.ndarray, np.ndarray]:
    """(index, BGR frame, the detector's (K, 5) rows in its pixels) for the clip frame shown
    `time` seconds in (the first for an image)."""
    index = 0 if info.is_image else frame_at(info, float(time))
    bgr = np.asarray(next(iter(read_frames(info, [index])))[1])
    return index, bgr, detect_faces_in(detector, bgr, max_side)


def face_at_point(info: VideoInfo, time: float, point: tuple[float, float], detector: Detector,
                  max_side: int) -> tuple[np.ndarray, np.ndarray] | None:
    """(the frame as RGB, the detector's x1 y1 x2 y2 row, unclipped) of the face at clip pixel
    `point` on the frame shown at `time` (face_containing's rule); None when no face is there."""
    index, bgr, rows = frame_rows(info, time, detector, max_side)
    found = FacesFound(path=info.path, width=info.width, height=info.height, frame=index, time=float(time),
                       boxes=tuple(tuple(int(round(v)) for v in r[:4]) for r in rows))
    k = face_containing(found, *point)
    return None if k is None else (np.ascontiguousarray(bgr[:, :, ::-1]), rows[k, :4].copy())
