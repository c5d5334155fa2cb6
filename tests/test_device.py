"""Device and precision choice."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import CONFORMANCE
from wav2lip_core.device import autocast, cpu_has_native_bf16, pick_device, resolve_precision
from wav2lip_core.errors import Wav2LipError
from wav2lip_core.model import load_checkpoint


def test_auto_device_prefers_cuda_then_mps_then_cpu():
    dev = pick_device("auto")
    if torch.cuda.is_available():
        assert dev.type == "cuda"
    elif torch.backends.mps.is_available():
        assert dev.type == "mps"
    else:
        assert dev.type == "cpu"
    assert pick_device("cpu").type == "cpu"


def test_unusable_device_is_a_clear_error():
    with pytest.raises(Wav2LipError, match="unknown device"):
        pick_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(Wav2LipError, match="no usable CUDA"):
            pick_device("cuda")


def test_auto_precision_per_device():
    assert resolve_precision("auto", torch.device("cuda")) == "fp16"
    assert resolve_precision("auto", torch.device("mps")) == "fp32"
    assert resolve_precision("auto", torch.device("cpu")) == ("bf16" if cpu_has_native_bf16() else "fp32")
    assert resolve_precision("fp32", torch.device("cuda")) == "fp32"
    with pytest.raises(Wav2LipError, match="fp16 is not supported on CPU"):
        resolve_precision("fp16", torch.device("cpu"))
    with pytest.raises(Wav2LipError, match="unknown precision"):
        resolve_precision("int4", torch.device("cpu"))


def test_bf16_autocast_stays_close_to_fp32(checkpoint):
    io = np.load(CONFORMANCE / "model_io.npz")
    model = load_checkpoint(checkpoint)
    mel, face = torch.from_numpy(io["mel"][:1]), torch.from_numpy(io["face"][:1])
    cpu = torch.device("cpu")
    with torch.inference_mode():
        with autocast(cpu, "fp32"):
            exact = model(mel, face).float().numpy()
        with autocast(cpu, "bf16"):
            fast = model(mel, face).float().numpy()
    assert np.abs(exact - io["expected"][:1]).max() < 1e-4
    psnr = 10 * np.log10(1.0 / np.mean((fast - exact) ** 2))
    assert 30 < psnr < 200  # close, yet really computed in another precision
