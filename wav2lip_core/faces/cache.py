"""Detection cache: a FaceTrack per (video content, detector settings), as .npz files.

Detection is the slowest stage that does not depend on the audio, so re-running a clip with new
audio, or after a cancel, reuses it. The key hashes the video's bytes rather than its path or
mtime, so a renamed/copied clip still hits and an overwritten one misses.

Content hash: files up to FULL_HASH_LIMIT are hashed whole (sha256 ran at ~230 MB/s on the busy 2-core dev
machine, so 64 MiB costs ~0.3 s; the sampled read of a 190 MiB file took 0.04 s); larger files hash their size, the first and last
EDGE bytes and SAMPLES evenly spaced SAMPLE-byte blocks, a fixed ~10 MiB read whatever the file
size. An edit that keeps the size and touches none of the sampled bytes would be missed; a
re-encode or trim of compressed video changes the size and the container header, so this is
accepted for the multi-gigabyte files where a full read would take longer than a short detection.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path

import numpy as np

from ..files import write_atomic
from .detectors import DetectorSettings
from .tracking import FaceTrack

CACHE_VERSION = 1
FULL_HASH_LIMIT = 64 << 20
EDGE = 4 << 20
SAMPLES = 16
SAMPLE = 128 << 10


def default_folder() -> Path:
    import platformdirs

    return Path(platformdirs.user_cache_dir("wav2lip-blender")) / "faces"


def content_hash(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    size = os.path.getsize(path)
    h.update(f"size={size};".encode())
    with open(path, "rb") as f:
        if size <= FULL_HASH_LIMIT:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        else:
            h.update(f.read(EDGE))
            step = (size - 2 * EDGE) // (SAMPLES + 1)
            for i in range(1, SAMPLES + 1):
                f.seek(EDGE + i * step)
                h.update(f.read(SAMPLE))
            f.seek(size - EDGE)
            h.update(f.read(EDGE))
    return h.hexdigest()


class FaceCache:
    def __init__(self, folder: str | os.PathLike | None = None):
        self.folder = Path(folder) if folder is not None else default_folder()

    def key(self, video_path: str | os.PathLike, settings: DetectorSettings) -> str:
        fields = {"cache": CACHE_VERSION, "content": content_hash(video_path), "settings": settings.cache_key_fields()}
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:40]

    def path(self, key: str) -> Path:
        return self.folder / f"{key}.npz"

    def load(self, key: str) -> FaceTrack | None:
        """The cached track, or None when absent or unreadable (a bad file is just a miss)."""
        p = self.path(key)
        try:
            with np.load(p, allow_pickle=False) as z:
                if int(z["version"]) != CACHE_VERSION:
                    return None
                boxes = np.asarray(z["boxes"], np.int32)
                has_face = np.asarray(z["has_face"], bool)
                shot_starts = tuple(int(i) for i in z["shot_starts"]) if "shot_starts" in z.files else ()
        except Exception:
            return None
        if boxes.ndim != 2 or boxes.shape[1] != 4 or has_face.shape != (len(boxes),):
            return None
        return FaceTrack(boxes=boxes, has_face=has_face, detected_frames=0, from_cache=True, shot_starts=shot_starts)

    def save(self, key: str, track: FaceTrack) -> None:
        """Write atomically (files.write_atomic: temp file + rename) so a crash or a concurrent
        reader never sees a partial file. Failing to write is a warning: the cache only saves
        time."""
        def arrays(f) -> None:
            np.savez(f, version=np.int64(CACHE_VERSION), boxes=np.asarray(track.boxes, np.int32),
                     has_face=np.asarray(track.has_face, bool), shot_starts=np.asarray(track.shot_starts, np.int64))

        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            write_atomic(self.path(key), arrays)
        except OSError as exc:
            warnings.warn(f"face cache not written to {self.folder}: {exc}", stacklevel=2)
