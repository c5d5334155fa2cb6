"""What runs the model on a batch: torch (any device, autocast precisions) or OpenVINO (CPU).

The pipeline only sees `Runner.forward(mel, face) -> np.ndarray` (inputs as the model takes them:
mel (B,1,80,16), face (B,6,96,96), float32). A runner holds the loaded/compiled model and nothing
about a job, so one process can load it once and reuse it for many jobs (a warm engine).

OpenVINO: the torch module is converted once per checkpoint (`ov.convert_model`, ~10-25 s on a
2-core CPU) and the result is kept in a disk cache keyed by the checkpoint's content, the
OpenVINO version and the precision, so later runs only read and compile it (well under a second).
Measured on the same graph (bench/bench_runtime.py): ~1.4x torch's fp32 speed on a 2-core AVX2
CPU, within ~1e-6 of torch. `int8` is NNCF post-training quantization of the converted model,
calibrated on the job's own face crops and mel windows; the quantized model is cached per
checkpoint, so the first int8 job on a checkpoint calibrates for the others.

`import openvino` / `import nncf` happen only when such a runner is loaded.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import sys
import tempfile
import warnings
import zlib
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from . import protocol
from .errors import Wav2LipError

RUNTIMES = protocol.names(protocol.RUNTIMES)
MEL_SHAPE = (1, 80, 16)
FACE_SHAPE = (6, 96, 96)
# Bump when what is written to the model cache changes meaning (graph, inputs, quantization).
MODEL_CACHE_VERSION = 1
# The folder for converted models; tests point every process of a session at one folder.
ENV_MODEL_CACHE = "WAV2LIP_MODEL_CACHE"
# Entries kept (least recently used go first): an fp32 entry is ~145 MB, an int8 one ~40 MB, and
# a user has one or two checkpoints.
MAX_ENTRIES = 4
# Calibration for int8: this many batches of the job's own inputs (the measurement used
# 4 batches of 16; NNCF's statistics are per-tensor min/max-like, so more adds little).
CALIBRATION_BATCHES = 4
_INT8_NEEDS = ("--precision int8 needs NNCF: install the int8 extra "
               "(pip install 'wav2lip-blender[int8]') or use --precision fp32")


class Limit(Protocol):
    """How many frames one forward may take (pipeline.BatchLimit: halves on GPU out-of-memory)."""

    size: int

    def halve(self) -> None: ...


class Runner(Protocol):
    name: str  # "torch" or "openvino"
    precision: str  # what actually runs: fp32, fp16, bf16, int8
    device: str

    def forward(self, mel: np.ndarray, face: np.ndarray, limit: Limit | None = None) -> np.ndarray: ...


# --- choosing ---------------------------------------------------------------------------------

def openvino_available() -> bool:
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


def resolve_runtime(runtime: str, device_type: str, precision: str) -> str:
    """The runtime that runs: `auto` is OpenVINO on a CPU (when it is installed), torch on
    CUDA/MPS; an explicit choice must fit the device and precision."""
    if runtime not in RUNTIMES:
        raise Wav2LipError(f"unknown runtime {runtime!r}: use one of {', '.join(RUNTIMES)}")
    if runtime == "auto":
        if device_type == "cpu" and (precision == "int8" or openvino_available()):
            runtime = "openvino"
        else:
            runtime = "torch"
    if runtime == "openvino":
        if device_type != "cpu":
            raise Wav2LipError(f"--runtime openvino runs on the CPU only; use --device cpu, or --runtime torch "
                               f"for {device_type}")
        if not openvino_available():
            raise Wav2LipError("--runtime openvino needs the openvino package: re-run install.py "
                               "(or pip install openvino), or use --runtime torch")
    if precision == "int8" and runtime != "openvino":
        raise Wav2LipError("--precision int8 runs with OpenVINO on the CPU only: use --device cpu "
                           "--runtime openvino (or auto)")
    return runtime


def load_runner(checkpoint: str | os.PathLike, *, runtime: str, device, precision: str,
                cache_dir: str | os.PathLike | None = None, use_cache: bool = True) -> Runner:
    """A runner for a resolved runtime/device/precision (see resolve_runtime)."""
    if runtime == "torch":
        from .model import load_checkpoint

        return TorchRunner(load_checkpoint(checkpoint, device=device), device, precision)
    return OpenVINORunner(checkpoint, precision=precision, cache=ModelCache(cache_dir) if use_cache else None)


# --- torch ------------------------------------------------------------------------------------

class TorchRunner:
    name = "torch"

    def __init__(self, model, device, precision: str):
        import torch

        self.model = model
        self._device = torch.device(device)
        self.device = str(self._device)
        self.precision = precision

    def forward(self, mel: np.ndarray, face: np.ndarray, limit: Limit | None = None) -> np.ndarray:
        """The model in slices of at most `limit.size`; an out-of-memory halves the limit and
        retries the slice rather than failing a long job on one big batch."""
        import torch

        from .device import autocast

        mel_t = torch.as_tensor(np.ascontiguousarray(mel)).to(self._device)
        face_t = torch.as_tensor(np.ascontiguousarray(face)).to(self._device)
        outs, i = [], 0
        while i < len(face_t):
            n = limit.size if limit is not None else len(face_t)
            try:
                with torch.inference_mode(), autocast(self._device, self.precision):
                    out = self.model(mel_t[i:i + n], face_t[i:i + n])
            except torch.OutOfMemoryError:
                if limit is None:
                    raise
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                limit.halve()
                continue
            outs.append(out.float().cpu().numpy())
            i += n
        return outs[0] if len(outs) == 1 else np.concatenate(outs)


def as_runner(model_or_runner, device, precision: str) -> Runner:
    """A Runner as is; a torch module wrapped in a TorchRunner."""
    if isinstance(model_or_runner, (TorchRunner, OpenVINORunner)):
        return model_or_runner
    return TorchRunner(model_or_runner, device, precision)


# --- the converted-model cache ----------------------------------------------------------------

def default_model_folder() -> Path:
    env = os.environ.get(ENV_MODEL_CACHE)
    if env:
        return Path(env)
    import platformdirs

    return Path(platformdirs.user_cache_dir("wav2lip-blender")) / "models"


class ModelCache:
    """Converted models as folders `<key>/model.xml + model.bin + meta.json`. A folder is written
    beside its final place and renamed into it, so a reader never sees a partial one; a folder
    whose files do not read back (or whose .bin's checksum differs) is a miss."""

    def __init__(self, folder: str | os.PathLike | None = None):
        self.folder = Path(folder) if folder is not None else default_model_folder()

    def key(self, checkpoint: str | os.PathLike, precision: str) -> str:
        import openvino

        from .cache import content_hash

        fields = {"cache": MODEL_CACHE_VERSION, "content": content_hash(checkpoint), "precision": precision,
                  "openvino": openvino.__version__, "mel": MEL_SHAPE, "face": FACE_SHAPE}
        if precision == "int8":
            fields["nncf"] = _nncf_version()
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:40]

    def path(self, key: str) -> Path:
        return self.folder / key

    def load(self, core, key: str):
        """The cached ov.Model, or None when absent or unreadable."""
        d = self.path(key)
        try:
            meta = json.loads((d / "meta.json").read_text())
            if _file_crc32(d / "model.bin") != (meta["bin_size"], meta["bin_crc32"]):
                return None
            # Read, not memory-mapped: another process may replace or prune the entry meanwhile.
            model = core.read_model(str(d / "model.xml"), config={"ENABLE_MMAP": False})
        except Exception:
            return None
        try:
            os.utime(d)  # recently used: pruned last
        except OSError:
            pass
        return model

    def save(self, ov_model, key: str) -> None:
        import openvino as ov

        tmp = None
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=f".{key}.", suffix=".tmp", dir=self.folder))
            ov.save_model(ov_model, str(tmp / "model.xml"), compress_to_fp16=False)
            size, crc = _file_crc32(tmp / "model.bin")
            (tmp / "meta.json").write_text(json.dumps({"bin_size": size, "bin_crc32": crc}))
            final = self.path(key)
            if final.exists():  # a bad folder left from before (load missed): replace it
                shutil.rmtree(final, ignore_errors=True)
            os.replace(tmp, final)
            tmp = None
            self._prune(keep=final)
        except OSError as exc:
            warnings.warn(f"converted model not cached in {self.folder}: {exc}", stacklevel=2)
        finally:
            if tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)


    def _prune(self, keep: Path) -> None:
        entries = [p for p in self.folder.iterdir() if p.is_dir() and not p.name.startswith(".") and p != keep]
        entries.sort(key=lambda p: p.stat().st_mtime, reverse=True)
        for old in entries[MAX_ENTRIES - 1:]:
            shutil.rmtree(old, ignore_errors=True)


def _file_crc32(path: Path) -> tuple[int, int]:
    crc, size = 0, 0
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            crc = zlib.crc32(chunk, crc)
            size += len(chunk)
    return size, crc


def _nncf_version() -> str:
    try:
        import nncf
    except ImportError:
        raise Wav2LipError(_INT8_NEEDS) from None
    return nncf.__version__


# --- OpenVINO ---------------------------------------------------------------------------------

def convert(checkpoint: str | os.PathLike):
    """The checkpoint's torch module as an ov.Model with a dynamic batch and fixed image shapes
    (conversion leaves height and width dynamic, which compiles to slower kernels)."""
    import openvino as ov
    import torch

    from .model import load_checkpoint

    model = load_checkpoint(checkpoint, device="cpu")
    example = (torch.zeros(1, *MEL_SHAPE), torch.zeros(1, *FACE_SHAPE))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TorchScript tracer warnings about a graph we know is static
        ov_model = ov.convert_model(model, example_input=example)
    ov_model.reshape({ov_model.inputs[0]: ov.PartialShape([-1, *MEL_SHAPE]),
                      ov_model.inputs[1]: ov.PartialShape([-1, *FACE_SHAPE])})
    return ov_model


def quantize(ov_model, batches: Sequence[tuple[np.ndarray, np.ndarray]]):
    """NNCF post-training int8 quantization of an ov.Model (not the torch module: NNCF's torch
    backend compiles C++ extensions for minutes), with statistics from `batches` of real inputs."""
    try:
        import nncf
    except ImportError:
        raise Wav2LipError(_INT8_NEEDS) from None
    if not batches:
        raise Wav2LipError("int8 calibration needs at least one frame with a face")
    items = [(np.ascontiguousarray(m, np.float32), np.ascontiguousarray(f, np.float32)) for m, f in batches]
    nncf.set_log_level(logging.ERROR)
    # NNCF draws progress bars on stdout, which carries the JSON events (--progress json).
    with contextlib.redirect_stdout(sys.stderr):
        return nncf.quantize(ov_model, nncf.Dataset(items), subset_size=len(items))


class OpenVINORunner:
    """The converted (and for int8, quantized) model, compiled once per batch size: a fixed batch
    compiles to faster kernels than a dynamic one (bench/bench_runtime.py), and a run sees at most
    two sizes (the batch and the last remainder)."""

    name = "openvino"
    device = "cpu"
    _MAX_COMPILED = 4

    def __init__(self, checkpoint: str | os.PathLike, *, precision: str = "fp32", cache: ModelCache | None = None,
                 calibration: Sequence[tuple[np.ndarray, np.ndarray]] | None = None):
        import openvino as ov

        if precision not in ("fp32", "bf16", "int8"):
            raise Wav2LipError(f"--precision {precision} is not supported with --runtime openvino; use fp32, bf16 or int8")
        self.precision = precision
        self.checkpoint = str(checkpoint)
        self.core = ov.Core()
        self.cache = cache
        self.converted = False  # whether this load converted (a cache miss)
        self.quantized_now = False  # whether this load calibrated int8
        self._compiled: OrderedDict[int, object] = OrderedDict()
        self._model = None
        if precision == "int8":
            _nncf_version()  # fail at load, not after detection
            self._model = self._cached("int8")
            if self._model is None and calibration is not None:
                self.calibrate(calibration)
        else:
            self._model = self._fp32_model()

    @property
    def needs_calibration(self) -> bool:
        return self._model is None

    def _cached(self, precision: str):
        if self.cache is None:
            return None
        return self.cache.load(self.core, self.cache.key(self.checkpoint, precision))

    def _fp32_model(self):
        model = self._cached("fp32")
        if model is None:
            model = convert(self.checkpoint)
            self.converted = True
            if self.cache is not None:
                self.cache.save(model, self.cache.key(self.checkpoint, "fp32"))
        return model

    def calibrate(self, batches: Sequence[tuple[np.ndarray, np.ndarray]]) -> None:
        """Quantize from these input batches (int8 on a cache miss) and cache the result."""
        model = quantize(self._fp32_model(), batches)
        self.quantized_now = True
        if self.cache is not None:
            self.cache.save(model, self.cache.key(self.checkpoint, "int8"))
        self._model = model
        self._compiled.clear()

    def _compiled_for(self, n: int):
        c = self._compiled.get(n)
        if c is None:
            import openvino as ov

            model = self._model.clone()
            model.reshape({model.inputs[0]: ov.PartialShape([n, *MEL_SHAPE]),
                           model.inputs[1]: ov.PartialShape([n, *FACE_SHAPE])})
            # f32 unless bf16 was asked for: on CPUs with native bf16 OpenVINO would otherwise
            # pick bf16 by itself, and fp32 must stay fp32.
            hint = "bf16" if self.precision == "bf16" else "f32"
            c = self.core.compile_model(model, "CPU", {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": hint})
            self._compiled[n] = c
            while len(self._compiled) > self._MAX_COMPILED:
                self._compiled.popitem(last=False)
        else:
            self._compiled.move_to_end(n)
        return c

    def forward(self, mel: np.ndarray, face: np.ndarray, limit: Limit | None = None) -> np.ndarray:
        if self._model is None:
            raise Wav2LipError("the int8 model has not been calibrated yet")
        n = len(face)
        compiled = self._compiled_for(n)
        out = compiled([np.ascontiguousarray(mel, np.float32), np.ascontiguousarray(face, np.float32)])
        return np.array(out[compiled.outputs[0]], np.float32, copy=True)

