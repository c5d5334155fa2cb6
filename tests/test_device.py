"""Device and precision choice."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import CONFORMANCE, ROOT
from wav2lip_core.model.device import Device, autocast, native_bf16_in, pick_device, resolve_precision, torch_build
from wav2lip_core.errors import Wav2LipError
from wav2lip_core.model.checkpoint import load_checkpoint


def test_auto_device_is_the_cpu_when_no_gpu_is_visible():
    """With CUDA hidden (and no Apple GPU on Linux) auto must fall back to the CPU, not fail."""
    code = "from wav2lip_core.model.device import pick_device; print(pick_device('auto').type)"
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", PYTHONPATH=str(ROOT))
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == ("mps" if sys.platform == "darwin" and torch.backends.mps.is_available() else "cpu")
    assert pick_device("cpu").type == "cpu"


@pytest.mark.skipif(sys.platform == "darwin" or torch.version.cuda is not None or torch.version.hip is not None,
                    reason="this torch may see a GPU, so choosing the device rightly asks torch")
def test_choosing_the_cpu_needs_no_torch():
    """With a CPU-only torch, --device auto (and cpu) are decided without importing torch (2-3 s)."""
    code = ("import sys; from wav2lip_core.model.device import pick_device, resolve_precision; "
            "d = pick_device('auto'); c = pick_device('cpu'); p = resolve_precision('auto', d); "
            "print(d, c, p, 'torch' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, PYTHONPATH=str(ROOT)),
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    device, cpu, _, imported = r.stdout.split()
    assert (device, cpu, imported) == ("cpu", "cpu", "False")


def test_torch_build_is_read_as_torch_reports_it():
    build = torch_build()
    assert build["__version__"] == torch.__version__
    assert build.get("cuda") == torch.version.cuda and build.get("hip") == torch.version.hip


def test_device_names_work_where_torch_takes_a_device():
    assert torch.zeros(2, device=Device("cpu")).device == torch.device("cpu")
    assert (Device("cuda:1").type, Device("cuda:1").index, str(Device("cuda:1"))) == ("cuda", 1, "cuda:1")
    assert (Device("mps").type, Device("mps").index) == ("mps", None)
    assert torch.device(Device("cuda:1")) == torch.device("cuda", 1)


def test_unusable_device_is_a_clear_error():
    with pytest.raises(Wav2LipError, match="unknown device"):
        pick_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(Wav2LipError, match="no usable CUDA"):
            pick_device("cuda")


# Flags lines as Linux prints them (trimmed): an AVX2 laptop, an AVX-512 server without bf16, a
# Sapphire Rapids server (AMX), and a Cooper Lake one (AVX512-BF16 only).
AVX2 = "processor\t: 0\nflags\t\t: fpu sse sse2 ssse3 sse4_1 sse4_2 avx avx2 fma bmi2\n"
AVX512 = "flags\t\t: avx avx2 avx512f avx512bw avx512vl avx512_vnni\n"
SPR = "flags\t\t: avx2 avx512f avx512_bf16 avx512_fp16 amx_bf16 amx_tile amx_int8\n"
CPX = "flags\t\t: avx2 avx512f avx512_bf16\nbugs\t\t: spectre_v1\n"


def test_native_bf16_is_read_from_the_flags_line():
    assert [native_bf16_in(t) for t in (AVX2, AVX512, SPR, CPX, "")] == [False, False, True, True, False]
    assert not native_bf16_in("model name\t: avx512_bf16 marketing text\nflags\t\t: avx2\n")


def test_auto_precision_per_device():
    assert resolve_precision("auto", torch.device("cuda")) == "fp16"
    assert resolve_precision("auto", torch.device("mps")) == "fp32"
    assert resolve_precision("auto", torch.device("cpu"), native_bf16=True) == "bf16"
    assert resolve_precision("auto", torch.device("cpu"), native_bf16=False) == "fp32"
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
