"""Wav2Lip generator and checkpoint loading against the reference outputs in ../shared/conformance."""

from __future__ import annotations

import json
import pickle
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import CONFORMANCE, ROOT, make_checkpoint
from wav2lip_core.errors import CheckpointError
from wav2lip_core.model.checkpoint import Wav2Lip, load_checkpoint


def test_state_dict_layout_matches_released_files():
    ref = [(k, s) for k, s, _ in json.loads((CONFORMANCE / "wav2lip_keys.json").read_text())]
    sd = Wav2Lip().state_dict()
    assert [(k, list(v.shape)) for k, v in sd.items()] == ref
    assert len(ref) == 352
    n_params = sum(p.numel() for p in Wav2Lip().parameters())
    assert abs(n_params / 1e6 - 36.3) < 0.05


def test_the_model_sizes_import_without_torch():
    """The pipeline reads the model's sizes on every run, also when OpenVINO runs the model."""
    code = ("import sys; from wav2lip_core.model import checkpoint as model; from wav2lip_core.sync import blend; print('torch' in sys.modules); "
            "from wav2lip_core.model.checkpoint import Wav2Lip; print('torch' in sys.modules, Wav2Lip.__name__)")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["False", "True", "Wav2Lip"]


def test_declared_input_shapes_are_the_networks():
    from wav2lip_core.model.checkpoint import FACE_SHAPE, MEL_SHAPE

    io = np.load(CONFORMANCE / "model_io.npz")
    assert io["mel"].shape[1:] == MEL_SHAPE and io["face"].shape[1:] == FACE_SHAPE
    with torch.no_grad():
        out = Wav2Lip().eval()(torch.zeros(2, *MEL_SHAPE), torch.zeros(2, *FACE_SHAPE))
    assert out.shape == (2, 3, FACE_SHAPE[1], FACE_SHAPE[2])


def _check_reference_output(model):
    io = np.load(CONFORMANCE / "model_io.npz")
    with torch.no_grad():
        out = model(torch.from_numpy(io["mel"]), torch.from_numpy(io["face"])).numpy()
    assert out.shape == (8, 3, 96, 96)
    assert np.abs(out - io["expected"]).max() < 1e-4


@pytest.mark.parametrize("prefix", ["module.", ""])
def test_conformance_checkpoint_reproduces_reference(tmp_path, prefix):
    ckpt = make_checkpoint(tmp_path / "c.pth", "--prefix", prefix)
    model = load_checkpoint(ckpt)
    assert not model.training
    _check_reference_output(model)


def test_checkpoint_with_optimizer_state_loads(tmp_path):
    ckpt = make_checkpoint(tmp_path / "full.pth", "--with-optimizer")
    assert ckpt.stat().st_size > 400e6  # the size of the released files
    _check_reference_output(load_checkpoint(ckpt))


def test_bare_state_dict_loads(tmp_path, checkpoint):
    sd = torch.load(checkpoint, weights_only=True)["state_dict"]
    torch.save({k[len("module."):]: v for k, v in sd.items()}, tmp_path / "bare.pth")
    _check_reference_output(load_checkpoint(tmp_path / "bare.pth"))


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="not found.*nothere.pth"):
        load_checkpoint(tmp_path / "nothere.pth")


def test_empty_file(tmp_path):
    (tmp_path / "empty.pth").write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty"):
        load_checkpoint(tmp_path / "empty.pth")


def test_truncated_file(tmp_path, checkpoint):
    data = checkpoint.read_bytes()
    (tmp_path / "trunc.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt.*Download it again"):
        load_checkpoint(tmp_path / "trunc.pth")


def test_html_page_saved_as_checkpoint(tmp_path):
    page = b"<!DOCTYPE html><html><head><title>Google Drive - Virus scan warning</title></head><body>...</body></html>"
    (tmp_path / "wav2lip.pth").write_bytes(page)
    with pytest.raises(CheckpointError, match="web page"):
        load_checkpoint(tmp_path / "wav2lip.pth")


class _Evil:
    marker: Path

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.mark.parametrize("zip_format", [True, False])
def test_pickle_that_runs_code_is_refused_and_nothing_runs(tmp_path, zip_format):
    evil = _Evil()
    evil.marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    if zip_format:
        torch.save({"state_dict": evil}, path)
    else:
        with open(path, "wb") as f:
            pickle.dump({"state_dict": evil}, f)
    assert not evil.marker.exists()
    with pytest.raises(CheckpointError, match="refused"):
        load_checkpoint(path)
    assert not evil.marker.exists(), "loading the checkpoint executed code from it"


def test_other_network_names_the_mismatch_in_summary(tmp_path):
    # SyncNet (the lip-sync expert) has face_encoder/audio_encoder but no decoder.
    sd = {f"module.face_encoder.{i}.conv_block.0.weight": torch.zeros(4, 4, 3, 3) for i in range(40)}
    sd |= {f"module.audio_encoder.{i}.conv_block.0.weight": torch.zeros(4, 4, 3, 3) for i in range(30)}
    torch.save({"state_dict": sd, "global_step": 1, "global_epoch": 1}, tmp_path / "syncnet.pth")
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(tmp_path / "syncnet.pth")
    msg = str(err.value)
    assert "syncnet.pth" in msg and "not a Wav2Lip generator" in msg
    # SyncNet's audio_encoder.N names overlap Wav2Lip's, so only some keys are missing.
    assert re.search(r"missing \d+ Wav2Lip keys: .*face_decoder_blocks \(126\)", msg)
    assert re.search(r"\d+ unexpected keys: face_encoder \(40\)", msg)
    assert "\n" not in msg and len(msg) < 600
