"""The model files a user brings, checked with the engine: the Wav2Lip checkpoint (loaded without
executing code from it) and the face detector's weights (BlazeFace with its anchors, or S3FD),
plus where face-alignment would find them. Never downloads anything. Standard library only.
"""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path
from typing import Optional, Tuple

from .setup_base import SetupError, last_line, run
from .wire import protocol


def weights_help(command: str = "python3 install.py") -> str:
    how = (f"run: {command} --checkpoint PATH" if command else "pick it in Checkpoint (add-on preferences)")
    return ("get wav2lip_gan.pth (or wav2lip.pth) from the Wav2Lip authors (github.com/Rudrabha/Wav2Lip, "
            f"'Getting the weights'; research/non-commercial licence) and {how}")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


VERIFY = (
    "import sys\n"
    "from wav2lip_core.errors import Wav2LipError\n"
    "from wav2lip_core.model.checkpoint import load_checkpoint, checkpoint_kind\n"
    "try:\n"
    "    load_checkpoint(sys.argv[1])\n"
    "except Wav2LipError as e:\n"
    "    print(e); sys.exit(1)\n"
    "print(checkpoint_kind(sys.argv[1]))\n"
)


def verify_checkpoint(py: Path, path: Path, command: str = "python3 install.py") -> str:
    """Load the checkpoint with the engine (never executing code from it); its kind or an error."""
    if not path.is_file():
        raise SetupError(f"checkpoint not found: {path}; {weights_help(command)}")
    res = run([py, "-c", VERIFY, path], capture_output=True, text=True, cwd=tempfile.gettempdir())
    if res.returncode != 0:
        # The engine prints our one-line reason on stdout; a crash leaves a traceback (or nothing).
        why = last_line(res.stdout) or last_line(res.stderr) or f"the engine exited with code {res.returncode} and said nothing"
        raise SetupError(f"the engine could not load the checkpoint {path}: {why}")
    return res.stdout.strip()


# Face detector weights by file name, as face-alignment names them (protocol.py): a BlazeFace
# model needs its anchors file beside it. Looked for in this order in a folder.
DETECTOR_FILES = (protocol.BLAZEFACE_FILES["blazeface"], (protocol.S3FD_FILE, None),
                  protocol.BLAZEFACE_FILES["blazeface-back"])

VERIFY_DETECTOR = (
    "import sys\n"
    "try:\n"
    "    import numpy, torch\n"
    "    sd = torch.load(sys.argv[1], map_location='cpu', weights_only=True)\n"
    "    n = sum(1 for v in (sd.values() if isinstance(sd, dict) else ()) if hasattr(v, 'shape'))\n"
    "    if not n:\n"
    "        raise ValueError('it holds no tensors')\n"
    "    shape = numpy.load(sys.argv[2]).shape if len(sys.argv) > 2 else None\n"
    "except Exception as e:\n"
    "    print(f'{type(e).__name__}: {e}'.splitlines()[0]); sys.exit(1)\n"
    "print(n, 'tensors' + (f', anchors {shape[0]}x{shape[1]}' if shape else ''))\n"
)


def detector_files(path: Path) -> Tuple[Path, Optional[Path]]:
    """(weights, anchors or None): a .pth (BlazeFace's anchors .npy beside it), or a folder
    holding one of face-alignment's files."""
    if path.is_dir():
        for name, anchors in DETECTOR_FILES:
            if (path / name).is_file():
                return detector_files(path / name)
        raise SetupError(f"no face detector weights in {path}: it needs blazeface.pth + anchors.npy "
                         "(or s3fd-619a316812.pth); give the .pth file")
    if not path.is_file():
        raise SetupError(f"detector weights not found: {path}; give blazeface.pth (with anchors.npy beside it) "
                         "or s3fd-619a316812.pth")
    name = path.name.lower()
    if "s3fd" in name:
        return path, None
    anchors = path.with_name("anchorsback.npy" if "back" in name else "anchors.npy")
    if not anchors.is_file():
        raise SetupError(f"BlazeFace anchors not found: {anchors} is missing; put the {anchors.name} that comes "
                         f"with {path.name} beside it")
    return path, anchors


def verify_detector_weights(py: Path, path: Path) -> Tuple[Path, str]:
    """(the weights file to record, what the engine found in it)."""
    weights, anchors = detector_files(path)
    res = run([py, "-c", VERIFY_DETECTOR, weights, *([anchors] if anchors else [])], capture_output=True, text=True,
              cwd=tempfile.gettempdir())
    if res.returncode != 0:
        why = last_line(res.stdout) or last_line(res.stderr) or f"exit code {res.returncode}"
        raise SetupError(f"the engine could not load the detector weights {weights}: {why}; download them again")
    return weights, res.stdout.strip()


def describe_file(py: Path, kind: str, path: Path) -> str:
    """One line for a picked file: what the engine found in it and its sha256 prefix."""
    if kind == "checkpoint":
        what = verify_checkpoint(py, path, command="").splitlines()[0]
        return f"{what}; sha256 {sha256_file(path)[:12]}"
    weights, what = verify_detector_weights(py, path)
    return f"{weights.name}: {what}; sha256 {sha256_file(weights)[:12]}"


def detector_weights_status(py: Path, recorded: Optional[str], command: str = "python3 install.py") -> Tuple[bool, str]:
    """The recorded BlazeFace/S3FD weights, else the ones where face-alignment looks (never
    downloaded here); Haar ships with OpenCV."""
    if recorded:
        try:
            weights, anchors = detector_files(Path(recorded))
        except SetupError as e:
            return False, f"recorded, but {e}"
        return True, f"{weights}" + (f" + {anchors.name}" if anchors else "")
    code = ("import torch.hub, os; d = os.path.join(torch.hub.get_dir(), 'checkpoints'); "
            f"print(d); print(*[f for f in {(protocol.BLAZEFACE_FILES['blazeface'][0], protocol.S3FD_FILE)!r} "
            "if os.path.isfile(os.path.join(d, f))])")
    res = run([py, "-c", code], capture_output=True, text=True, cwd=tempfile.gettempdir())
    if res.returncode != 0:
        return False, "cannot ask the engine (is torch installed?)"
    lines = res.stdout.splitlines() + [""]
    folder, have = lines[0], lines[1].split()
    if have:
        return True, f"{', '.join(have)} in {folder}"
    record = f"record them: {command} --detector-weights PATH" if command else "pick them in Detector Weights"
    return False, (f"no BlazeFace/S3FD weights in {folder} (put blazeface.pth + anchors.npy or s3fd-619a316812.pth "
                   f"there, or {record}); the Haar detector bundled with OpenCV works meanwhile")
