"""install.py's pieces that run without a real Blender program: finding Blender, recording
preferences into a Blender user folder, the built add-on, checkpoint and detector weights
verification, the status table. (tests/blender_program runs it against the real program.)"""

from __future__ import annotations

import importlib.util
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT

sys.path.insert(0, str(ROOT))
import install  # noqa: E402
import installer  # noqa: E402
from installer import addon as installer_addon, blender as installer_blender, engine as installer_engine  # noqa: E402

base = installer.addon_module("setup_base")
config = installer.addon_module("engine_config")
pip = installer.addon_module("setup_pip")
weights = installer.addon_module("setup_weights")


def _fake_blender(folder: Path, version: str) -> Path:
    """An executable that answers `--version` like Blender does (the discovery logic is what
    is tested; no Blender program exists on the test machine)."""
    folder.mkdir(parents=True, exist_ok=True)
    exe = folder / "blender"
    exe.write_text(f"#!/bin/sh\necho 'Blender {version}'\necho '\tbuild date: 2026-01-01'\n")
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    return exe


def test_torch_pin_comes_from_pyproject():
    assert installer_engine.torch_pin() == "torch==2.13.0"


def test_finds_blender_on_path(tmp_path, monkeypatch):
    exe = _fake_blender(tmp_path / "bin", "4.2.3 LTS")
    monkeypatch.setenv("PATH", f"{exe.parent}{os.pathsep}{os.environ['PATH']}")
    found = installer_blender.find_blender()
    assert found == (exe, (4, 2, 3))


def test_explicit_blender_path_and_folder(tmp_path):
    exe = _fake_blender(tmp_path / "blender-5.0.1-linux-x64", "5.0.1")
    assert installer_blender.find_blender(str(exe)) == (exe, (5, 0, 1))
    assert installer_blender.find_blender(str(exe.parent)) == (exe, (5, 0, 1))
    with pytest.raises(install.InstallError, match="not a Blender executable"):
        installer_blender.find_blender(str(tmp_path / "nope"))


def _touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("")
    return path


@pytest.mark.parametrize("platform", ["linux", "darwin", "win32"])
def test_blender_candidates_per_platform(tmp_path, monkeypatch, platform):
    """Each platform's usual folders, checked on any OS (paths under tmp_path stand in)."""
    monkeypatch.setattr(install.Path, "home", lambda: tmp_path)
    if platform == "linux":
        want = [_touch(tmp_path / "blender-4.5.2-linux-x64" / "blender"), _touch(tmp_path / "blender-4.2.0-linux-x64" / "blender")]
    elif platform == "darwin":
        want = [_touch(tmp_path / "Applications" / "Blender.app" / "Contents" / "MacOS" / "Blender")]
    else:
        pf, pf86 = tmp_path / "Program Files", tmp_path / "Program Files (x86)"
        monkeypatch.setenv("ProgramFiles", str(pf))
        monkeypatch.setenv("ProgramFiles(x86)", str(pf86))
        want = [_touch(pf / "Blender Foundation" / "Blender 4.5" / "blender.exe"),
                _touch(pf86 / "Steam" / "steamapps" / "common" / "Blender" / "blender.exe")]  # Steam's default
    found = [p for p in installer_blender.blender_candidates(platform) if str(p).startswith(str(tmp_path))]
    assert found == want


@pytest.mark.skipif(sys.platform == "win32", reason="the stand-in Blender is a shell script")
def test_find_blender_falls_back_to_usual_folders(tmp_path, monkeypatch):
    monkeypatch.setattr(install.Path, "home", lambda: tmp_path)
    monkeypatch.setenv("PATH", "/nonexistent")
    if sys.platform == "darwin":
        exe = _fake_blender(tmp_path / "Applications" / "Blender.app" / "Contents" / "MacOS", "4.5.2")
        exe = exe.rename(exe.with_name("Blender"))
    else:
        exe = _fake_blender(tmp_path / "blender-4.5.2-linux-x64", "4.5.2")
    assert installer_blender.find_blender() == (exe, (4, 5, 2))


def test_record_config_merges_and_leaves_an_unchanged_file_alone(tmp_path):
    """The JSON install.py writes into the folder Blender reports (tests/blender_program checks
    which folder that is in the real program) and into the engine environment."""
    cfg_dir = tmp_path / "blender-user" / "config"
    path = config.record_config(cfg_dir, python="/x/bin/python", checkpoint="/w/a.pth")
    assert path == cfg_dir / "wav2lip_lipsync.json"
    assert config.read_config(cfg_dir) == {"python": "/x/bin/python", "checkpoint": "/w/a.pth"}
    before = path.stat().st_mtime_ns
    config.record_config(cfg_dir, python="/x/bin/python")  # re-running changes nothing
    assert path.stat().st_mtime_ns == before
    config.record_config(cfg_dir, checkpoint="/w/b.pth", detector_weights="")  # merges; empty values change nothing
    assert config.read_config(cfg_dir) == {"python": "/x/bin/python", "checkpoint": "/w/b.pth"}
    assert sorted(p.name for p in cfg_dir.iterdir()) == ["wav2lip_lipsync.json"]  # no temporary file left


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the XDG layout is Linux's")
def test_empty_data_home_counts_as_unset(monkeypatch, tmp_path):
    """XDG_DATA_HOME="" (as some session scripts export it) must not put the engine in a folder
    relative to wherever install.py happens to run."""
    monkeypatch.delenv("WAV2LIP_ENGINE_VENV", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", "")
    monkeypatch.setattr(install.Path, "home", lambda: tmp_path / "home")
    assert base.default_venv() == tmp_path / "home/.local/share/wav2lip-blender/engine"


def test_checkpoint_verification_messages(tmp_path, checkpoint):
    py = Path(sys.executable)
    assert "Wav2Lip generator" in weights.verify_checkpoint(py, checkpoint)
    page = tmp_path / "wav2lip_gan.pth"
    page.write_text("<!DOCTYPE html><html><body>Google Drive can't scan this file for viruses</body></html>")
    with pytest.raises(install.InstallError, match="web page"):
        weights.verify_checkpoint(py, page)
    with pytest.raises(install.InstallError, match="checkpoint not found.*Wav2Lip authors"):
        weights.verify_checkpoint(py, tmp_path / "missing.pth")


@pytest.mark.skipif(sys.platform == "win32", reason="the stand-in engines are shell scripts")
@pytest.mark.parametrize("says, why", [
    ("", "the engine exited with code 3 and said nothing"),  # e.g. killed, or a broken interpreter
    ("echo '   ' >&2; echo >&2", "the engine exited with code 3 and said nothing"),
    ("echo 'Traceback (most recent call last):' >&2; echo 'ImportError: libtorch.so: cannot open' >&2",
     "ImportError: libtorch.so: cannot open"),
])
def test_checkpoint_verification_when_the_engine_fails(tmp_path, checkpoint, says, why):
    engine = tmp_path / "python"
    engine.write_text(f"#!/bin/sh\n{says}\nexit 3\n")
    engine.chmod(0o755)
    with pytest.raises(install.InstallError) as e:
        weights.verify_checkpoint(engine, checkpoint)
    assert str(e.value) == f"the engine could not load the checkpoint {checkpoint}: {why}"


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

    from wav2lip_core.model.checkpoint import load_checkpoint, save_untrained_checkpoint

    a = load_checkpoint(save_untrained_checkpoint(tmp_path / "a.pth", seed=0)).state_dict()
    b = load_checkpoint(save_untrained_checkpoint(tmp_path / "b.pth", seed=0)).state_dict()
    c = load_checkpoint(save_untrained_checkpoint(tmp_path / "c.pth", seed=1)).state_dict()
    key = "audio_encoder.0.conv_block.0.weight"
    assert torch.equal(a[key], b[key]) and not torch.equal(a[key], c[key])


def test_staged_addon_is_self_contained(tmp_path, monkeypatch):
    """The built add-on: the add-on's files, the core's protocol.py beside them (wire.py loads
    that copy), no caches or dotfiles."""
    src = tmp_path / "src"
    shutil.copytree(installer.ADDON_DIR, src, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    _touch(src / "__pycache__" / "operators.cpython-311.pyc")
    _touch(src / ".DS_Store")
    monkeypatch.setattr(installer_addon, "ADDON_DIR", src)
    staged = install.stage_addon(tmp_path / "built" / installer.ADDON_ID)
    copied = list(installer_addon.ADDON_FILES)
    want = sorted(p.name for p in installer.ADDON_DIR.iterdir() if p.name not in ("__pycache__", ".DS_Store", *copied))
    assert sorted(p.name for p in staged.iterdir()) == sorted(want + copied)
    assert (staged / "protocol.py").read_bytes() == (ROOT / "wav2lip_core" / "protocol.py").read_bytes()
    spec = importlib.util.spec_from_file_location("staged_wire", staged / "wire.py")
    wire = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(wire)
    assert Path(wire.protocol.__file__) == staged / "protocol.py"


def test_addon_hash_follows_the_files_only(tmp_path):
    staged = install.stage_addon(tmp_path / "a" / installer.ADDON_ID)
    digest = installer_addon.addon_hash(staged)
    _touch(staged / "__pycache__" / "x.pyc").write_text("cache")
    (staged / installer_addon.STAMP_NAME).write_text(digest)
    assert installer_addon.addon_hash(staged) == digest  # caches and the stamp do not count
    (staged / "panel.py").write_text((staged / "panel.py").read_text() + "\n# edited\n")
    assert installer_addon.addon_hash(staged) != digest
    (staged / "panel.py").rename(staged / "panel2.py")  # a renamed file is a change too
    edited = installer_addon.addon_hash(staged)
    assert edited not in (digest, installer_addon.addon_hash(install.stage_addon(tmp_path / "b" / installer.ADDON_ID)))


def test_detector_files(tmp_path, blazeface_dir):
    assert weights.detector_files(blazeface_dir / "blazeface.pth") == (blazeface_dir / "blazeface.pth", blazeface_dir / "anchors.npy")
    assert weights.detector_files(blazeface_dir / "blazefaceback.pth") == (blazeface_dir / "blazefaceback.pth",
                                                                           blazeface_dir / "anchorsback.npy")
    assert weights.detector_files(blazeface_dir) == (blazeface_dir / "blazeface.pth", blazeface_dir / "anchors.npy")
    s3fd = _touch(tmp_path / "s3fd-619a316812.pth")
    assert weights.detector_files(s3fd) == (s3fd, None)  # S3FD needs no anchors
    with pytest.raises(install.InstallError, match="BlazeFace anchors not found: .*anchors.npy is missing"):
        weights.detector_files(_touch(tmp_path / "x" / "blazeface.pth"))
    with pytest.raises(install.InstallError, match="no face detector weights in"):
        weights.detector_files(_touch(tmp_path / "empty" / "notes.txt").parent)


def test_one_licence_for_the_code():
    """pyproject.toml and the add-on's manifest name the same licence (the add-on's must be
    GPL-compatible for Blender)."""
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["license"]
    manifest = tomllib.loads((ROOT / "blender_addon" / "blender_manifest.toml").read_text())["license"]
    assert manifest == ["SPDX:GPL-3.0-or-later"]
    assert project == manifest[0].removeprefix("SPDX:")


def test_staged_source_holds_what_pyproject_builds_from(tmp_path, monkeypatch):
    """The clean copy pip builds a user's engine from: every file and package pyproject.toml
    names, the package data, and no caches or earlier builds."""
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    named = {project["project"]["readme"], *project["project"]["license-files"], "pyproject.toml",
             *(p.split(".")[0] for p in project["tool"]["setuptools"]["packages"])}
    assert named == set(pip.BUILD_SOURCES)
    clone = tmp_path / "clone"  # a user's clone with caches and an old build in it
    shutil.copytree(ROOT / "wav2lip_core", clone / "wav2lip_core", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(ROOT / name, clone / name)
    _touch(clone / "wav2lip_core" / "__pycache__" / "stale.cpython-311.pyc")
    _touch(clone / "build" / "lib" / "wav2lip_core" / "removed_module.py")
    monkeypatch.setattr(installer_engine, "ROOT", clone)
    staged = installer_engine.stage_source(tmp_path / "src")
    assert sorted(p.name for p in staged.iterdir()) == sorted(named)
    files = {p.relative_to(staged).as_posix() for p in (staged / "wav2lip_core").rglob("*") if p.is_file()}
    assert "wav2lip_core/__init__.py" in files and any(f.startswith("wav2lip_core/media/data/") and f.endswith(".npy") for f in files)
    assert not [f for f in files if "__pycache__" in f or f.endswith(".pyc")]


def test_project_metadata_builds_without_deprecation_warnings(tmp_path):
    """What pip runs at every install (the PEP 517 metadata hook, with setuptools as the build
    backend) prints no deprecation banner, and the wheel's metadata carries the SPDX licence and
    the licence file."""
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(ROOT / name, tmp_path / name)
    shutil.copytree(ROOT / "wav2lip_core", tmp_path / "wav2lip_core", ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "meta").mkdir()
    code = ("import sys, setuptools.build_meta as b; "
            "print('DISTINFO', b.prepare_metadata_for_build_wheel(sys.argv[1]))")
    res = subprocess.run([sys.executable, "-W", "default", "-c", code, str(tmp_path / "meta")], cwd=tmp_path,
                         capture_output=True, text=True, timeout=300)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out
    assert "Deprecat" not in out and "project.license" not in out, out
    dist_info = next(ln.split()[1] for ln in res.stdout.splitlines() if ln.startswith("DISTINFO "))
    metadata = (tmp_path / "meta" / dist_info / "METADATA").read_text()
    assert "License-Expression: GPL-3.0-or-later" in metadata.splitlines(), metadata[:2000]
    assert "License-File: LICENSE" in metadata.splitlines(), metadata[:2000]
