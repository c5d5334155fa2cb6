"""The add-on as it is installed (blender_addon/ plus the core's files it loads by path, no caches), and its
install into a Blender program: an extension from 4.2 (Blender's own builder and installer), a
legacy add-on folder below; a stamp of what was installed makes a re-run with the same files a
no-op.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from . import ADDON_DIR, ADDON_ID, ROOT, addon_module
from .blender import BlenderInfo, vstr

base = addon_module("setup_base")
# The core's standard-library files the add-on loads by path (blender_addon/wire.py), listed once.
ADDON_FILES = tuple(addon_module("wire").protocol.ADDON_FILES)

# Written into the installed add-on: the hash of the files it was built from. Not a dotfile:
# Blender's extension builder leaves those out.
STAMP_NAME = "install_stamp.txt"
_SKIP = shutil.ignore_patterns("__pycache__", "*.pyc", ".*", "pyrightconfig*.json", STAMP_NAME)


def stage_addon(dest: Path) -> Path:
    """The add-on as it is installed, in `dest` (created; must not exist): blender_addon/ plus the
    core's files it loads by path (ADDON_FILES, see blender_addon/wire.py), without caches."""
    shutil.copytree(ADDON_DIR, dest, ignore=_SKIP)
    for name in ADDON_FILES:
        shutil.copy2(ROOT / "wav2lip_core" / name, dest / name)
    return dest


def addon_hash(folder: Path) -> str:
    """What an add-on folder holds (names and contents; caches and the stamp left out)."""
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder)
        if p.is_dir() or any(_SKIP(str(p.parent), [part]) for part in rel.parts):
            continue
        h.update(rel.as_posix().encode() + b"\0")
        h.update(p.read_bytes())
        h.update(b"\0")
    return h.hexdigest()


def installed_stamp(info: BlenderInfo) -> str | None:
    try:
        return (info.addon_dir / STAMP_NAME).read_text().strip()
    except OSError:
        return None


# The user's own preferences are loaded (no --factory-startup), so saving them keeps everything
# the user set and adds the enabled add-on; this is what Blender does when the user ticks it.
ENABLE = (
    "import addon_utils, bpy\n"
    f"name = {ADDON_ID!r}\n"
    "mod = addon_utils.enable(name, default_set=True)\n"
    "if mod is None or name not in bpy.context.preferences.addons:\n"
    "    raise RuntimeError('the add-on did not enable (see the traceback above)')\n"
    "bpy.ops.wm.save_userpref()\n"
)


def install_addon(info: BlenderInfo, staged: Path) -> str:
    """Install the staged add-on (see stage_addon) into this Blender and enable it, unless the
    same files are installed already. Returns "installed", "updated" or "up to date"."""
    digest = addon_hash(staged)
    before = installed_stamp(info)
    if before == digest:
        return "up to date"
    if info.extension:
        _install_extension(info, staged, digest)
    else:
        _install_legacy(info, staged, digest)
    return "updated" if before else "installed"


def _failure(what: str, res: subprocess.CompletedProcess) -> Exception:
    return base.SetupError(f"{what} (exit {res.returncode}): {base.last_line(res.stderr) or base.last_line(res.stdout)}")


def _install_legacy(info: BlenderInfo, staged: Path, digest: str) -> None:
    """Blender < 4.2: the add-on folder into the user's scripts/addons, then enabled."""
    target = info.addon_dir
    target.parent.mkdir(parents=True, exist_ok=True)
    new = target.with_name(f".{ADDON_ID}.new-{os.getpid()}")
    old = target.with_name(f".{ADDON_ID}.old-{os.getpid()}")
    shutil.rmtree(new, ignore_errors=True)
    shutil.copytree(staged, new, ignore=_SKIP)
    # Swap whole folders so Blender never sees a half-copied add-on.
    if target.exists():
        target.rename(old)
    new.rename(target)
    shutil.rmtree(old, ignore_errors=True)
    res = base.run([info.exe, "-b", "--python-exit-code", "1", "--python-expr", ENABLE], capture_output=True, text=True, timeout=300)
    if res.returncode != 0:
        raise _failure(f"Blender {vstr(info.version)} could not enable the add-on", res)
    # Last, so an install that failed half-way is redone by the next run.
    (target / STAMP_NAME).write_text(digest + "\n")


def _install_extension(info: BlenderInfo, staged: Path, digest: str) -> None:
    """Blender 4.2+: built into a zip by Blender's own builder, installed and enabled by
    Blender's extension command. Not under --factory-startup: with --enable the command saves
    the preferences, and those would be the factory ones."""
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / ADDON_ID
        shutil.copytree(staged, src, ignore=_SKIP)
        (src / STAMP_NAME).write_text(digest + "\n")
        out = Path(tmp) / "zip"
        out.mkdir()
        built = base.run([info.exe, "--factory-startup", "--command", "extension", "build", "--source-dir", src,
                     "--output-dir", out], capture_output=True, text=True, timeout=300)
        zips = list(out.glob("*.zip"))
        if built.returncode != 0 or not zips:
            raise _failure("Blender could not build the add-on", built)
        inst = base.run([info.exe, "--command", "extension", "install-file", "--repo", "user_default", "--enable", zips[0]],
                   capture_output=True, text=True, timeout=300)
        if inst.returncode != 0:
            raise _failure("Blender could not install the add-on", inst)
    if installed_stamp(info) != digest:
        raise base.SetupError(f"Blender reported the add-on installed, but {info.addon_dir} does not hold it; "
                           "is the user_default repository moved in Preferences > Get Extensions?")
