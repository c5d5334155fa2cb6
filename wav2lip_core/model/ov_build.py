"""Making the OpenVINO models an executor loads: a checkpoint converted to an ov.Model (fp32), and
that model quantized to int8 on real inputs, both written into the model cache (model_cache.py).

Both need torch (NNCF imports it too), so runtime.OpenVINOExecutor has them done in a child
process (build_in_child; build_private without a usable cache) and only reads the result: the
engine itself never loads torch on the OpenVINO path, which keeps a first run's peak memory near
a cached run's and leaves a long-lived engine without torch's ~450 MB. The child is killed when
the job is cancelled: a cancel during the first conversion stops it within _POLL_S.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from .. import errors
from ..errors import Cancelled, Wav2LipError
from .checkpoint import FACE_SHAPE, MEL_SHAPE
from .model_cache import INT8_NEEDS, ModelCache, write_entry


def convert(checkpoint: str | os.PathLike):
    """The checkpoint's torch module as an ov.Model with a dynamic batch and fixed image shapes
    (conversion leaves height and width dynamic, which compiles to slower kernels)."""
    import openvino as ov
    import torch

    from .checkpoint import load_checkpoint

    model = load_checkpoint(checkpoint, device="cpu")
    example = (torch.zeros(1, *MEL_SHAPE), torch.zeros(1, *FACE_SHAPE))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TorchScript tracer warnings about a graph we know is static
        ov_model = ov.convert_model(model, example_input=example)
    ov_model.reshape({ov_model.inputs[0]: ov.PartialShape([-1, *MEL_SHAPE]),
                      ov_model.inputs[1]: ov.PartialShape([-1, *FACE_SHAPE])})
    return ov_model


# How often a parent waiting for its converting child looks at its cancel flag.
_POLL_S = 0.1


def build_in_child(checkpoint: str | os.PathLike, cache: ModelCache, precision: str,
                   calibration: Sequence[tuple[np.ndarray, np.ndarray]] | None = None,
                   stop: Callable[[], bool] | None = None) -> str | None:
    """Make the cache entry for `precision` in a child process: convert (fp32), and for int8
    quantize on `calibration`. Both need torch (NNCF imports it too), which then never loads in
    this process: a first run's peak memory stays near a cached run's (converting here left torch
    ~450 MB resident; calibrating here peaked at 1.45 GB), and a long-lived engine never holds
    it. The entries are made under their locks (model_cache.ModelCache.writing): another process
    converting the same checkpoint is waited for, not repeated.

    "made" when the child wrote the entry, "found" when another process had made it meanwhile,
    None when the cache folder is unwritable or the child could not do it (the caller converts
    some other way); a bad checkpoint raises the child's own error. When `stop()` turns true
    the child is killed, its temp folders removed, and Cancelled raised: no entry is left."""
    keys = {p: cache.key(checkpoint, p) for p in (("fp32", "int8") if precision == "int8" else ("fp32",))}
    temps: dict[str, Path] = {}
    try:
        with contextlib.ExitStack() as locks:
            for p in keys.values():  # always fp32 first: two processes cannot hold one each
                locks.enter_context(cache.writing(p, stop))
            if cache.intact(keys[precision]):
                return "found"
            temps = {p: cache.new_temp(k) for p, k in keys.items() if not cache.intact(k)}
            spec = {"checkpoint": os.fspath(checkpoint), "outs": {p: str(t) for p, t in temps.items()},
                    "fp32_entry": None if "fp32" in temps else str(cache.path(keys["fp32"]))}
            if not _run_child(spec, calibration, stop):
                return None
            for p in ("fp32", "int8"):
                if p in temps:
                    cache.commit(temps.pop(p), keys[p])
            return "made"
    except OSError:
        return None
    finally:
        for t in temps.values():
            shutil.rmtree(t, ignore_errors=True)


def build_private(checkpoint: str | os.PathLike, precision: str,
                  calibration: Sequence[tuple[np.ndarray, np.ndarray]] | None = None,
                  stop: Callable[[], bool] | None = None, core=None):
    """The model for `precision` made in a child process as build_in_child does, for a run
    without a usable cache: written to a private temp folder and read back (not memory-mapped)
    from it, so torch stays out of this process. None when the child could not do it."""
    import openvino as ov

    with tempfile.TemporaryDirectory(prefix="wav2lip-model-") as tmp:
        spec = {"checkpoint": os.fspath(checkpoint), "outs": {precision: tmp}, "fp32_entry": None}
        if not _run_child(spec, calibration, stop):
            return None
        core = core or ov.Core()
        return core.read_model(os.path.join(tmp, "model.xml"), config={"ENABLE_MMAP": False})


def _run_child(spec: dict, calibration, stop: Callable[[], bool] | None) -> bool:
    """Run _build_child on `spec`; True when it wrote its outputs. Kills it and raises Cancelled
    when `stop()` turns true: a conversion is one blocking call that cannot look at a flag."""
    package_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH")) if p))
    code = "import sys; from wav2lip_core.model.ov_build import _build_child; _build_child(sys.argv[1])"
    with tempfile.TemporaryDirectory(prefix="wav2lip-build-") as tmp:
        if calibration is not None:
            spec = dict(spec, calibration=os.path.join(tmp, "calibration.npz"))
            np.savez(spec["calibration"], **{f"{name}{i}": a for i, batch in enumerate(calibration)
                                             for name, a in zip(("mel", "face"), batch)})
        try:
            child = subprocess.Popen([sys.executable, "-c", code, json.dumps(spec)], env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        except OSError:
            return False
        try:
            while True:
                try:
                    stdout, _ = child.communicate(timeout=_POLL_S)
                    break
                except subprocess.TimeoutExpired:
                    if stop is not None and stop():
                        raise Cancelled("cancelled") from None
        finally:
            if child.poll() is None:
                child.kill()
                child.communicate()
    for line in reversed(stdout.splitlines()):
        try:
            answer = json.loads(line)
        except ValueError:
            continue
        if isinstance(answer, dict) and answer.get("error"):
            error = getattr(errors, str(answer["error"]), None)
            if not (isinstance(error, type) and issubclass(error, Wav2LipError)):
                error = Wav2LipError
            raise error(str(answer.get("message", "")))
        return child.returncode == 0 and isinstance(answer, dict) and bool(answer.get("saved"))
    return False


def _build_child(spec_json: str) -> None:
    """The child of _run_child: writes each asked precision's model into its folder in
    spec["outs"] (the fp32 one converted, or read from spec["fp32_entry"]); answers with one
    JSON line on stdout."""
    import openvino as ov

    spec = json.loads(spec_json)
    outs = spec["outs"]
    try:
        if spec.get("fp32_entry"):
            model = ov.Core().read_model(os.path.join(spec["fp32_entry"], "model.xml"), config={"ENABLE_MMAP": False})
        else:
            model = convert(spec["checkpoint"])
        if "fp32" in outs:
            write_entry(model, Path(outs["fp32"]))
        if "int8" in outs:
            with np.load(spec["calibration"]) as z:
                batches = [(z[f"mel{i}"], z[f"face{i}"]) for i in range(len(z.files) // 2)]
            write_entry(quantize(model, batches), Path(outs["int8"]))
    except Wav2LipError as e:
        print(json.dumps({"error": type(e).__name__, "message": str(e)}), flush=True)
        sys.exit(1)
    print(json.dumps({"saved": True}), flush=True)


def quantize(ov_model, batches: Sequence[tuple[np.ndarray, np.ndarray]]):
    """NNCF post-training int8 quantization of an ov.Model (not the torch module: NNCF's torch
    backend compiles C++ extensions for minutes), with statistics from `batches` of real inputs."""
    try:
        import nncf
    except ImportError:
        raise Wav2LipError(INT8_NEEDS) from None
    if not batches:
        raise Wav2LipError("int8 calibration needs at least one frame with a face")
    items = [(np.ascontiguousarray(m, np.float32), np.ascontiguousarray(f, np.float32)) for m, f in batches]
    nncf.set_log_level(logging.ERROR)
    # NNCF draws progress bars on stdout, which carries the JSON events (--progress json).
    with contextlib.redirect_stdout(sys.stderr):
        return nncf.quantize(ov_model, nncf.Dataset(items), subset_size=len(items))
