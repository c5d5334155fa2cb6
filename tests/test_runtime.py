"""Model runtimes (wav2lip_core/runtime.py): OpenVINO fp32 against the reference outputs and torch,
the converted-model cache (model_cache.py), int8 quantization (when NNCF is installed), the CLI's
--runtime, and the warm start (a run on a cached model never imports torch).

One conversion per test session: every OpenVINO executor here (and the engines run as subprocesses)
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

from wav2lip_core.model import runtime as R  # noqa: E402
from wav2lip_core.model import model_cache as M  # noqa: E402
from wav2lip_core.model.model_cache import COMPILED  # noqa: E402
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
    return Path(os.environ.get(M.ENV_MODEL_CACHE) or tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="session")
def ov_executor(checkpoint, model_cache):
    """The conformance checkpoint through OpenVINO fp32 (converted by the session's first load)."""
    return R.OpenVINOExecutor(checkpoint, precision="fp32", cache=M.ModelCache(model_cache))


@pytest.fixture(scope="session")
def torch_out(checkpoint, io):
    from wav2lip_core.model.checkpoint import load_checkpoint

    return R.TorchExecutor(load_checkpoint(checkpoint), "cpu", "fp32").forward(io["mel"], io["face"])


def test_openvino_fp32_matches_the_reference_and_torch(ov_executor, torch_out, io):
    out = ov_executor.forward(io["mel"], io["face"])
    assert out.shape == (8, 3, 96, 96) and out.dtype == np.float32
    assert np.abs(out - io["expected"]).max() < 1e-4
    assert np.abs(out - torch_out).max() < 1e-4
    # Any batch size runs on the one compiled model (dynamic batch) and gives the same numbers.
    part = ov_executor.forward(io["mel"][:3], io["face"][:3])
    assert part.shape == (3, 3, 96, 96)
    assert np.abs(part - out[:3]).max() < 1e-5


def test_second_load_reads_the_cache_instead_of_converting(ov_executor, checkpoint, model_cache, io):
    cache = M.ModelCache(model_cache)
    key = cache.key(checkpoint, "fp32")
    assert (cache.path(key) / "model.xml").is_file() and (cache.path(key) / "model.bin").is_file()
    again = R.OpenVINOExecutor(checkpoint, precision="fp32", cache=cache)
    assert not again.converted
    # ...and loads the compiled model OpenVINO cached in the entry instead of compiling again.
    assert again._compiled.get_property("LOADED_FROM_CACHE")
    assert list((cache.path(key) / COMPILED).glob("*.blob"))
    assert np.abs(again.forward(io["mel"], io["face"]) - io["expected"]).max() < 1e-4
    # A copy of the checkpoint under another name is the same content: the same entry.
    copy = model_cache.parent / "renamed.pth"
    shutil.copyfile(checkpoint, copy)
    assert cache.key(copy, "fp32") == key
    assert cache.key(checkpoint, "int8" if _has_nncf() else "bf16") != key


@pytest.mark.parametrize("damage", ["bin_byte", "bin_truncated", "xml_garbage", "meta_missing"])
def test_a_damaged_cache_entry_is_a_miss_and_is_replaced(ov_executor, checkpoint, model_cache, tmp_path, damage, io):
    key = M.ModelCache(model_cache).key(checkpoint, "fp32")
    folder = tmp_path / "models"
    shutil.copytree(model_cache / key, folder / key)
    cache = M.ModelCache(folder)
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
    # Saving over the bad entry (what an executor does after converting again) makes it good.
    cache.save(good, key)
    reread = cache.load(core, key)
    assert reread is not None
    assert not [p for p in folder.iterdir() if p.name.endswith(".tmp")]


def test_a_damaged_compiled_blob_is_compiled_again(ov_executor, checkpoint, model_cache, tmp_path, io):
    key = M.ModelCache(model_cache).key(checkpoint, "fp32")
    shutil.copytree(model_cache / key, tmp_path / "models" / key)
    cache = M.ModelCache(tmp_path / "models")
    blobs = list((cache.path(key) / COMPILED).glob("*.blob"))
    assert blobs
    for blob in blobs:
        blob.write_bytes(os.urandom(4096))
    executor = R.OpenVINOExecutor(checkpoint, precision="fp32", cache=cache)
    assert not executor.converted and not executor._compiled.get_property("LOADED_FROM_CACHE")
    assert np.abs(executor.forward(io["mel"], io["face"]) - io["expected"]).max() < 1e-4
    assert R.OpenVINOExecutor(checkpoint, precision="fp32", cache=cache)._compiled.get_property("LOADED_FROM_CACHE")


_UNWRITABLE = """
import json, sys
import numpy as np
from wav2lip_core.model.model_cache import ModelCache
from wav2lip_core.model.runtime import OpenVINOExecutor
checkpoint, folder, io_path = sys.argv[1:4]
executor = OpenVINOExecutor(checkpoint, precision="fp32", cache=ModelCache(folder))
io = np.load(io_path)
print(json.dumps({"diff": float(np.abs(executor.forward(io["mel"], io["face"]) - io["expected"]).max()),
                  "torch": "torch" in sys.modules}))
"""


def test_an_unwritable_cache_still_gives_the_right_model_and_writes_nothing(checkpoint, tmp_path):
    """A cache folder that cannot be made (its parent is a file): the run warns once and still
    gives the reference numbers, converted in a child (torch never loads in the executor's
    process), and nothing is left in the cache's place or in the temp folder."""
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    temp = tmp_path / "tmp"
    temp.mkdir()
    env = dict(os.environ, TMPDIR=str(temp), PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    r = subprocess.run([sys.executable, "-c", _UNWRITABLE, str(checkpoint), str(blocker / "models"),
                        str(CONFORMANCE / "model_io.npz")], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    answer = json.loads(r.stdout.strip().splitlines()[-1])
    assert answer["diff"] < 1e-4 and not answer["torch"], answer
    assert r.stderr.count("converted model not cached") == 1
    assert blocker.read_text() == "not a folder"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "tmp"] and list(temp.iterdir()) == []


def test_the_key_follows_the_content_not_the_file_state(checkpoint, tmp_path):
    """Touching a checkpoint (new mtime) keeps its key; changing one byte changes it, also within
    one process that has hashed the file before."""
    copy = tmp_path / "c.pth"
    shutil.copyfile(checkpoint, copy)
    cache = M.ModelCache(tmp_path / "models")
    key = cache.key(copy, "fp32")
    os.utime(copy, (1, 1))
    assert cache.key(copy, "fp32") == key
    with open(copy, "r+b") as f:
        f.seek(copy.stat().st_size // 2)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0xFF]))
    os.utime(copy, (2, 2))
    assert cache.key(copy, "fp32") != key


def _has_nncf() -> bool:
    try:
        import nncf  # noqa: F401
    except ImportError:
        return False
    return True


def _is_quantized(model) -> bool:
    return any(op.get_type_name() == "FakeQuantize" for op in model.get_ops())


@pytest.mark.skipif(not _has_nncf(), reason="int8 needs the int8 extra (nncf)")
def test_int8_is_quantized_close_to_fp32_and_cached(checkpoint, ov_executor, model_cache, io):
    cal = [(io["mel"][:4], io["face"][:4]), (io["mel"][4:], io["face"][4:])]
    q = R.OpenVINOExecutor(checkpoint, precision="int8", cache=M.ModelCache(model_cache))
    assert q.needs_calibration
    q.calibrate(cal)
    assert q.quantized_now
    fp32 = ov_executor.forward(io["mel"], io["face"])
    i8 = q.forward(io["mel"], io["face"])
    diff = np.abs(i8 - fp32).max()
    quality = psnr(i8, fp32)
    print(f"int8 vs fp32 on the conformance data: max abs {diff:.4f}, PSNR {quality:.1f} dB")
    assert diff > 1e-4  # really a different (quantized) computation
    assert diff < 0.1 and quality > 35  # measured: max 0.03, 45 dB
    # The cached int8 model is quantized, the fp32 one is not.
    import openvino as ov

    cache, core = M.ModelCache(model_cache), ov.Core()
    assert _is_quantized(cache.load(core, cache.key(checkpoint, "int8")))
    assert not _is_quantized(cache.load(core, cache.key(checkpoint, "fp32")))
    # The second load takes the quantized model from the cache: no calibration wanted.
    again = R.OpenVINOExecutor(checkpoint, precision="int8", cache=M.ModelCache(model_cache))
    assert not again.needs_calibration
    assert np.array_equal(again.forward(io["mel"], io["face"]), i8)


def test_int8_without_nncf_is_one_clear_line(monkeypatch, checkpoint):
    monkeypatch.setitem(sys.modules, "nncf", None)  # what `import nncf` sees where it is not installed
    with pytest.raises(Wav2LipError, match=r"int8 needs NNCF: install the int8 extra") as e:
        R.OpenVINOExecutor(checkpoint, precision="int8")
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
        R.OpenVINOExecutor("unused.pth", precision="fp16")


# --- the engine as a user runs it -------------------------------------------------------------

def wav2lip(model_cache: Path, *args, timeout: float = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, **{M.ENV_MODEL_CACHE: str(model_cache)},
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    return subprocess.run([sys.executable, "-m", "wav2lip_core", *map(str, args)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def frames_of(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="bgr24") for f in c.decode(video=0)]


def _events(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines()]  # every stdout line is JSON


def test_cli_openvino_end_to_end_matches_torch(ov_executor, checkpoint, model_cache, tmp_path):
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
def test_cli_int8_calibrates_on_the_clip_once(ov_executor, checkpoint, tmp_path):
    key = ov_executor.cache.key(checkpoint, "fp32")
    cache = tmp_path / "models"
    shutil.copytree(ov_executor.cache.folder / key, cache / key)  # fp32 converted already; no int8 yet
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


# --- warm start -------------------------------------------------------------------------------

# The engine's CLI, then the heavy modules it loaded, as a last stderr line.
_CLI_AND_MODULES = ("import json, sys\nfrom wav2lip_core.jobs.cli import main\nrc = main(sys.argv[1:])\n"
                    "print('MODULES', json.dumps(sorted(m for m in ('torch', 'nncf', 'face_alignment', 'librosa') "
                    "if m in sys.modules)), file=sys.stderr)\nsys.exit(rc)")


def engine_modules(model_cache: Path, *args, env: dict | None = None) -> tuple[subprocess.CompletedProcess, list[str]]:
    env = dict(os.environ, **(env or {}), **{M.ENV_MODEL_CACHE: str(model_cache)},
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    r = subprocess.run([sys.executable, "-c", _CLI_AND_MODULES, *map(str, args)], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=300)
    lines = [line for line in r.stderr.splitlines() if line.startswith("MODULES ")]
    return r, json.loads(lines[-1][len("MODULES "):]) if lines else None


def test_a_run_on_a_cached_model_never_imports_torch(ov_executor, checkpoint, model_cache, tmp_path):
    """--box with the model already converted: the whole run (device choice, runtime, audio,
    decode, blend, encode) without torch, whose import alone costs 2-3 s per process."""
    out = tmp_path / "warm.mp4"
    r, loaded = engine_modules(model_cache, "--face", FACE2, "--audio", SPEECH16K, "--checkpoint", checkpoint,
                               "--box", *BOX, "--duration", "0.4", "--out", out, "--progress", "json")
    assert r.returncode == 0, r.stderr
    assert _events(r.stdout)[-1]["event"] == "done"
    assert len(frames_of(out)) == 10
    assert loaded == [], f"a warm run imported {loaded}"


def test_auto_detector_falling_back_to_haar_runs_without_torch(ov_executor, checkpoint, model_cache, tmp_path):
    """Choosing the detector (auto: are BlazeFace's weights in torch hub's folder?) and running
    OpenCV's Haar cascade need no torch."""
    r, loaded = engine_modules(model_cache, "--face", FACE2, "--audio", SPEECH16K, "--checkpoint", checkpoint,
                               "--duration", "0.2", "--out", tmp_path / "haar.mp4", "--progress", "json",
                               "--cache-dir", tmp_path / "faces", "--detector", "auto",
                               env={"TORCH_HOME": str(tmp_path / "empty-torch-home")})
    assert r.returncode == 0, r.stderr
    notes = [e["message"] for e in _events(r.stdout) if e["event"] == "note"]
    assert any("Haar" in n for n in notes), notes
    assert loaded == [], f"a Haar run imported {loaded}"


@pytest.mark.parametrize("env", [{}, {"TORCH_HOME": "{tmp}/th"}, {"XDG_CACHE_HOME": "{tmp}/xdg"},
                                 {"TORCH_HOME": "~/th", "XDG_CACHE_HOME": "{tmp}/xdg"}])
def test_detector_weights_folder_is_torch_hubs_without_torch(tmp_path, env):
    """Where face_alignment's weights are looked for, worked out without torch, is the folder
    torch.hub.get_dir() names."""
    code = ("import sys; from wav2lip_core.faces.detectors import torch_hub_checkpoints; ours = torch_hub_checkpoints(); "
            "assert 'torch' not in sys.modules; import torch.hub, os; "
            "print(ours == __import__('pathlib').Path(torch.hub.get_dir()) / 'checkpoints', ours)")
    full_env = {k: v for k, v in os.environ.items() if k not in ("TORCH_HOME", "XDG_CACHE_HOME")}
    full_env.update({k: v.format(tmp=tmp_path) for k, v in env.items()}, PYTHONPATH=str(ROOT))
    r = subprocess.run([sys.executable, "-c", code], env=full_env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("True"), r.stdout


@pytest.mark.skipif(not _has_nncf(), reason="int8 needs the int8 extra (nncf)")
def test_int8_runs_import_neither_nncf_nor_torch(ov_executor, checkpoint, tmp_path):
    key = ov_executor.cache.key(checkpoint, "fp32")
    cache = tmp_path / "models"
    shutil.copytree(ov_executor.cache.folder / key, cache / key)
    args = ["--face", FACE2, "--audio", SPEECH16K, "--checkpoint", checkpoint, "--box", *BOX, "--duration", "0.4",
            "--precision", "int8", "--progress", "json"]
    first, loaded = engine_modules(cache, *args, "--out", tmp_path / "a.mp4")
    assert first.returncode == 0, first.stderr
    assert any("calibrating int8" in e.get("message", "") for e in _events(first.stdout))
    assert loaded == [], f"calibrating imported {loaded} into the engine (the child should)"
    second, loaded = engine_modules(cache, *args, "--out", tmp_path / "b.mp4")
    assert second.returncode == 0, second.stderr
    assert loaded == [], f"a warm int8 run imported {loaded}"


def test_executors_are_kept_for_the_next_job_until_the_checkpoint_changes(ov_executor, checkpoint, model_cache, tmp_path):
    copy = tmp_path / "c.pth"
    shutil.copyfile(checkpoint, copy)
    executors = R.Executors(keep=2, cache_dir=model_cache)
    first = executors.get(copy, runtime="openvino", device="cpu", precision="fp32")
    assert executors.get(copy, runtime="openvino", device="cpu", precision="fp32") is first
    os.utime(copy, (1, 1))  # the file was replaced (same content here): load it again
    second = executors.get(copy, runtime="openvino", device="cpu", precision="fp32")
    assert second is not first and not second.converted
    assert executors.get(copy, runtime="openvino", device="cpu", precision="fp32") is second


def test_the_first_run_converts_in_a_child_and_never_loads_torch_itself(checkpoint, tmp_path):
    """An empty model cache: the conversion (torch) runs in a child process, the engine itself
    stays without torch, and the next run finds the entry."""
    cache = tmp_path / "models"
    args = ["--face", FACE2, "--audio", SPEECH16K, "--checkpoint", checkpoint, "--box", *BOX, "--duration", "0.2",
            "--progress", "json", "--device", "cpu"]
    r, loaded = engine_modules(cache, *args, "--out", tmp_path / "first.mp4")
    assert r.returncode == 0, r.stderr
    assert loaded == [], f"the converting run imported {loaded}"
    key = M.ModelCache(cache).key(checkpoint, "fp32")
    assert (cache / key / "model.bin").is_file()
    assert len(frames_of(tmp_path / "first.mp4")) == 5


@pytest.mark.parametrize("bad", ["missing", "folder", "truncated"])
def test_a_bad_checkpoint_is_one_line_on_the_openvino_path(checkpoint, tmp_path, bad):
    path = tmp_path / "wav2lip.pth"
    if bad == "folder":
        path.mkdir()
    elif bad == "truncated":  # only torch.load (in the conversion child) finds this one
        data = Path(checkpoint).read_bytes()
        path.write_bytes(data[: len(data) // 3])
    r = wav2lip(tmp_path / "models", "--face", FACE2, "--audio", SPEECH16K, "--checkpoint", path, "--box", *BOX,
                "--duration", "0.2", "--out", tmp_path / "o.mp4", "--progress", "none", "--device", "cpu")
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in r.stderr, r.stderr
    assert {"missing": "not found", "folder": "is a folder", "truncated": "truncated or corrupt"}[bad] in lines[0]
    assert not (tmp_path / "o.mp4").exists()
