"""Model runtimes (wav2lip_core/runtime.py): OpenVINO fp32 against the reference outputs and torch,
the converted-model cache, int8 quantization (when NNCF is installed), and the CLI's --runtime.

One conversion per test session: every OpenVINO runner here (and the engines run as subprocesses)
uses the session's model cache (conftest sets WAV2LIP_MODEL_CACHE), filled by the first load."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest

from conftest import CONFORMANCE, MEDIA, ROOT

pytest.importorskip("openvino")

from wav2lip_core import runtime as R  # noqa: E402
from wav2lip_core.errors import Wav2LipError  # noqa: E402

FACE2 = MEDIA / "vretalk_face2.mp4"
SPEECH16K = CONFORMANCE / "speech_16k.wav"
BOX = ["225", "608", "192", "565"]  # the conformance face box in vretalk_face2


def psnr(a: np.ndarray, b: np.ndarray, peak: float = 1.0) -> float:
    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(peak ** 2 / mse)


@pytest.fixture(scope="session")
def io():
    return dict(np.load(CONFORMANCE / "model_io.npz"))


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory) -> Path:
    return Path(os.environ.get(R.ENV_MODEL_CACHE) or tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="session")
def ov_runner(checkpoint, model_cache):
    """The conformance checkpoint through OpenVINO fp32 (converted by the session's first load)."""
    return R.OpenVINORunner(checkpoint, precision="fp32", cache=R.ModelCache(model_cache))


@pytest.fixture(scope="session")
def torch_out(checkpoint, io):
    from wav2lip_core.model import load_checkpoint

    return R.TorchRunner(load_checkpoint(checkpoint), "cpu", "fp32").forward(io["mel"], io["face"])


def test_openvino_fp32_matches_the_reference_and_torch(ov_runner, torch_out, io):
    out = ov_runner.forward(io["mel"], io["face"])
    assert out.shape == (8, 3, 96, 96) and out.dtype == np.float32
    assert np.abs(out - io["expected"]).max() < 1e-4
    assert np.abs(out - torch_out).max() < 1e-4
    # Another batch size compiles its own fixed-shape model and gives the same numbers.
    part = ov_runner.forward(io["mel"][:3], io["face"][:3])
    assert np.abs(part - out[:3]).max() < 1e-5


def test_second_load_reads_the_cache_instead_of_converting(ov_runner, checkpoint, model_cache, io):
    cache = R.ModelCache(model_cache)
    key = cache.key(checkpoint, "fp32")
    assert (cache.path(key) / "model.xml").is_file() and (cache.path(key) / "model.bin").is_file()
    again = R.OpenVINORunner(checkpoint, precision="fp32", cache=cache)
    assert not again.converted
    assert np.abs(again.forward(io["mel"], io["face"]) - io["expected"]).max() < 1e-4
    # A copy of the checkpoint under another name is the same content: the same entry.
    copy = model_cache.parent / "renamed.pth"
    shutil.copyfile(checkpoint, copy)
    assert cache.key(copy, "fp32") == key
    assert cache.key(checkpoint, "int8" if _has_nncf() else "bf16") != key


@pytest.mark.parametrize("damage", ["bin_byte", "bin_truncated", "xml_garbage", "meta_missing"])
def test_a_damaged_cache_entry_is_a_miss_and_is_replaced(ov_runner, checkpoint, model_cache, tmp_path, damage, io):
    key = R.ModelCache(model_cache).key(checkpoint, "fp32")
    folder = tmp_path / "models"
    shutil.copytree(model_cache / key, folder / key)
    cache = R.ModelCache(folder)
    entry = cache.path(key)
    import openvino as ov

    core = ov.Core()
    good = cache.load(core, key)
    assert good is not None
    if damage == "bin_byte":
        data = bytearray((entry / "model.bin").read_bytes())
        data[len(data) // 2] ^= 0xFF
        (entry / "model.bin").write_bytes(bytes(data))
    elif damage == "bin_truncated":
        with open(entry / "model.bin", "r+b") as f:
            f.truncate(1000)
    elif damage == "xml_garbage":
        (entry / "model.xml").write_text("<net>not a model")
    else:
        (entry / "meta.json").unlink()
    assert cache.load(core, key) is None
    # Saving over the bad entry (what a runner does after converting again) makes it good.
    cache.save(good, key)
    reread = cache.load(core, key)
    assert reread is not None
    assert not [p for p in folder.iterdir() if p.name.endswith(".tmp")]


def test_unwritable_cache_warns_and_still_runs(checkpoint, ov_runner, tmp_path, io):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    cache = R.ModelCache(blocker / "models")
    with pytest.warns(UserWarning, match="not cached"):
        cache.save(ov_runner._model, cache.key(checkpoint, "fp32"))


def _has_nncf() -> bool:
    try:
        import nncf  # noqa: F401
    except ImportError:
        return False
    return True


def _is_quantized(model) -> bool:
    return any(op.get_type_name() == "FakeQuantize" for op in model.get_ops())


@pytest.mark.skipif(not _has_nncf(), reason="int8 needs the int8 extra (nncf)")
def test_int8_is_quantized_close_to_fp32_and_cached(checkpoint, ov_runner, model_cache, io):
    cal = [(io["mel"][:4], io["face"][:4]), (io["mel"][4:], io["face"][4:])]
    q = R.OpenVINORunner(checkpoint, precision="int8", cache=R.ModelCache(model_cache))
    assert q.needs_calibration
    q.calibrate(cal)
    assert q.quantized_now and _is_quantized(q._model) and not _is_quantized(ov_runner._model)
    fp32 = ov_runner.forward(io["mel"], io["face"])
    i8 = q.forward(io["mel"], io["face"])
    diff = np.abs(i8 - fp32).max()
    quality = psnr(i8, fp32)
    print(f"int8 vs fp32 on the conformance data: max abs {diff:.4f}, PSNR {quality:.1f} dB")
    assert diff > 1e-4  # really a different (quantized) computation
    assert diff < 0.1 and quality > 35  # measured: max 0.03, 45 dB
    # The second load takes the quantized model from the cache: no calibration wanted.
    again = R.OpenVINORunner(checkpoint, precision="int8", cache=R.ModelCache(model_cache))
    assert not again.needs_calibration and _is_quantized(again._model)
    assert np.array_equal(again.forward(io["mel"], io["face"]), i8)


def test_int8_without_nncf_is_one_clear_line(monkeypatch, checkpoint):
    monkeypatch.setitem(sys.modules, "nncf", None)  # what `import nncf` sees where it is not installed
    with pytest.raises(Wav2LipError, match=r"int8 needs NNCF: install the int8 extra") as e:
        R.OpenVINORunner(checkpoint, precision="int8")
    assert "\n" not in str(e.value)


def test_resolve_runtime_choices_and_errors():
    assert R.resolve_runtime("auto", "cpu", "fp32") == "openvino"
    assert R.resolve_runtime("auto", "cuda", "fp16") == "torch"
    assert R.resolve_runtime("auto", "mps", "fp32") == "torch"
    assert R.resolve_runtime("torch", "cpu", "fp32") == "torch"
    assert R.resolve_runtime("auto", "cpu", "int8") == "openvino"
    for args, msg in [(("tensorrt", "cpu", "fp32"), "unknown runtime 'tensorrt'"),
                      (("openvino", "cuda", "fp16"), "CPU only"),
                      (("torch", "cpu", "int8"), "int8 runs with OpenVINO"),
                      (("auto", "cuda", "int8"), "int8 runs with OpenVINO")]:
        with pytest.raises(Wav2LipError, match=msg):
            R.resolve_runtime(*args)
    with pytest.raises(Wav2LipError, match="not supported with --runtime openvino"):
        R.OpenVINORunner("unused.pth", precision="fp16")


# --- the engine as a user runs it -------------------------------------------------------------

def wav2lip(model_cache: Path, *args, timeout: float = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, **{R.ENV_MODEL_CACHE: str(model_cache)},
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    return subprocess.run([sys.executable, "-m", "wav2lip_core", *map(str, args)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def frames_of(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="bgr24") for f in c.decode(video=0)]


def _events(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines()]  # every stdout line is JSON


def test_cli_openvino_end_to_end_matches_torch(ov_runner, checkpoint, model_cache, tmp_path):
    common = ["--face", FACE2, "--audio", SPEECH16K, "--checkpoint", checkpoint, "--box", *BOX, "--blend", "hard",
              "--duration", "0.4", "--cache-dir", tmp_path / "faces", "--device", "cpu", "--precision", "fp32"]
    outs = {}
    for runtime in ("openvino", "torch"):
        outs[runtime] = tmp_path / f"{runtime}.mp4"
        r = wav2lip(model_cache, *common, "--out", outs[runtime], "--runtime", runtime, "--progress", "json")
        assert r.returncode == 0, r.stderr
        assert _events(r.stdout)[-1]["event"] == "done"
    ov_frames, torch_frames = frames_of(outs["openvino"]), frames_of(outs["torch"])
    assert len(ov_frames) == len(torch_frames) == 10
    y1, y2, x1, x2 = map(int, BOX)
    for a, b in zip(ov_frames, torch_frames):
        # The same model to ~1e-6: at most a rounding step on a few pixels before encoding.
        assert np.abs(a[y1:y2, x1:x2].astype(int) - b[y1:y2, x1:x2]).mean() < 0.05
    # The runtime's converted model came from the session cache: no new entry.
    assert len([p for p in model_cache.iterdir() if not p.name.startswith(".")]) >= 1


@pytest.mark.skipif(not _has_nncf(), reason="int8 needs the int8 extra (nncf)")
def test_cli_int8_calibrates_on_the_clip_once(ov_runner, checkpoint, tmp_path):
    key = ov_runner.cache.key(checkpoint, "fp32")
    cache = tmp_path / "models"
    shutil.copytree(ov_runner.cache.folder / key, cache / key)  # fp32 converted already; no int8 yet
    args = ["--face", FACE2, "--audio", SPEECH16K, "--checkpoint", checkpoint, "--box", *BOX, "--duration", "0.4",
            "--cache-dir", tmp_path / "faces", "--device", "cpu", "--precision", "int8", "--progress", "json"]
    first = wav2lip(cache, *args, "--out", tmp_path / "a.mp4")
    assert first.returncode == 0, first.stderr
    notes = [e["message"] for e in _events(first.stdout) if e["event"] == "note"]
    assert any("calibrating int8" in n for n in notes), notes
    second = wav2lip(cache, *args, "--out", tmp_path / "b.mp4")
    assert second.returncode == 0, second.stderr
    assert not any("calibrating" in e.get("message", "") for e in _events(second.stdout))
    assert len(frames_of(tmp_path / "b.mp4")) == 10


@pytest.mark.parametrize("args, exit_code, message", [
    (["--runtime", "tensorrt"], 2, "invalid choice: 'tensorrt'"),
    (["--runtime", "torch", "--precision", "int8"], 1, "error: --precision int8 runs with OpenVINO"),
])
def test_cli_bad_runtime_values(checkpoint, model_cache, tmp_path, args, exit_code, message):
    r = wav2lip(model_cache, "--face", FACE2, "--audio", SPEECH16K, "--checkpoint", checkpoint,
                "--out", tmp_path / "o.mp4", "--box", *BOX, "--device", "cpu", "--progress", "none", *args)
    assert r.returncode == exit_code
    assert message in r.stderr and "Traceback" not in r.stderr
    if exit_code == 1:
        assert len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "o.mp4").exists()
