"""Recognise and load a face restorer file with spandrel (the `enhance` extra), with one line
for each thing that can be wrong: file missing, not a restorer, a model of another kind, extra
not installed. enhance.py runs what this loads.

spandrel (Apache-2.0) detects GFPGAN v1.3/v1.4 and RestoreFormer; spandrel-extra-arches
detects CodeFormer, whose code and weights are under a non-commercial licence (S-Lab License
1.0). Weights are never downloaded: the user gives the file.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys

from ..errors import Wav2LipError, reason

# One line per problem; the CLI prints them as `error: ...`.
ENHANCE_NEEDS = 'face restoration needs the enhance extra: pip install "wav2lip-blender[enhance]"'
SUPPORTED = ("GFPGAN", "RestoreFormer", "CodeFormer")
SUPPORTED_TEXT = "GFPGAN v1.3/v1.4, RestoreFormer or CodeFormer"
EXTRA_MODULES = ("spandrel", "spandrel_extra_arches", "torchvision")
SUFFIXES = (".pth", ".pt", ".ckpt", ".safetensors")


class EnhanceError(Wav2LipError):
    """The face restorer cannot be used (file missing or not a restorer, extra not installed)."""


# --- importing spandrel ------------------------------------------------------------------------

_torchvision_ops_library = None  # kept alive: dropping it would undefine the ops again


def _import_torchvision() -> None:
    """Import torchvision, also where its compiled ops cannot load beside this torch.

    A CUDA build of torchvision next to a CPU build of torch (both pinned to the same release,
    e.g. PyPI's torchvision beside the CPU wheel of torch) cannot load its C++ ops, and its
    import then fails on `operator torchvision::nms does not exist`. spandrel imports torchvision
    only for Python-level transforms, and the three restorers never call a torchvision op (we
    normalize the input ourselves), so declaring the missing ops' schemas -- with no kernel: a
    call would still fail -- lets the import finish."""
    global _torchvision_ops_library
    try:
        importlib.import_module("torchvision")
        return
    except RuntimeError as exc:
        if "torchvision::" not in str(exc) or _torchvision_ops_library is not None:
            raise
    import torch

    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[name]
    lib = torch.library.Library("torchvision", "DEF")
    for op in ("nms", "qnms"):  # the ops torchvision registers fake kernels for unconditionally
        lib.define(f"{op}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    _torchvision_ops_library = lib
    importlib.import_module("torchvision")


def _absent(module: str) -> bool:
    if sys.modules.get(module, False) is None:  # blocked on purpose: import would fail the same way
        return True
    return importlib.util.find_spec(module) is None


def import_spandrel():
    """(spandrel, ArchRegistry of the supported restorers, ArchRegistry of everything spandrel
    knows) or EnhanceError naming the install line."""
    missing = [name for name in EXTRA_MODULES if _absent(name)]
    if missing:
        raise EnhanceError(f"{ENHANCE_NEEDS} (not installed: {', '.join(missing)})")
    try:
        _import_torchvision()
        import spandrel
        import spandrel_extra_arches
    except ModuleNotFoundError as exc:  # one of their own dependencies (einops, safetensors)
        raise EnhanceError(f"{ENHANCE_NEEDS} ({exc.name} is not installed)") from None
    except (ImportError, RuntimeError, OSError) as exc:
        raise EnhanceError(f"{ENHANCE_NEEDS} (it does not import: {reason(exc)}; torch and torchvision "
                           "must be builds of the same release from the same index)") from None
    everything = spandrel.MAIN_REGISTRY.copy()
    everything.add(*spandrel_extra_arches.EXTRA_REGISTRY, ignore_duplicates=True)
    ours = spandrel.ArchRegistry()
    ours.add(*(everything[a] for a in SUPPORTED))
    return spandrel, ours, everything


def available() -> bool:
    """Whether the enhance extra imports here (for a UI that greys the option out)."""
    try:
        import_spandrel()
    except EnhanceError:
        return False
    return True


# --- loading -----------------------------------------------------------------------------------

def read_descriptor(path: str, device):
    """spandrel's ModelDescriptor for a supported restorer in `path`, on `device`, in eval mode."""
    spandrel, ours, everything = import_spandrel()
    if not os.path.isfile(path):
        raise EnhanceError(f"face restorer not found: {path} (--enhance takes a {SUPPORTED_TEXT} weights file)")
    if not path.lower().endswith(SUFFIXES):
        raise EnhanceError(f"not a face restorer: {path} (expected a {'/'.join(SUFFIXES)} file of {SUPPORTED_TEXT})")
    loader = spandrel.ModelLoader(device="cpu", registry=ours)
    try:
        state = loader.load_state_dict_from_file(path)
    except Exception as exc:  # pickle, zip and safetensors each raise their own kinds
        raise EnhanceError(f"not a face restorer: {path} cannot be read as model weights ({reason(exc)})") from None
    if not isinstance(state, dict) or not state:
        raise EnhanceError(f"not a face restorer: {path} holds no weights")
    found = next((a.architecture.id for a in ours.architectures("detection") if a.detect(state)), None)
    if found is None:
        other = next((a.architecture.name for a in everything.architectures("detection") if a.detect(state)), None)
        if other is not None:
            raise EnhanceError(f"unsupported face restorer: {path} is a {other} model; "
                               f"--enhance takes {SUPPORTED_TEXT}")
        raise EnhanceError(f"not a face restorer: {path} is no model spandrel recognises "
                           f"(--enhance takes {SUPPORTED_TEXT}; the Wav2Lip checkpoint goes to --checkpoint)")
    try:
        descriptor = loader.load_from_state_dict(state)
    except Exception as exc:  # a damaged or edited file whose keys still look right
        raise EnhanceError(f"face restorer {path} looks like {found} but does not load ({reason(exc)})") from None
    return descriptor.to(device).eval()
