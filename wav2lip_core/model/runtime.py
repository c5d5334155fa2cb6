"""What runs the model on a batch: torch (any device, autocast precisions) or OpenVINO (CPU).

The pipeline only sees `Executor.forward(mel, face) -> np.ndarray` (inputs as the model takes them:
mel (B,1,80,16), face (B,6,96,96), float32). An executor holds the loaded/compiled model and nothing
about a job, so one process can load it once and reuse it for many jobs (`Executors` keeps them).

OpenVINO: the torch module is converted once per checkpoint (`ov.convert_model`, ~10-25 s on a
2-core CPU) and kept in the disk cache of model_cache.py, so later runs only read and compile it
(under a second) and never import torch. Measured on the same graph (bench/bench_runtime.py):
~1.4x torch's fp32 speed on a 2-core AVX2 CPU, within ~1e-6 of torch. `int8` is NNCF
post-training quantization of the converted model, calibrated on the job's own face crops and mel
windows; the quantized model is cached per checkpoint, so the first int8 job on a checkpoint
calibrates for the others.

`import torch` happens only for the torch runtime; converting and quantizing (ov_build.py) run
in a child process, so an OpenVINO run never loads torch or NNCF, even the first on a checkpoint.
`import openvino` happens only when an OpenVINO executor is loaded.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from typing import Protocol

import numpy as np

from .. import protocol
from ..errors import Cancelled, Wav2LipError
from .checkpoint import check_checkpoint_file
from .model_cache import LoadedFiles, ModelCache, nncf_version
from .ov_build import build_in_child, build_private, convert, quantize

RUNTIMES = protocol.names(protocol.RUNTIMES)
# Calibration for int8: this many batches of the job's own inputs (the measurement used
# 4 batches of 16; NNCF's statistics are per-tensor min/max-like, so more adds little).
CALIBRATION_BATCHES = 4
# How often a running OpenVINO inference checks whether the job was cancelled.
_STOP_POLL_MS = 50


class Limit(Protocol):
    """How many frames one forward may take (sync.stages.BatchLimit: halves on a GPU out-of-memory)."""

    size: int

    def halve(self) -> None: ...


class Executor(Protocol):
    name: str  # "torch" or "openvino"
    precision: str  # what actually runs: fp32, fp16, bf16, int8
    device: str

    def forward(self, mel: np.ndarray, face: np.ndarray, limit: Limit | None = None,
                stop: Callable[[], bool] | None = None) -> np.ndarray:
        """Predictions for the batch; once `stop()` is true it may give up early by raising
        Cancelled (a job being cancelled does not wait for a whole batch on a slow CPU)."""
        ...


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
                               '(or pip install "wav2lip-blender", which brings it), or use --runtime torch')
    if precision == "int8" and runtime != "openvino":
        raise Wav2LipError("--precision int8 runs with OpenVINO on the CPU only: use --device cpu "
                           "--runtime openvino (or auto)")
    return runtime


def load_executor(checkpoint: str | os.PathLike, *, runtime: str, device, precision: str,
                  cache_dir: str | os.PathLike | None = None, use_cache: bool = True,
                  stop: Callable[[], bool] | None = None) -> Executor:
    """An executor for a resolved runtime/device/precision (see resolve_runtime). `stop`: the job's
    cancel check; a conversion under way when it turns true is killed (Cancelled)."""
    if runtime == "torch":
        from .checkpoint import load_checkpoint

        return TorchExecutor(load_checkpoint(checkpoint, device=str(device)), device, precision)
    return OpenVINOExecutor(checkpoint, precision=precision, cache=ModelCache(cache_dir) if use_cache else None,
                          stop=stop)


class Executors:
    """Loaded executors kept for the next job in a long-lived process (an engine serving several
    jobs): `get` loads a checkpoint once per runtime/device/precision and hands the same executor
    back until the file changes. Keeps the `keep` most recently used (each holds the weights,
    ~150 MB fp32)."""

    def __init__(self, keep: int = 2, **load_options):
        self._load_options = load_options  # cache_dir, use_cache: as load_executor takes them
        self._loaded = LoadedFiles(keep)

    def has(self, checkpoint: str | os.PathLike, *, runtime: str, device, precision: str) -> bool:
        """Whether `get` would hand back an executor already loaded (the file unchanged)."""
        return self._loaded.has(checkpoint, runtime, str(device), precision)

    def get(self, checkpoint: str | os.PathLike, *, runtime: str, device, precision: str,
            stop: Callable[[], bool] | None = None) -> Executor:
        return self._loaded.get(checkpoint, runtime, str(device), precision, load=lambda: load_executor(
            checkpoint, runtime=runtime, device=device, precision=precision, stop=stop, **self._load_options))


# --- torch ------------------------------------------------------------------------------------

class TorchExecutor:
    name = "torch"

    def __init__(self, model, device, precision: str):
        import torch

        self.model = model
        self._device = torch.device(device)
        self.device = str(self._device)
        self.precision = precision

    def forward(self, mel: np.ndarray, face: np.ndarray, limit: Limit | None = None,
                stop: Callable[[], bool] | None = None) -> np.ndarray:
        """The model in slices of at most `limit.size`; an out-of-memory halves the limit and
        retries the slice rather than failing a long job on one big batch. `stop` is checked
        between slices."""
        import torch

        from .device import autocast

        mel_t = torch.as_tensor(np.ascontiguousarray(mel)).to(self._device)
        face_t = torch.as_tensor(np.ascontiguousarray(face)).to(self._device)
        outs, i = [], 0
        while i < len(face_t):
            if stop is not None and stop():
                raise Cancelled("cancelled")
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


def as_executor(model_or_executor, device, precision: str) -> Executor:
    """A torch module wrapped in a TorchExecutor; anything else (an Executor) as it is."""
    torch = sys.modules.get("torch")  # a torch module exists only where torch was imported
    if torch is not None and isinstance(model_or_executor, torch.nn.Module):
        return TorchExecutor(model_or_executor, device, precision)
    return model_or_executor


# --- OpenVINO ---------------------------------------------------------------------------------

def compile_config(precision: str) -> dict:
    """How the CPU plugin compiles the model: LATENCY, one stream on every core, fed one batch
    at a time as the pipeline's model stage does. Measured on 2 cores (bench/bench_runtime.py
    --configs, paired interleaved rounds, noisy shared machine): THROUGHPUT with the batch split
    over its 2 streams was 0.95x LATENCY's time bare (best 50.3 vs 50.8 ms/frame) and no faster
    inside the pipeline, whose decode/encode threads use the cores too. f32 unless bf16 was asked for: on CPUs with native bf16 OpenVINO
    would otherwise pick bf16 by itself, and fp32 must stay fp32."""
    config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32"}
    # A scheduler that shares the machine (a Ray task, a batch worker) says how many cores are
    # this job's through OMP_NUM_THREADS, as torch reads it; OpenVINO would otherwise take all.
    threads = os.environ.get("OMP_NUM_THREADS", "")
    if threads.isdigit() and int(threads) > 0:
        config["INFERENCE_NUM_THREADS"] = int(threads)
    return config


class OpenVINOExecutor:
    """The converted (and for int8, quantized) model, compiled once when loaded, with the batch
    left dynamic: a batch fixed at 16 ran 1% faster per frame (30 paired rounds: median ratio
    0.988, best 55.2 vs 57.0 ms/frame), but every other size (the last partial batch) compiles
    again, 0.3-0.7 s, which is more than 1% of a short clip's model time."""

    name = "openvino"
    device = "cpu"

    def __init__(self, checkpoint: str | os.PathLike, *, precision: str = "fp32", cache: ModelCache | None = None,
                 calibration: Sequence[tuple[np.ndarray, np.ndarray]] | None = None,
                 stop: Callable[[], bool] | None = None):
        import openvino as ov

        if precision not in ("fp32", "bf16", "int8"):
            raise Wav2LipError(f"--precision {precision} is not supported with --runtime openvino; use fp32, bf16 or int8")
        self.precision = precision
        self.checkpoint = str(check_checkpoint_file(checkpoint))
        self.core = ov.Core()
        # Files are read, not memory-mapped: another process may replace or prune a cache entry.
        self.core.set_property({"ENABLE_MMAP": False})
        self.cache = cache
        self.converted = False  # whether this load converted (neither cached nor made meanwhile by another process)
        self.quantized_now = False  # whether this load calibrated int8
        self._compiled = None
        self._request = None
        if precision == "int8":
            nncf_version()  # fail at load, not after detection
            if not self._compile_cached("int8") and calibration is not None:
                self.calibrate(calibration, stop)
        elif not self._compile_cached("fp32"):
            model = self._fp32_model(stop)  # converted and cached now: compiled from the cache when it took it
            if not self._compile_cached("fp32"):
                self._compile(model)

    @property
    def needs_calibration(self) -> bool:
        return self._request is None

    def _cached(self, precision: str):
        if self.cache is None:
            return None
        return self.cache.load(self.core, self.cache.key(self.checkpoint, precision))

    def _fp32_model(self, stop: Callable[[], bool] | None = None):
        model = self._cached("fp32")
        if model is not None:
            return model
        if self.cache is not None:
            built = build_in_child(self.checkpoint, self.cache, "fp32", stop=stop)
            self.converted = built == "made"
            model = self._cached("fp32") if built else None
            if model is not None:
                return model
        # No usable cache (none, or its folder unwritable): made in a child all the same, and
        # only where no child can run at all, here.
        self.converted = True
        model = build_private(self.checkpoint, "fp32", stop=stop, core=self.core)
        if model is None:
            model = convert(self.checkpoint)
        if self.cache is not None:
            self.cache.save(model, self.cache.key(self.checkpoint, "fp32"))
        return model

    def _compile_cached(self, precision: str) -> bool:
        """Compile the cached model for `precision` (model_cache.ModelCache.compile); False on a miss."""
        if self.cache is None:
            return False
        compiled = self.cache.compile(self.core, self.cache.key(self.checkpoint, precision), compile_config(self.precision))
        if compiled is None:
            return False
        self._use(compiled)
        return True

    def _compile(self, model) -> None:
        # The ov.Model is not kept: the compiled model holds its own copy of the weights.
        self._use(self.core.compile_model(model, "CPU", compile_config(self.precision)))

    def _use(self, compiled) -> None:
        self._compiled = compiled
        self._request = compiled.create_infer_request()

    def calibrate(self, batches: Sequence[tuple[np.ndarray, np.ndarray]],
                  stop: Callable[[], bool] | None = None) -> None:
        """Quantize from these input batches (int8 on a cache miss) and cache the result;
        Cancelled when `stop()` (the job's cancel check) turns true meanwhile."""
        if not batches:
            raise Wav2LipError("int8 calibration needs at least one frame with a face")
        self.quantized_now = True
        if self.cache is not None and build_in_child(self.checkpoint, self.cache, "int8", batches, stop=stop) \
                and self._compile_cached("int8"):
            return
        # No cache to hand it over, or the child failed: in a child of its own, else here.
        model = build_private(self.checkpoint, "int8", batches, stop=stop, core=self.core)
        if model is None:
            model = quantize(self._fp32_model(stop), batches)
        if self.cache is not None:
            self.cache.save(model, self.cache.key(self.checkpoint, "int8"))
        self._compile(model)

    def forward(self, mel: np.ndarray, face: np.ndarray, limit: Limit | None = None,
                stop: Callable[[], bool] | None = None) -> np.ndarray:
        """One inference on the whole batch (any size). Not for two threads at once: an executor has
        one infer request (the pipeline calls it from its one model stage). With `stop`, the
        inference runs asynchronously and is cancelled within _STOP_POLL_MS of `stop()` turning
        true (a batch of 16 takes about a second on a 2-core CPU)."""
        if self._request is None:
            raise Wav2LipError("the int8 model has not been calibrated yet")
        inputs = [np.ascontiguousarray(mel, np.float32), np.ascontiguousarray(face, np.float32)]
        request = self._request
        if stop is None:
            request.infer(inputs, share_inputs=True)
        else:
            request.start_async(inputs, share_inputs=True)
            while not request.wait_for(_STOP_POLL_MS):
                if stop():
                    request.cancel()
                    try:
                        request.wait()
                    except RuntimeError:  # OpenVINO reports the cancelled inference as an error
                        pass
                    raise Cancelled("cancelled")
        return np.array(request.get_output_tensor(0).data, np.float32, copy=True)
