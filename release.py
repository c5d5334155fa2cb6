"""The release zip: `python3 install.py --package [--out DIR]` writes DIR/wav2lip_lipsync-<version>.zip.

One zip for every Blender from 3.4: Edit > Preferences > Add-ons > Install (3.4-4.1, a legacy
add-on: bl_info) or Install from Disk (4.2+, an extension: blender_manifest.toml). Its layout:

    wav2lip_lipsync/                  the add-on, as install.py stages it (installer/addon.py)
        blender_manifest.toml, __init__.py, headless.py, protocol.py, serve_client.py, ...
        engine_src/                   what the engine's wheel is built from (BUILD_SOURCES):
            pyproject.toml, README.md, LICENSE, wav2lip_core/
                                      `pip install <add-on folder>/engine_src[extras]`

One top folder: Blender's legacy Install removes an installed folder of that name before it
extracts (overwrite), which it only does for entries at the zip's root; its extension code
finds a manifest one folder down and installs that folder's contents.

Standard library only; the zip's bytes depend only on the files (sorted entries, a fixed date).
"""

from __future__ import annotations

import re
import stat
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import BinaryIO

from installer import ADDON_DIR, ADDON_ID, ROOT, addon_module
from installer.addon import stage_addon
from installer.engine import stage_source

base = addon_module("setup_base")
files = addon_module("wire").files  # the one atomic file write (wav2lip_core/files.py)
MANIFEST = ADDON_DIR / "blender_manifest.toml"
ENGINE_SRC = "engine_src"  # inside the add-on folder: what Set Up Engine builds the engine from
# A zip's earliest date; what a reproducible build uses (the files' own dates say nothing).
ZIP_DATE = (1980, 1, 1, 0, 0, 0)


class PackageError(base.SetupError):
    """The zip cannot be made; the message says what to fix."""


def _version_in(path: Path, pattern: str) -> str:
    m = re.search(pattern, path.read_text(), re.MULTILINE)
    if not m:
        raise PackageError(f"no version found in {path}")
    return m.group(1)


def version() -> str:
    """The release's version: pyproject.toml's, which the manifest must repeat."""
    project = _version_in(ROOT / "pyproject.toml", r'^version\s*=\s*"([^"]+)"')
    manifest = _version_in(MANIFEST, r'^version\s*=\s*"([^"]+)"')
    if project != manifest:
        raise PackageError(f"version {project} in pyproject.toml but {manifest} in {MANIFEST}: make them equal")
    return project


def zip_name(ver: str | None = None) -> str:
    return f"{ADDON_ID}-{ver or version()}.zip"


def stage(dest: Path) -> Path:
    """The zip's top folder in `dest` (must not exist): the add-on with engine_src/ inside."""
    stage_addon(dest)
    stage_source(dest / ENGINE_SRC)
    return dest


def _entry(name: str, mode: int) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=ZIP_DATE)
    info.create_system = 3  # Unix: the mode bits below are read back on extraction by unzip
    info.external_attr = mode << 16
    return info


def write_zip(top: Path, target: Path) -> None:
    """`top` (a folder) into `target` as one folder of that name. Written whole or not at all
    (files.write_atomic), so an interrupted run leaves the previous zip (or none), never half a zip; with
    the user's normal permissions (a release zip is not private)."""

    def write(f: BinaryIO) -> None:
        with zipfile.ZipFile(f, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as z:
            # Directory entries too: the legacy Install only recognises (and replaces) an
            # installed add-on by an entry at the zip's root.
            for path in sorted([top, *top.rglob("*")], key=lambda p: p.relative_to(top.parent).as_posix()):
                rel = path.relative_to(top.parent).as_posix()
                if path.is_dir():
                    z.writestr(_entry(rel + "/", stat.S_IFDIR | 0o755), b"")
                else:
                    z.writestr(_entry(rel, stat.S_IFREG | 0o644), path.read_bytes(), zipfile.ZIP_DEFLATED)

    files.write_atomic(target, write)


def package(out_dir: Path) -> Path:
    """Write out_dir/wav2lip_lipsync-<version>.zip (replacing only that file); its path."""
    target = out_dir.expanduser().resolve() / zip_name()
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        write_zip(stage(Path(tmp) / ADDON_ID), target)
    return target


def main(out_dir: Path | None) -> int:
    """install.py --package [--out DIR]: the zip's path on the last line."""
    try:
        path = package(out_dir if out_dir is not None else ROOT / "dist")
    except base.SetupError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        where = f"{e.filename}: " if e.filename else ""
        print(f"error: {where}{e.strerror or e}; check that folder (its permissions, free space) and re-run",
              file=sys.stderr)
        return 1
    print(f"release zip ({path.stat().st_size / 1e6:.2f} MB): install it in Blender with Edit > Preferences > "
          "Add-ons > Install (4.2+: Install from Disk)")
    print(path)
    return 0
