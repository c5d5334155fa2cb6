"""Loading the Wav2Lip generator (network.py) from the released checkpoints unchanged, and the
model's input sizes.

torch is imported only inside the functions that need it: the pipeline reads IMG_SIZE/MEL_SHAPE
from here on every run, also when OpenVINO runs the model and torch is never loaded. `Wav2Lip`
is still importable from here (it loads network.py, and with it torch, on first use).
"""

from __future__ import annotations

import os
import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import CheckpointError, reason
# The mel window's size is the audio features' (media.audio owns it); the model takes it as is.
from ..media.audio import MEL_STEP, NUM_MELS

if TYPE_CHECKING:
    import torch

    from .network import Wav2Lip

IMG_SIZE = 96
# One frame's inputs as the model takes them: mel (1, 80, 16), face (6, 96, 96) = the masked and
# the unmasked crop, channel-wise.
MEL_SHAPE = (1, NUM_MELS, MEL_STEP)
FACE_SHAPE = (6, IMG_SIZE, IMG_SIZE)


def __getattr__(name: str):
    # `from wav2lip_core.model import Wav2Lip` keeps working; torch loads only then.
    if name in ("Wav2Lip", "Conv2d", "Conv2dTranspose"):
        from . import network

        return getattr(network, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# --- loading -----------------------------------------------------------------------------------

_GET_WEIGHTS = (
    "Get the released wav2lip.pth or wav2lip_gan.pth (see the README, 'Weights') and pass its path."
)


def _describe_mismatch(missing: list[str], unexpected: list[str]) -> str:
    def summary(keys: list[str]) -> str:
        groups: dict[str, int] = {}
        for k in keys:
            top = k.split(".", 1)[0]
            groups[top] = groups.get(top, 0) + 1
        return ", ".join(f"{name} ({n})" for name, n in sorted(groups.items(), key=lambda kv: -kv[1])[:5])

    parts = []
    if missing:
        parts.append(f"missing {len(missing)} Wav2Lip keys: {summary(missing)}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected keys: {summary(unexpected)}")
    return "; ".join(parts)


def check_checkpoint_file(path: str | os.PathLike) -> Path:
    """The checkpoint's path, after the checks that need no torch (present, a file, not empty,
    not a saved web page); CheckpointError otherwise. The OpenVINO runtime runs them before
    hashing the file for its cache, so a bad path is one clear line there too."""
    path = Path(path).expanduser()
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}. {_GET_WEIGHTS}")
    if path.is_dir():
        raise CheckpointError(f"checkpoint path is a folder, not a file: {path}. {_GET_WEIGHTS}")
    size = path.stat().st_size
    if size == 0:
        raise CheckpointError(f"checkpoint is empty (0 bytes): {path}. The download failed; download it again.")
    try:
        with open(path, "rb") as f:
            head = f.read(512).lstrip().lower()
    except OSError as e:
        raise CheckpointError(f"cannot read checkpoint {path} ({reason(e)}). Check its permissions.") from None
    if head.startswith((b"<!doctype html", b"<html", b"<head", b"<?xml")) or b"<html" in head:
        raise CheckpointError(
            f"{path} is a web page, not a checkpoint (a failed Google Drive/SharePoint download saves the "
            "confirmation page). Download the file again from its page in a browser."
        )
    return path


def _read_state_dict(path: Path) -> Mapping[str, torch.Tensor]:
    path = check_checkpoint_file(path)
    size = path.stat().st_size
    import torch

    try:
        # weights_only=True: the unpickler only rebuilds tensors and plain containers, so a
        # malicious file cannot run code while we read it.
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "weights_only" in str(e) or "global" in str(e).lower():
            raise CheckpointError(
                f"{path} needs code to load (it is not a plain weights file), so it was refused for safety. "
                "Use the released wav2lip.pth / wav2lip_gan.pth."
            ) from None
        raise CheckpointError(f"{path} is not a readable checkpoint ({reason(e)}). Download it again.") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as e:
        raise CheckpointError(
            f"{path} is truncated or corrupt ({size} bytes; {reason(e)}). Download it again (the released files are about 436 MB)."
        ) from None
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path} holds no state_dict of tensors. {_GET_WEIGHTS}")
    return obj


def _strip_prefix(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # Released files were saved from nn.DataParallel, so every key starts with "module.".
    if sd and all(k.startswith("module.") for k in sd):
        return {k[len("module."):]: v for k, v in sd.items()}
    return dict(sd)


def load_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu") -> Wav2Lip:
    """Load a Wav2Lip checkpoint (released layout, with or without `module.`, or a bare
    state_dict) into a Wav2Lip model in eval mode on `device`. Raises CheckpointError."""
    from .network import Wav2Lip

    path = Path(path).expanduser()
    sd = _strip_prefix(_read_state_dict(path))
    model = Wav2Lip()
    expected = model.state_dict()
    missing = [k for k in expected if k not in sd]
    unexpected = [k for k in sd if k not in expected]
    if missing or unexpected:
        raise CheckpointError(
            f"{path} is not a Wav2Lip generator checkpoint ({_describe_mismatch(missing, unexpected)}). "
            "Is it the lip-sync expert (SyncNet) or another model? " + _GET_WEIGHTS
        )
    wrong = [k for k, v in sd.items() if tuple(v.shape) != tuple(expected[k].shape)]
    if wrong:
        k = wrong[0]
        raise CheckpointError(
            f"{path} has {len(wrong)} tensors of the wrong shape (e.g. {k}: {tuple(sd[k].shape)} instead of "
            f"{tuple(expected[k].shape)}). {_GET_WEIGHTS}"
        )
    model.load_state_dict(sd, strict=True)
    return model.to(device).eval()


def checkpoint_kind(path: str | os.PathLike) -> str:
    """A short description of a checkpoint file for install/--check output."""
    p = Path(path)
    size_mb = p.stat().st_size / 1e6
    return f"Wav2Lip generator ({size_mb:.0f} MB{', with optimizer state' if size_mb > 300 else ''})"


def save_untrained_checkpoint(path: str | os.PathLike, seed: int = 0) -> Path:
    """Write a Wav2Lip checkpoint with seeded random initial weights, in the released layout.

    For running the whole tool where no trained weights exist (the demo, smoke tests). Its
    output is NOT lip-synced; it only proves the path works end to end."""
    import torch

    from .network import Wav2Lip

    torch.manual_seed(seed)
    model = Wav2Lip().eval()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sd = {f"module.{k}": v for k, v in model.state_dict().items()}
    torch.save({"state_dict": sd, "global_step": 0, "global_epoch": 0, "untrained_seed": seed}, path)
    return path
