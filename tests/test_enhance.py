"""Face restoration (--enhance): spandrel detects the restorer, we run it at its input size and
hand back faces at the size asked for; bad files and a missing extra give one line.

The restorer files here have RANDOM weights in the released key layouts (built by
tests/restorer_checkpoints.py): they prove detection, loading, shapes, value ranges and that the
options reach the model, not how good a restored face looks (that needs the real weights).
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

from conftest import ROOT
from restorer_checkpoints import build_model, write_checkpoint
from wav2lip_core.faces.align import Rotation
from wav2lip_core.sync.blend import FaceEdit, composite, paste, restore_pasted
from wav2lip_core.quality.enhance import EnhanceError, Restorers, load_restorer
from wav2lip_core.errors import Cancelled, Wav2LipError
from wav2lip_core.quality.restorer_file import import_spandrel

HAVE_EXTRA = all(importlib.util.find_spec(m) is not None for m in ("spandrel", "spandrel_extra_arches", "torchvision"))
needs_extra = pytest.mark.skipif(not HAVE_EXTRA, reason="the enhance extra is not installed "
                                 "(spandrel, spandrel-extra-arches, torchvision): pip install -e '.[enhance]'")


@pytest.fixture(scope="session")
def restorer_files(tmp_path_factory):
    """Built once per session and only when asked for (GFPGAN's is ~350 MB at its one size)."""
    folder = tmp_path_factory.mktemp("restorers")
    made: dict[str, str] = {}

    def get(arch: str) -> str:
        if arch not in made:
            made[arch] = write_checkpoint(arch, folder / f"{arch}.pth", small=True)
        return made[arch]
    return get


def face(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A face-like BGR crop: smooth shapes, not noise (noise says little about resizing)."""
    rng = np.random.default_rng(seed)
    img = np.full((h, w, 3), (90, 120, 170), np.uint8)
    cv2.ellipse(img, (w // 2, h // 2), (w // 3, h * 2 // 5), 0, 0, 360, (110, 150, 210), -1)
    cv2.ellipse(img, (w // 2, h * 3 // 4), (w // 6, h // 16), 0, 0, 360, (60, 60, 150), -1)
    return cv2.add(img, rng.integers(0, 12, img.shape, np.uint8))


def one_line(exc: BaseException) -> str:
    text = str(exc)
    assert "\n" not in text and text, text
    return text


# --- detection, shapes, options -------------------------------------------------------------

def restores_at_the_asked_size(r, seed: int) -> np.ndarray:
    """One face restored into a box of another size: shape, dtype, and a real change."""
    f = face(173, 151, seed)
    out = r.restore([f], sizes=[(210, 230)])
    assert len(out) == 1 and out[0].shape == (230, 210, 3) and out[0].dtype == np.uint8
    # The model changed the face, beyond what scaling it to 512 and back does.
    round_trip = cv2.resize(cv2.resize(f, (512, 512), interpolation=cv2.INTER_CUBIC), (210, 230),
                            interpolation=cv2.INTER_AREA)
    assert np.abs(out[0].astype(int) - round_trip).mean() > 10
    return out[0]


@needs_extra
def test_restoreformer_is_detected_and_restores_each_face_at_its_size(restorer_files):
    r = load_restorer(restorer_files("restoreformer"))
    assert r.arch == "RestoreFormer"
    assert r.info.parameters == sum(p.numel() for p in build_model("restoreformer", small=True).parameters())
    restores_at_the_asked_size(r, 1)
    faces = [face(96, 96, 2), face(131, 117, 3)]
    assert [o.shape for o in r.restore(faces)] == [(96, 96, 3), (131, 117, 3)]  # own size by default
    assert r.restore([]) == []


@needs_extra
def test_gfpgan_is_detected_and_restores_the_same_face_the_same_way(restorer_files):
    """GFPGAN injects noise; fresh noise per frame would make a still face shimmer in video."""
    r = load_restorer(restorer_files("gfpgan"))
    assert r.arch == "GFPGAN"
    assert r.info.parameters == sum(p.numel() for p in build_model("gfpgan").parameters())
    first = restores_at_the_asked_size(r, 4)
    assert np.array_equal(restores_at_the_asked_size(r, 4), first)


@needs_extra
def test_codeformer_is_detected_and_its_fidelity_reaches_it(restorer_files):
    r = load_restorer(restorer_files("codeformer"), fidelity=0.0)
    assert r.arch == "CodeFormer"
    assert r.info.parameters == sum(p.numel() for p in build_model("codeformer", small=True).parameters())
    most_restored = restores_at_the_asked_size(r, 5)
    closest = restores_at_the_asked_size(r.with_fidelity(1.0), 5)
    assert np.abs(most_restored.astype(int) - closest).mean() > 1


@needs_extra
def test_the_model_gets_rgb_in_minus_one_to_one(restorer_files):
    """What reaches the network's first layer, seen through a forward hook: RGB order and the
    [-1, 1] range the restorers were trained on (a BGR or [0, 1] input restores badly)."""
    r = load_restorer(restorer_files("restoreformer"))
    seen = []
    conv_in = r._descriptor.model.encoder.conv_in
    handle = conv_in.register_forward_hook(lambda mod, inputs, output: seen.append(inputs[0].detach().clone()))
    try:
        blue = np.zeros((64, 64, 3), np.uint8)
        blue[..., 0] = 255  # BGR blue
        r.restore([blue])
    finally:
        handle.remove()
    x = seen[0]
    assert tuple(x.shape) == (1, 3, 512, 512)
    assert float(x[0, 2].min()) == 1.0 and float(x[0, 0].max()) == -1.0 and float(x[0, 1].max()) == -1.0


def mouth_mask(h: int, w: int) -> np.ndarray:
    """A hand-made stand-in for a landmark mouth mask: a soft ellipse low in the box."""
    m = np.zeros((h, w), np.float32)
    cv2.ellipse(m, (w // 2, h * 3 // 4), (w // 4, h // 8), 0, 0, 360, 1.0, -1)
    return cv2.GaussianBlur(m, (0, 0), 3)


@needs_extra
@pytest.mark.parametrize("blend", ["feather", "hard", "mouth"])
def test_restored_pixels_land_only_inside_the_blend_mask(restorer_files, blend):
    """The sync pass's step: generated face pasted into its box, restored, pasted again through
    the same mask: pixels the lip-sync leaves alone stay the source's; inside the mask the
    result differs from the plain lip-sync."""
    r = load_restorer(restorer_files("restoreformer"))
    frame = cv2.resize(face(180, 320, 6), (320, 180))
    box = (30, 170, 100, 220)  # y1, y2, x1, x2
    y1, y2, x1, x2 = box
    edit = FaceEdit(mask=mouth_mask(y2 - y1, x2 - x1)) if blend == "mouth" else None
    mask = edit.mask if edit is not None else None
    generated = face(96, 96, 7)[::-1].copy()  # a "model output" unlike the source
    plain, enhanced = frame.copy(), frame.copy()
    paste(plain, generated, box, blend, mask=mask)
    restored = restore_pasted(r, [frame[y1:y2, x1:x2]], [generated], blend, [edit])
    assert restored[0].shape == (y2 - y1, x2 - x1, 3)
    paste(enhanced, restored[0], box, blend, mask=mask)
    # Where the blend's mask is 0: pixels that neither a black nor a white face changes.
    black, white = frame.copy(), frame.copy()
    paste(black, np.zeros((96, 96, 3), np.uint8), box, blend, mask=mask)
    paste(white, np.full((96, 96, 3), 255, np.uint8), box, blend, mask=mask)
    untouched = np.all((black == frame) & (white == frame), axis=2)
    assert untouched[y1:y2, x1:x2].any() == (blend != "hard")
    assert np.array_equal(enhanced[untouched], frame[untouched])
    changed = ~np.all(enhanced == plain, axis=2)
    assert changed[y1:y2, x1:x2].mean() > 0.05 and not changed[~_in_box(frame.shape, box)].any()


def test_a_levelled_face_is_composited_as_the_frame_paste_would():
    """A turned crop (align) is pasted into the box's region copy exactly as into the frame."""
    frame = cv2.resize(face(180, 320, 8), (320, 180))
    box = (30, 170, 100, 220)
    y1, y2, x1, x2 = box
    generated = face(96, 96, 9)[::-1].copy()
    edit = FaceEdit(rotation=Rotation(box=box, angle=15.0))
    whole = frame.copy()
    paste(whole, generated, box, "feather", rotation=edit.rotation)
    assert np.array_equal(composite(frame[y1:y2, x1:x2], generated, "feather", edit), whole[y1:y2, x1:x2])


def _in_box(shape, box) -> np.ndarray:
    inside = np.zeros(shape[:2], bool)
    inside[box[0]:box[1], box[2]:box[3]] = True
    return inside


@needs_extra
def test_stop_cancels_between_faces(restorer_files):
    """A cancelled job does not wait for every face (seconds each on a CPU)."""
    r = load_restorer(restorer_files("restoreformer"))
    asked = []

    def stop() -> bool:
        asked.append(True)
        return len(asked) > 1

    with pytest.raises(Cancelled):
        r.restore([face(96, 96, s) for s in range(3)], stop=stop)
    assert len(asked) == 2  # the first face restored, the second never started


@needs_extra
def test_restorers_keeps_a_loaded_file_until_it_changes(restorer_files, tmp_path):
    path = tmp_path / "rf.pth"
    path.write_bytes(open(restorer_files("restoreformer"), "rb").read())
    cache = Restorers()
    first = cache.get(path, "cpu", fidelity=0.3)
    again = cache.get(path, "cpu", fidelity=0.8)
    assert again._descriptor is first._descriptor and (first.fidelity, again.fidelity) == (0.3, 0.8)
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert cache.get(path, "cpu")._descriptor is not first._descriptor


@needs_extra
def test_gpu_batch_matches_the_cpu(restorer_files):
    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs CUDA (faces are batched on the GPU)")
    faces = [face(96, 96, s) for s in range(3)]
    cpu = load_restorer(restorer_files("restoreformer")).restore(faces)
    gpu = load_restorer(restorer_files("restoreformer"), "cuda")
    # torch lets cuDNN convolve in TF32 on Ampere and later (10-bit mantissa); through a deep
    # random-weight network that drifts several levels from the CPU. Plain fp32 shows whether the
    # batched GPU path computes what the CPU does; the TF32 drift is printed, not judged.
    tf32 = gpu.restore(faces)
    cudnn, matmul = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        exact = gpu.restore(faces)
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = cudnn, matmul
    diffs = [int(np.abs(a.astype(int) - b).max()) for a, b in zip(cpu, exact)]
    print(f"restorer GPU vs CPU, max level difference per face: fp32 {diffs}, "
          f"TF32 {[int(np.abs(a.astype(int) - b).max()) for a, b in zip(cpu, tf32)]}")
    assert max(diffs) <= 2, diffs


# --- one clear line for what cannot be used --------------------------------------------------

@needs_extra
def test_missing_file(tmp_path):
    with pytest.raises(EnhanceError) as e:
        load_restorer(tmp_path / "GFPGANv1.4.pth")
    assert "not found" in one_line(e.value) and "GFPGANv1.4.pth" in str(e.value)


@needs_extra
def test_the_wav2lip_checkpoint_is_not_a_restorer(checkpoint):
    with pytest.raises(EnhanceError) as e:
        load_restorer(checkpoint)
    assert "not a face restorer" in one_line(e.value) and "--checkpoint" in str(e.value)


@needs_extra
@pytest.mark.parametrize("content", ["state_dict", "garbage", "empty"])
def test_files_that_are_not_restorers(tmp_path, content):
    import torch

    path = tmp_path / "model.pth"
    if content == "state_dict":
        torch.save({"params": {"conv.weight": torch.zeros(4, 3, 3, 3)}}, path)
    elif content == "garbage":
        path.write_bytes(os.urandom(4096))
    else:
        path.write_bytes(b"")
    with pytest.raises(EnhanceError) as e:
        load_restorer(path)
    assert one_line(e.value).startswith("not a face restorer: ")


@needs_extra
def test_wrong_suffix(tmp_path):
    path = tmp_path / "face.png"
    path.write_bytes(b"\x89PNG")
    with pytest.raises(EnhanceError) as e:
        load_restorer(path)
    assert "not a face restorer" in one_line(e.value) and ".pth" in str(e.value)


@needs_extra
def test_another_spandrel_architecture_is_named(tmp_path):
    """An upscaler spandrel knows (Real-ESRGAN's compact net) is not a face restorer."""
    import torch

    import_spandrel()  # as the product imports it (torchvision included)
    from spandrel.architectures.Compact import Compact

    path = tmp_path / "realesr-general-x4v3.pth"
    torch.save({"params": Compact(num_feat=8, num_conv=2).state_dict()}, path)
    with pytest.raises(EnhanceError) as e:
        load_restorer(path)
    text = one_line(e.value)
    assert text.startswith("unsupported face restorer: ") and "Compact" in text and "GFPGAN" in text


def test_missing_extra_names_the_install_line(tmp_path):
    """Without spandrel (blocked in a fresh interpreter the way Python documents: a None entry in
    sys.modules makes its import raise ModuleNotFoundError, as when it is not installed)."""
    code = ("import sys; sys.modules['spandrel'] = None\n"
            "from wav2lip_core.quality.enhance import load_restorer, available\n"
            "assert not available()\n"
            "try:\n    load_restorer(sys.argv[1])\n"
            "except Exception as exc:\n    print(type(exc).__name__, exc)\n")
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path / "GFPGANv1.4.pth")], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    line = done.stdout.strip()
    assert line.startswith("EnhanceError ") and 'pip install "wav2lip-blender[enhance]"' in line
    assert "not installed: spandrel" in line and "\n" not in line
    assert issubclass(EnhanceError, Wav2LipError)  # the CLI prints these as one `error:` line


# --- through the whole pipeline (the CLI) -------------------------------------------------------

def _decoded(path) -> np.ndarray:
    import av

    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="bgr24") for f in c.decode(video=0)])


@needs_extra
def test_cli_enhance_changes_only_the_blended_face(restorer_files, checkpoint, media, tmp_path):
    """--enhance through the CLI: the restored face is blended in through the lip-sync's own
    feather mask, so the frames differ from a plain run inside the box's masked lower part and
    nowhere else (lossless x264, so any other change would show)."""
    box = (108, 438, 98, 418)  # y1 y2 x1 x2: KatieHill's face (512x512) as BlazeFace finds it
    common = ["--face", str(media / "sadtalker_WDA_KatieHill_000.mp4"), "--audio", str(media / "sadtalker_WDA_KatieHill_000.mp4"),
              "--checkpoint", str(checkpoint), "--box", *map(str, box), "--duration", "0.2", "--crf", "0",
              "--silence", "sync", "--device", "cpu", "--progress", "none", "--no-cache"]
    outs = {}
    for name, extra in (("plain", []), ("enhanced", ["--enhance", restorer_files("restoreformer")])):
        outs[name] = tmp_path / f"{name}.mp4"
        r = subprocess.run([sys.executable, "-m", "wav2lip_core", *common, "--out", str(outs[name]), *extra],
                           cwd=ROOT, capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stderr
    plain, enhanced = _decoded(outs["plain"]), _decoded(outs["enhanced"])
    assert plain.shape == enhanced.shape and len(plain) == 5
    diff = np.abs(plain.astype(int) - enhanced.astype(int)).max(axis=(0, 3))
    y1, y2, x1, x2 = box
    outside = diff.copy()
    outside[y1:y2, x1:x2] = 0
    assert outside.max() == 0, "pixels outside the face box changed"
    lower = diff[y1 + (y2 - y1) // 2: y2, x1:x2]
    assert lower.max() > 20, "the restored face did not reach the frame"
    # The feather mask is ~0 over the box's top quarter (forehead and eyes): no restored pixels land there.
    assert diff[y1: y1 + (y2 - y1) // 4, x1:x2].max() <= 1


@needs_extra
def test_cli_enhance_with_the_wav2lip_checkpoint_is_one_line(checkpoint, media, tmp_path):
    out = tmp_path / "o.mp4"
    r = subprocess.run([sys.executable, "-m", "wav2lip_core", "--face", str(media / "sadtalker_WDA_KatieHill_000.mp4"),
                        "--audio", str(media / "sadtalker_WDA_KatieHill_000.mp4"), "--checkpoint", str(checkpoint),
                        "--out", str(out), "--box", "108", "438", "98", "418", "--duration", "0.2", "--progress", "none",
                        "--enhance", str(checkpoint)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "--checkpoint" in lines[0], r.stderr
    assert not out.exists()
