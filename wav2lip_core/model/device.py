"""Device and precision choice. `fp32` is exact (the conformance tests use it); `auto` takes
the fastest precision that is safe on the hardware at hand.

Nothing here imports torch (2-3 s per process) unless a GPU could be present: a CPU run through
OpenVINO never needs it. `pick_device("auto")` first rules GPUs out from what is on disk (a
torch build without CUDA/ROCm, no NVIDIA driver, not an Apple Silicon Mac); only when one may be
there does it ask torch.
"""

from __future__ import annotations

import ast
import contextlib
import importlib.util
import platform
import sys
from functools import lru_cache
from pathlib import Path

from .. import protocol
from ..errors import Wav2LipError

DEVICES = protocol.names(protocol.DEVICES)
PRECISIONS = protocol.names(protocol.PRECISIONS)


class Device(str):
    """A device name ("cpu", "cuda", "cuda:1", "mps") with torch.device's `.type` and `.index`.
    A str, so torch takes it wherever it takes a device, and no torch import is needed to hold one."""

    @property
    def type(self) -> str:
        return self.partition(":")[0]

    @property
    def index(self) -> int | None:
        _, _, i = self.partition(":")
        return int(i) if i else None


def _mps_available() -> bool:
    import torch

    return getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()


def pick_device(name: str = "auto") -> Device:
    """CUDA if available, else Apple MPS, else CPU; an explicit name must be usable."""
    if name not in DEVICES:
        raise Wav2LipError(f"unknown device {name!r}: use one of {', '.join(DEVICES)}")
    if name == "cpu" or (name == "auto" and not gpu_possible()):
        return Device("cpu")
    import torch

    if name == "auto":
        if torch.cuda.is_available():
            return Device("cuda")
        return Device("mps" if _mps_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise Wav2LipError("--device cuda was asked for but this torch has no usable CUDA GPU; use --device auto or cpu")
    if name == "mps" and not _mps_available():
        raise Wav2LipError("--device mps was asked for but Apple MPS is not available; use --device auto or cpu")
    return Device(name)


def gpu_possible() -> bool:
    """False only where torch certainly sees no GPU, decided without importing torch."""
    if "torch" in sys.modules:  # already paid for: ask it
        return True
    if sys.platform == "darwin":
        return platform.machine() == "arm64"  # MPS
    build = torch_build()
    if build is None:  # no torch at all: nothing but the CPU (OpenVINO)
        return False
    if build.get("hip"):
        return True
    if not build.get("cuda"):  # the CPU-only wheels
        return False
    if sys.platform.startswith("linux"):
        # No NVIDIA kernel driver (native Linux) and no WSL GPU bridge: CUDA cannot initialise.
        return Path("/proc/driver/nvidia/version").exists() or Path("/dev/dxg").exists()
    return True


@lru_cache(maxsize=1)
def torch_build() -> dict | None:
    """torch/version.py's string fields (`cuda`, `hip`, `__version__`, ...), read as text: torch
    writes them at build time, and importing the package to learn them costs seconds. None when
    torch is not installed or the file cannot be read."""
    spec = importlib.util.find_spec("torch")
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        try:
            tree = ast.parse((Path(folder) / "version.py").read_text(encoding="utf-8"))
        except (OSError, SyntaxError, ValueError):
            continue
        fields: dict = {}
        for node in tree.body:
            target = node.targets[0] if isinstance(node, ast.Assign) and len(node.targets) == 1 else getattr(node, "target", None)
            value = getattr(node, "value", None)
            if isinstance(target, ast.Name) and isinstance(value, ast.Constant):
                fields[target.id] = value.value
        return fields
    # Unknown layout: say "may have a GPU" so torch itself is asked.
    return {"cuda": "unknown"}


@lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """bf16 autocast is only a win where the CPU computes bf16 natively (AVX512-BF16 or AMX);
    elsewhere torch emulates it and it is slower than fp32."""
    try:
        with open("/proc/cpuinfo") as f:
            return native_bf16_in(f.read())
    except OSError:
        return False


def native_bf16_in(cpuinfo: str) -> bool:
    """Whether /proc/cpuinfo text lists a native bf16 instruction set on its flags lines."""
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags" and {"avx512_bf16", "amx_bf16"} & set(value.split()):
            return True
    return False


def resolve_precision(precision: str, device, native_bf16: bool | None = None) -> str:
    """The precision to run on `device` (a Device or torch.device); `native_bf16` (default: this
    CPU's) decides "auto" on a CPU."""
    if precision not in PRECISIONS:
        raise Wav2LipError(f"unknown precision {precision!r}: use one of {', '.join(PRECISIONS)}")
    if precision != "auto":
        if precision == "fp16" and device.type == "cpu":
            raise Wav2LipError("--precision fp16 is not supported on CPU; use auto, fp32 or bf16")
        return precision
    if device.type == "cuda":
        return "fp16"
    if device.type == "cpu" and (cpu_has_native_bf16() if native_bf16 is None else native_bf16):
        return "bf16"
    return "fp32"


def autocast(device, precision: str):
    """Context manager running the model in the resolved precision (fp32: no autocast)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    import torch

    dtype = torch.float16 if precision == "fp16" else torch.bfloat16
    return torch.autocast(device_type=device.type, dtype=dtype)
