"""Finding a Blender program (--blender, PATH, the usual install folders) and asking it where its
user folders are, so that its own rules apply (BLENDER_USER_* variables, portable installs).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from . import ADDON_ID, addon_module

base = addon_module("setup_base")

MIN_BLENDER = (3, 4, 0)  # older: no add-on (the bpy module runs the headless path)
EXTENSIONS_FROM = (4, 2, 0)  # an extension from here, a legacy add-on (bl_info) below


def blender_candidates(platform: str | None = None) -> list[Path]:
    """The usual install folders, newest-looking first (`platform`: sys.platform's value)."""
    platform = platform or sys.platform
    home = Path.home()
    globs: list[tuple[Path, str]] = []
    if platform == "win32":
        program_files = [b for b in (os.environ.get("ProgramFiles", r"C:\Program Files"), os.environ.get("ProgramFiles(x86)", "")) if b]
        for base in program_files:
            globs.append((Path(base) / "Blender Foundation", "Blender*/blender.exe"))
        # Steam installs itself under "Program Files (x86)" by default.
        for base in reversed(program_files):
            globs.append((Path(base) / "Steam" / "steamapps" / "common", "Blender/blender.exe"))
    elif platform == "darwin":
        globs += [(Path("/Applications"), "Blender*.app/Contents/MacOS/Blender"),
                  (home / "Applications", "Blender*.app/Contents/MacOS/Blender")]
    else:
        globs += [(Path("/opt"), "blender*/blender"), (home, "blender*/blender"), (home / "Applications", "blender*/blender"),
                  (Path("/usr/local"), "blender*/blender"), (Path("/snap/bin"), "blender"),
                  (Path("/var/lib/flatpak/exports/bin"), "org.blender.Blender")]
    found: list[Path] = []
    for base, pattern in globs:
        if base.is_dir():
            found += sorted(base.glob(pattern), reverse=True)
    return [p for p in found if p.is_file()]


def blender_version(exe: Path) -> tuple[int, int, int] | None:
    try:
        out = base.run([exe, "--factory-startup", "--version"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.search(r"Blender (\d+)\.(\d+)(?:\.(\d+))?", out)
    return (int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)) if m else None


def find_blender(explicit: str | None = None) -> tuple[Path, tuple[int, int, int]] | None:
    """--blender PATH, else `blender` on PATH, else the usual install folders."""
    if explicit:
        exe = Path(explicit).expanduser()
        if exe.is_dir():
            exe = next((p for p in (exe / "blender", exe / "blender.exe", exe / "Contents/MacOS/Blender") if p.is_file()), exe)
        version = blender_version(exe) if exe.is_file() else None
        if version is None:
            raise base.SetupError(f"--blender {explicit} is not a Blender executable that runs; give the path of 'blender' (or blender.exe)")
        return exe, version
    on_path = shutil.which("blender")
    for cand in ([Path(on_path)] if on_path else []) + blender_candidates():
        version = blender_version(cand)
        if version is not None:
            return cand, version
    return None


def vstr(version: tuple[int, ...]) -> str:
    return ".".join(map(str, version))


@dataclass(frozen=True)
class BlenderInfo:
    """A Blender program and the user folders it uses, as it reports them itself (so its own
    rules apply: BLENDER_USER_* variables, XDG_CONFIG_HOME, portable installs)."""

    exe: Path
    version: tuple[int, int, int]
    config_dir: Path  # bpy.utils.user_resource('CONFIG'): userpref.blend and our JSON
    addon_dir: Path  # where the add-on lives once installed

    @property
    def extension(self) -> bool:
        return self.version >= EXTENSIONS_FROM


# --factory-startup: only reads paths, and a factory-startup Blender never saves preferences.
PROBE = (
    "import bpy, json\n"
    "u = bpy.utils.user_resource\n"
    "ext = u('EXTENSIONS', path='user_default') if bpy.app.version >= (4, 2, 0) else ''\n"
    "print('WAV2LIP-PROBE ' + json.dumps({'config': u('CONFIG'), 'addons': u('SCRIPTS', path='addons'), 'extensions': ext}))\n"
)


def probe_blender(exe: Path, version: tuple[int, int, int]) -> BlenderInfo:
    """Ask Blender where its user folders are; SetupError when it cannot run a script."""
    try:
        res = base.run([exe, "-b", "--factory-startup", "--python-exit-code", "1", "--python-expr", PROBE],
                  capture_output=True, text=True, timeout=180)
    except (OSError, subprocess.SubprocessError) as e:
        raise base.SetupError(f"Blender {vstr(version)} at {exe} does not run ({e})") from e
    line = next((ln for ln in res.stdout.splitlines() if ln.startswith("WAV2LIP-PROBE ")), None)
    if res.returncode != 0 or line is None:
        raise base.SetupError(f"Blender {vstr(version)} at {exe} cannot run a Python script in background mode "
                           f"(exit {res.returncode}: {base.last_line(res.stderr or res.stdout)})")
    paths = json.loads(line.split(" ", 1)[1])
    ext = version >= EXTENSIONS_FROM
    return BlenderInfo(exe, version, Path(paths["config"]),
                       Path(paths["extensions"] if ext else paths["addons"]) / ADDON_ID)


def usable_blender(explicit: str | None) -> tuple[BlenderInfo | None, str]:
    """(the Blender to install into, or None with the one line that says why not)."""
    found = find_blender(explicit)
    if found is None:
        on_path = shutil.which("blender")
        if on_path:
            return None, f"Blender: {on_path} does not run (`blender --version` fails)"
        return None, "Blender: not found (pass --blender PATH to install the add-on)"
    exe, version = found
    if version < MIN_BLENDER:
        return None, (f"Blender {vstr(version)} at {exe} is too old for the add-on (it needs {vstr(MIN_BLENDER)} or newer): "
                      "install a newer Blender (blender.org) and re-run, or pass --blender PATH")
    try:
        return probe_blender(exe, version), ""
    except base.SetupError as e:
        return None, f"{e}: the add-on is not installed there"
