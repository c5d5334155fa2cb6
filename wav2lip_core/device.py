"""Device and precision choice. `fp32` is exact (the conformance tests use it); `auto` takes
the fastest precision that is safe on the hardware at hand."""

from __future__ import annotations

import contextlib
from functools import lru_cache

import torch

from . import protocol
from .errors import Wav2LipError

DEVICES = protocol.names(protocol.DEVICES)
PRECISIONS = protocol.names(protocol.PRECISIONS)


def pick_device(name: str = "auto") -> torch.device:
    """CUDA if available, else Apple MPS, else CPU; an explicit name must be usable."""
    if name not in DEVICES:
        raise Wav2LipError(f"unknown device {name!r}: use one of {', '.join(DEVICES)}")
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise Wav2LipError("--device cuda was asked for but this torch has no usable CUDA GPU; use --device auto or cpu")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise Wav2LipError("--device mps was asked for but Apple MPS is not available; use --device auto or cpu")
    return torch.device(name)


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


def resolve_precision(precision: str, device: torch.device, native_bf16: bool | None = None) -> str:
    """The precision to run; `native_bf16` (default: this CPU's) decides "auto" on a CPU."""
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


def autocast(device: torch.device, precision: str):
    """Context manager running the model in the resolved precision (fp32: no autocast)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.float16 if precision == "fp16" else torch.bfloat16
    return torch.autocast(device_type=device.type, dtype=dtype)
