"""Making the OpenVINO models a runner loads: a checkpoint converted to an ov.Model (fp32), and
that model quantized to int8 on real inputs, both written into the model cache (model_cache.py).

Both need torch (NNCF imports it too), so runtime.OpenVINORunner has them done in a child
process (build_in_child) and only reads the result: the engine itself never loads torch on the
OpenVINO path, which keeps a first run's peak memory near a cached run's and leaves a long-lived
engine without torch's ~450 MB.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Sequence

import numpy as np

from . import errors
from .errors import Wav2LipError
from .model import FACE_SHAPE, MEL_SHAPE
from .model_cache import INT8_NEEDS, ModelCache


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


def build_in_child(checkpoint: str | os.PathLike, cache: ModelCache, precision: str,
                   calibration: Sequence[tuple[np.ndarray, np.ndarray]] | None = None) -> bool:
    """Make the cache entry for `precision` in a child process: convert (fp32), and for int8
    quantize on `calibration`. Both need torch (NNCF imports it too), which then never loads in
    this process: a first run's peak memory stays near a cached run's (converting here left torch
    ~450 MB resident; calibrating here peaked at 1.45 GB), and a long-lived engine never holds
    it. True when the entry was written; False when the child could not do it (the caller does
    it here); a bad checkpoint raises the child's own error."""
    package_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH")) if p))
    code = "import sys; from wav2lip_core.ov_build import _build_child; _build_child(sys.argv[1])"
    with tempfile.TemporaryDirectory(prefix="wav2lip-build-") as tmp:
        spec = {"checkpoint": os.fspath(checkpoint), "folder": os.fspath(cache.folder), "precision": precision}
        if calibration is not None:
            spec["calibration"] = os.path.join(tmp, "calibration.npz")
            np.savez(spec["calibration"], **{f"{name}{i}": a for i, batch in enumerate(calibration)
                                             for name, a in zip(("mel", "face"), batch)})
        try:
            child = subprocess.run([sys.executable, "-c", code, json.dumps(spec)], env=env, capture_output=True,
                                   text=True)
        except OSError:
            return False
    for line in reversed(child.stdout.splitlines()):
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
    """The child of build_in_child; answers with one JSON line on stdout."""
    import openvino as ov

    spec = json.loads(spec_json)
    checkpoint, cache = spec["checkpoint"], ModelCache(spec["folder"])
    try:
        model = cache.load(ov.Core(), cache.key(checkpoint, "fp32"))
        if model is None:
            model = convert(checkpoint)
            cache.save(model, cache.key(checkpoint, "fp32"))
        if spec["precision"] == "int8":
            with np.load(spec["calibration"]) as z:
                batches = [(z[f"mel{i}"], z[f"face{i}"]) for i in range(len(z.files) // 2)]
            model = quantize(model, batches)
            cache.save(model, cache.key(checkpoint, "int8"))
        saved = (cache.path(cache.key(checkpoint, spec["precision"])) / "meta.json").is_file()
    except Wav2LipError as e:
        print(json.dumps({"error": type(e).__name__, "message": str(e)}), flush=True)
        sys.exit(1)
    print(json.dumps({"saved": saved}), flush=True)


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
