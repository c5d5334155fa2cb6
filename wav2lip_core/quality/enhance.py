"""Face restoration (`--enhance PATH`): sharpen the generated face with a restorer the user
supplies, so the 96-pixel mouth does not look blurry next to an HD face.

The file is recognised by spandrel's architecture detection (the `enhance` extra; loading and
its errors live in restorer_file.py): GFPGAN v1.3 / v1.4 and RestoreFormer (spandrel, Apache-2.0
code) and CodeFormer (spandrel-extra-arches; its code and weights are under a non-commercial
licence, S-Lab License 1.0). Weights are never downloaded: the user gives the file, and its
licence is theirs to honour.

Each face is resized to the restorer's input (512x512: GFPGAN needs exactly that and spandrel
would pad a smaller input rather than scale it), restored and resized to the size asked for.
The models are called the way their own projects' inference does it (RGB in [-1, 1] in and out;
CodeFormer with its fidelity weight w), not through spandrel's generic call, which feeds
GFPGAN and CodeFormer [0, 1] images. A GPU restores a batch at once; the CPU goes face by face
(a batch only adds memory there).

Only the restorer lives here. The sync pass's enhance step (paste the generated face into a copy
of the box, restore that, blend it back: sync.blend.restore_pasted) belongs to the sync pass,
which owns the paste; this module never imports `sync`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable, Sequence

import cv2
import numpy as np

from ..errors import Cancelled
from ..model.model_cache import LoadedFiles
# EnhanceError and available() are part of this module's interface: callers need not know the split.
from .restorer_file import ENHANCE_NEEDS, SUPPORTED, EnhanceError, available, read_descriptor

__all__ = ["ENHANCE_NEEDS", "SUPPORTED", "EnhanceError", "available", "Restorer", "RestorerInfo", "Restorers",
           "load_restorer"]

# The input every supported restorer was trained at.
RESTORE_SIZE = 512
# Faces per GPU call: a 512x512 GFPGAN forward holds ~1 GB of activations at batch 8 in fp32.
GPU_BATCH = 8


@dataclass(frozen=True)
class RestorerInfo:
    """What was loaded, for notes and the benchmark."""

    arch: str  # one of SUPPORTED
    path: str
    parameters: int
    size: int = RESTORE_SIZE


class Restorer:
    """A loaded face restorer. `restore` is safe to call from one thread at a time."""

    def __init__(self, descriptor, info: RestorerInfo, device, fidelity: float = 0.5):
        self._descriptor = descriptor
        self.info = info
        self.device = device
        self.fidelity = float(fidelity)

    @property
    def arch(self) -> str:
        return self.info.arch

    def with_fidelity(self, fidelity: float) -> "Restorer":
        """The same loaded weights with another CodeFormer fidelity (per job, no reload)."""
        return Restorer(self._descriptor, self.info, self.device, fidelity)

    def restore(self, faces: Sequence[np.ndarray] | np.ndarray,
                sizes: Sequence[tuple[int, int]] | None = None,
                stop: Callable[[], bool] | None = None) -> list[np.ndarray]:
        """BGR uint8 HxWx3 faces -> restored BGR uint8 faces, each at `sizes[i]` = (width,
        height) or, without `sizes`, at its own size. Giving the paste box's size here spares
        one resize (96 -> 512 -> box instead of 96 -> box -> 512 -> box). `stop` is checked
        before each call of the model (seconds apart on a CPU): Cancelled when it says so."""
        faces = list(faces)
        if sizes is None:
            sizes = [(f.shape[1], f.shape[0]) for f in faces]
        if len(sizes) != len(faces):
            raise ValueError(f"{len(faces)} faces but {len(sizes)} sizes")
        if not faces:
            return []
        import torch

        s = self.info.size
        batch = GPU_BATCH if str(self.device).startswith("cuda") else 1
        out: list[np.ndarray] = []
        i = 0
        while i < len(faces):
            if stop is not None and stop():
                raise Cancelled("cancelled")
            chunk = np.stack([cv2.resize(f, (s, s), interpolation=_interpolation(f.shape[1], s))
                              for f in faces[i:i + batch]])
            try:
                restored = self._forward(chunk)
            except torch.OutOfMemoryError:
                if batch == 1:
                    raise
                torch.cuda.empty_cache()
                batch //= 2  # a smaller GPU or a busy one: fewer faces per call
                continue
            for face, (w, h) in zip(restored, sizes[i:i + batch]):
                out.append(cv2.resize(face, (w, h), interpolation=_interpolation(s, w)))
            i += len(chunk)
        return out

    def _forward(self, faces_bgr: np.ndarray) -> np.ndarray:
        """(B, 512, 512, 3) BGR uint8 -> restored, same layout."""
        import torch

        model = self._descriptor.model
        x = torch.from_numpy(np.ascontiguousarray(faces_bgr[..., ::-1].transpose(0, 3, 1, 2)))
        x = x.to(self.device, dtype=torch.float32).div_(127.5).sub_(1.0)  # RGB in [-1, 1]
        with torch.inference_mode():
            if self.arch == "GFPGAN":
                # The noise buffers saved with the weights instead of fresh noise per frame:
                # the same face restores the same way, so video does not shimmer.
                y = model(x, return_rgb=False, randomize_noise=False)[0]
            elif self.arch == "CodeFormer":
                y = model(x, weight=self.fidelity)[0]
            else:
                y = model(x)[0]
            y = ((y.clamp_(-1.0, 1.0) + 1.0) * 127.5).round_().to(torch.uint8)
        return np.ascontiguousarray(y.permute(0, 2, 3, 1).cpu().numpy()[..., ::-1])


def _interpolation(src: int, dst: int) -> int:
    # Area averaging when shrinking (no aliasing of the restored detail), cubic when enlarging.
    return cv2.INTER_AREA if dst < src else cv2.INTER_CUBIC


def load_restorer(path: str | os.PathLike, device="cpu", fidelity: float = 0.5) -> Restorer:
    """The restorer in `path` on `device`, or EnhanceError with one line saying what is wrong."""
    path = os.fspath(path)
    descriptor = read_descriptor(path, device)
    arch = descriptor.architecture.id
    info = RestorerInfo(arch=str(arch), path=os.path.realpath(path),
                        parameters=sum(p.numel() for p in descriptor.model.parameters()))
    return Restorer(descriptor, info, device, fidelity)


class Restorers:
    """Loaded restorers kept for the next job in a long-lived process (the warm engine), as
    runtime.Executors keeps Wav2Lip models: a file is loaded once per device and handed back
    until it changes on disk (size, mtime, inode). Keeps the `keep` most recently used (a
    full GFPGAN holds ~330 MB)."""

    def __init__(self, keep: int = 1):
        self._loaded = LoadedFiles(keep)

    def get(self, path: str | os.PathLike, device="cpu", fidelity: float = 0.5) -> Restorer:
        return self._loaded.get(path, str(device), load=lambda: load_restorer(path, device)).with_fidelity(fidelity)
