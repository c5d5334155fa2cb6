"""install.py's pieces that run without a real Blender program: finding Blender, recording
preferences into a Blender user folder, checkpoint verification, the status table."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT

sys.path.insert(0, str(ROOT))
import install  # noqa: E402


def _fake_blender(folder: Path, version: str) -> Path:
    """An executable that answers `--version` like Blender does (the discovery logic is what
    is tested; no Blender program exists on the test machine)."""
    folder.mkdir(parents=True, exist_ok=True)
    exe = folder / "blender"
    exe.write_text(f"#!/bin/sh\necho 'Blender {version}'\necho '\tbuild date: 2026-01-01'\n")
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    return exe


def test_torch_pin_comes_from_pyproject():
    assert install.torch_pin() == "torch==2.13.0"


def test_finds_blender_on_path(tmp_path, monkeypatch):
    exe = _fake_blender(tmp_path / "bin", "4.2.3 LTS")
    monkeypatch.setenv("PATH", f"{exe.parent}{os.pathsep}{os.environ['PATH']}")
    found = install.find_blender()
    assert found == (exe, (4, 2, 3))


def test_explicit_blender_path_and_folder(tmp_path):
    exe = _fake_blender(tmp_path / "blender-5.0.1-linux-x64", "5.0.1")
    assert install.find_blender(str(exe)) == (exe, (5, 0, 1))
    assert install.find_blender(str(exe.parent)) == (exe, (5, 0, 1))
    with pytest.raises(install.InstallError, match="not a Blender executable"):
        install.find_blender(str(tmp_path / "nope"))


def test_finds_blender_in_usual_folders(tmp_path, monkeypatch):
    monkeypatch.setattr(install.Path, "home", lambda: tmp_path)
    monkeypatch.setenv("PATH", "/nonexistent")
    exe = _fake_blender(tmp_path / "blender-4.5.2-linux-x64", "4.5.2")
    if sys.platform.startswith("linux"):
        assert install.find_blender() == (exe, (4, 5, 2))


def test_records_preferences_into_blender_user_folder(tmp_path, monkeypatch):
    cfg_dir = tmp_path / "blender-user" / "config"
    monkeypatch.setenv("BLENDER_USER_CONFIG", str(cfg_dir))
    assert install.blender_config_dir((4, 2, 0)) == cfg_dir
    path = install.record_config(install.blender_config_dir((4, 2, 0)), python="/x/bin/python", checkpoint="/w/a.pth")
    assert path == cfg_dir / install.CONFIG_NAME
    assert install.read_config(cfg_dir) == {"python": "/x/bin/python", "checkpoint": "/w/a.pth"}
    before = path.stat().st_mtime_ns
    install.record_config(cfg_dir, python="/x/bin/python")  # re-running changes nothing
    assert path.stat().st_mtime_ns == before
    install.record_config(cfg_dir, checkpoint="/w/b.pth")  # a new value merges, keeps the rest
    assert install.read_config(cfg_dir) == {"python": "/x/bin/python", "checkpoint": "/w/b.pth"}


def test_blender_config_dir_default_layout(monkeypatch, tmp_path):
    monkeypatch.delenv("BLENDER_USER_CONFIG", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    if sys.platform.startswith("linux"):
        assert install.blender_config_dir((5, 0, 1)) == tmp_path / "blender" / "5.0" / "config"


def test_checkpoint_verification_messages(tmp_path, checkpoint):
    py = Path(sys.executable)
    assert "Wav2Lip generator" in install.verify_checkpoint(py, checkpoint)
    page = tmp_path / "wav2lip_gan.pth"
    page.write_text("<!DOCTYPE html><html><body>Google Drive can't scan this file for viruses</body></html>")
    with pytest.raises(install.InstallError, match="web page"):
        install.verify_checkpoint(py, page)
    with pytest.raises(install.InstallError, match="checkpoint not found.*Wav2Lip authors"):
        install.verify_checkpoint(py, tmp_path / "missing.pth")


def test_check_prints_every_row_and_fails_without_checkpoint(tmp_path, checkpoint):
    venv = Path(sys.prefix)  # the test environment has the engine installed
    env = {**os.environ, "BLENDER_USER_CONFIG": str(tmp_path / "cfg"), "PATH": os.path.dirname(sys.executable) + ":/usr/bin:/bin"}
    res = subprocess.run([sys.executable, str(ROOT / "install.py"), "--check", "--venv", str(venv)],
                         capture_output=True, text=True, env=env)
    rows = ["Python (installer)", "engine environment", "torch and device", "ffmpeg (PyAV)", "Blender",
            "add-on installed", "checkpoint", "detector weights"]
    for row in rows:
        assert row in res.stdout, res.stdout
    assert res.returncode == 1 and "checkpoint" in res.stdout and "MISSING" in res.stdout
    ok = subprocess.run([sys.executable, str(ROOT / "install.py"), "--check", "--venv", str(venv), "--checkpoint",
                         str(checkpoint)], capture_output=True, text=True, env=env)
    assert ok.returncode == 0, ok.stdout
    assert "torch 2.13.0" in ok.stdout and "PyAV" in ok.stdout


def test_untrained_checkpoint_is_seeded_and_loads(tmp_path):
    import torch

    from wav2lip_core.model import load_checkpoint, save_untrained_checkpoint

    a = load_checkpoint(save_untrained_checkpoint(tmp_path / "a.pth", seed=0)).state_dict()
    b = load_checkpoint(save_untrained_checkpoint(tmp_path / "b.pth", seed=0)).state_dict()
    c = load_checkpoint(save_untrained_checkpoint(tmp_path / "c.pth", seed=1)).state_dict()
    key = "audio_encoder.0.conv_block.0.weight"
    assert torch.equal(a[key], b[key]) and not torch.equal(a[key], c[key])
