"""`python3 install.py --package [--out DIR]`: the release zip's layout (one top folder holding the
add-on, its manifest, and engine_src/ to build the engine from), its version, that re-running
replaces only its own zip with the same bytes, and that the engine's wheel builds from the zip
alone. Blender's own checks of the zip: tests/addon/test_extension_install.py and
tests/blender_program/test_zip_install_blender.py."""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

from wav2lip_core.protocol import ADDON_FILES

ROOT = Path(__file__).resolve().parents[1]
TOP = "wav2lip_lipsync/"


def package(out: Path, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "install.py"), "--package", "--out", str(out)],
                          capture_output=True, text=True, cwd=cwd, timeout=120)


def project_version() -> str:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]


def checkout_files(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*")
            if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"}


@pytest.fixture(scope="module")
def release_zip(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    res = package(out, cwd=tmp_path_factory.mktemp("cwd"))
    assert res.returncode == 0, res.stdout + res.stderr
    path = Path(res.stdout.splitlines()[-1])
    assert path == out / f"wav2lip_lipsync-{project_version()}.zip" and path.is_file()
    return path


def test_zip_holds_one_folder_with_the_addon_its_manifest_and_the_engine_sources(release_zip):
    z = zipfile.ZipFile(release_zip)
    names = z.namelist()
    assert names == sorted(names) and all(n.startswith(TOP) for n in names)
    files = {n[len(TOP):] for n in names if not n.endswith("/")}
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc") or "/." in n]
    # The add-on as install.py installs it: its own files plus the core's files it loads by path.
    copied = set(ADDON_FILES)
    addon = checkout_files(ROOT / "blender_addon") - copied  # (ignored copies a checkout run may leave)
    assert {n for n in files if not n.startswith("engine_src/")} == addon | copied
    for name in copied:
        assert z.read(TOP + name) == (ROOT / "wav2lip_core" / name).read_bytes()
    assert z.read(TOP + "blender_manifest.toml") == (ROOT / "blender_addon" / "blender_manifest.toml").read_bytes()
    # What the engine's wheel is built from, the core's data files included.
    core = {"engine_src/wav2lip_core/" + n for n in checkout_files(ROOT / "wav2lip_core")}
    assert {n for n in files if n.startswith("engine_src/")} == {
        "engine_src/pyproject.toml", "engine_src/README.md", "engine_src/LICENSE"} | core
    assert "engine_src/wav2lip_core/media/data/mel_basis.npy" in files
    # Directory entries: Blender's legacy Install replaces an installed add-on by its root entry.
    assert TOP in names and TOP + "engine_src/" in names


def test_versions_agree_and_the_manifest_asks_for_network_and_files(release_zip):
    manifest = tomllib.loads(zipfile.ZipFile(release_zip).read(TOP + "blender_manifest.toml").decode())
    assert manifest["id"] == "wav2lip_lipsync"
    assert manifest["version"] == project_version()
    tree = ast.parse((ROOT / "blender_addon" / "__init__.py").read_text())
    bl_info = next(ast.literal_eval(n.value) for n in tree.body
                   if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", "") == "bl_info")
    assert ".".join(map(str, bl_info["version"])) == project_version()
    assert bl_info["blender"] == (3, 4, 0)
    assert manifest["permissions"]["network"] and manifest["permissions"]["files"]


def test_rerun_replaces_only_its_zip_with_the_same_bytes(release_zip, tmp_path):
    out = tmp_path / "dist"
    out.mkdir()
    mine = out / "notes.txt"
    mine.write_text("a user's file")
    older = out / "wav2lip_lipsync-0.0.1.zip"
    older.write_bytes(b"an older release")
    for _ in range(2):
        res = package(out, cwd=tmp_path)
        assert res.returncode == 0, res.stderr
        assert (out / release_zip.name).read_bytes() == release_zip.read_bytes()  # same files, same bytes
    assert sorted(p.name for p in out.iterdir()) == sorted([mine.name, older.name, release_zip.name])
    assert mine.read_text() == "a user's file" and older.read_bytes() == b"an older release"


def test_default_out_is_dist_in_the_clone(tmp_path):
    """No --out: dist/ beside install.py, whatever the working folder (only checked, not written:
    the clone's dist/ may hold a developer's zip)."""
    sys.path.insert(0, str(ROOT))
    try:
        import release
    finally:
        sys.path.remove(str(ROOT))
    calls = []
    real = release.package
    release.package = lambda out: calls.append(out) or real(tmp_path)
    try:
        assert release.main(None) == 0
    finally:
        release.package = real
    assert calls == [ROOT / "dist"]


def test_out_that_is_a_file_is_one_line_error(tmp_path):
    blocker = tmp_path / "taken"
    blocker.write_text("x")
    res = package(blocker, cwd=tmp_path)
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert res.stderr.startswith("error: ") and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert blocker.read_text() == "x"


def test_engine_wheel_builds_from_the_zip_alone(release_zip, tmp_path):
    """The sources in engine_src/ are all setuptools needs (readme, licence, packages, data)."""
    pytest.importorskip("setuptools")
    zipfile.ZipFile(release_zip).extractall(tmp_path / "addon")
    src = tmp_path / "addon" / "wav2lip_lipsync" / "engine_src"
    res = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                          "--disable-pip-version-check", "-w", str(tmp_path / "wheels"), str(src)],
                         capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    (wheel,) = (tmp_path / "wheels").glob("wav2lip_blender-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"wav2lip_core/jobs/cli.py", "wav2lip_core/protocol.py", "wav2lip_core/media/data/mel_basis.npy"} <= names
    assert wheel.name.startswith(f"wav2lip_blender-{project_version()}-")
