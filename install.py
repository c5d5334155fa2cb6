#!/usr/bin/env python3
"""Set up Wav2Lip for Blender on this machine: one command, safe to re-run.

    python3 install.py                       # engine env + core, add-on into Blender if found
    python3 install.py --checkpoint wav2lip_gan.pth   # also verify and record the weights
    python3 install.py --detector-weights blazeface.pth  # record face detector weights (anchors beside)
    python3 install.py --check               # status table; exit 1 if something needed is missing
    python3 install.py --demo                # set up, then lip-sync the bundled demo headless

Standard library only (Python >= 3.10). It never downloads model weights: when one is
missing it says which file, where to get it, and where to put it.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import venv
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parent
ADDON_DIR = ROOT / "blender_addon"
ADDON_ID = "wav2lip_lipsync"  # blender_manifest.toml `id`


def _load_protocol() -> ModuleType:
    """The core's protocol.py (standard library only), without importing the core package."""
    spec = importlib.util.spec_from_file_location("wav2lip_install_protocol", ROOT / "wav2lip_core" / "protocol.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


protocol = _load_protocol()
# The JSON the add-on (in Blender's user config folder) and the core (in the engine
# environment) read what install.py recorded from, and its keys: defined in protocol.py.
CONFIG_NAME = protocol.CONFIG_NAME
CONFIG_PYTHON = protocol.CONFIG_PYTHON
CONFIG_CHECKPOINT = protocol.CONFIG_CHECKPOINT
CONFIG_DETECTOR_WEIGHTS = protocol.CONFIG_DETECTOR_WEIGHTS
MIN_BLENDER = (3, 4, 0)  # older: no add-on (the bpy module runs the headless path)
# The one Python the pinned bpy module (pyproject's `bpy` extra, bpy 5.0) exists for: without a
# Blender program, headless runs and --demo need an engine on this version.
BPY_PYTHON = (3, 11)
EXTENSIONS_FROM = (4, 2, 0)  # an extension from here, a legacy add-on (bl_info) below
# Written into the installed add-on: the hash of the files it was built from. Not a dotfile:
# Blender's extension builder leaves those out.
STAMP_NAME = "install_stamp.txt"


def weights_help(command: str = "python3 install.py") -> str:
    return ("get wav2lip_gan.pth (or wav2lip.pth) from the Wav2Lip authors (github.com/Rudrabha/Wav2Lip, "
            f"'Getting the weights'; research/non-commercial licence) and run: {command} --checkpoint PATH")


class InstallError(Exception):
    """A step failed; the message says what to do."""


def say(msg: str = "") -> None:
    print(msg, flush=True)


# --- engine environment ---------------------------------------------------------------------

def default_venv() -> Path:
    if os.environ.get("WAV2LIP_ENGINE_VENV"):
        return Path(os.environ["WAV2LIP_ENGINE_VENV"]).expanduser()
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    else:
        base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return base / "wav2lip-blender" / "engine"


def venv_python(env: Path) -> Path:
    return env / ("Scripts/python.exe" if sys.platform == "win32" else "bin/python")


def install_command(env: Path) -> str:
    """`python3 install.py`, with the --venv that reaches `env` when it is not the default: a
    suggested command must act on the engine the user set up, not on the default one."""
    if env == default_venv().expanduser().resolve():
        return "python3 install.py"
    return f"python3 install.py --venv {shlex.quote(str(env))}"


def engine_python_version(env: Path) -> tuple[int, int]:
    """The Python version the engine in `env` runs: an existing one's own, else this one's
    (a new environment is made with the Python running install.py)."""
    py = venv_python(env)
    if py.exists():
        try:
            res = run([py, "-c", "import sys; print(*sys.version_info[:2])"], capture_output=True, text=True, timeout=60)
            major, minor = map(int, res.stdout.split())
            return major, minor
        except (OSError, subprocess.SubprocessError, ValueError):
            pass  # a broken environment: ensure_engine says so
    return sys.version_info[0], sys.version_info[1]


def torch_pin(pyproject: Path = ROOT / "pyproject.toml") -> str:
    """The torch requirement from pyproject.toml, the one place it is pinned."""
    m = re.search(r'"(torch==[^"]+)"', pyproject.read_text())
    if not m:
        raise InstallError(f"no torch pin found in {pyproject}")
    return m.group(1)


def source_stamp(extras: str) -> str:
    """What the installed core was built from: re-running with the same sources skips pip."""
    h = hashlib.sha256(extras.encode())
    for p in sorted([ROOT / "pyproject.toml", *(ROOT / "wav2lip_core").glob("*.py")]):
        h.update(p.name.encode())
        h.update(p.read_bytes())
    return h.hexdigest()


def run(cmd: list, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], **kw)


FIND_SPECS = (
    "import importlib.util as u, sys\n"
    "s = u.find_spec('wav2lip_core')\n"
    "print(s.origin if s else '')\n"
    "print(all(u.find_spec(m) is not None for m in sys.argv[1:]))\n"
)


def runs_this_checkout(py: Path, modules: list[str]) -> bool:
    """Whether `py` imports wav2lip_core from this folder and finds `modules` (nothing imported)."""
    # cwd elsewhere: `python -c` puts the working folder first on sys.path.
    res = run([py, "-c", FIND_SPECS, *modules], capture_output=True, text=True, cwd=tempfile.gettempdir())
    lines = res.stdout.splitlines()
    if res.returncode != 0 or len(lines) < 2 or not lines[0]:
        return False
    return Path(lines[0]).resolve() == (ROOT / "wav2lip_core" / "__init__.py").resolve() and lines[1] == "True"


# What the core's wheel is built from: pyproject.toml's readme, license-files and packages.
BUILD_SOURCES = ("pyproject.toml", "README.md", "LICENSE", "wav2lip_core")


def stage_source(dest: Path) -> Path:
    """A clean copy of what the wheel is built from, in `dest` (created). pip builds in the folder
    it is given, and setuptools' build/ there keeps modules deleted since the last build: they
    would be installed again. The clone stays as it is (no build/, no egg-info)."""
    dest.mkdir(parents=True)
    for name in BUILD_SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, dest / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(ROOT / name, dest / name)
    return dest


# Optional parts a user may add to the engine (pyproject's extras) and a module each installs.
OPTIONAL_EXTRAS = {"int8": "nncf", "landmarks": "dlib", "enhance": "spandrel", "ray": "ray"}


def ensure_engine(env: Path, *, torch_index_url: str | None, with_bpy: bool, dev: bool,
                  optional: tuple[str, ...] = ()) -> Path:
    py = venv_python(env)
    if not py.exists():
        say(f"creating the engine environment in {env}")
        venv.EnvBuilder(with_pip=True, clear=False).create(env)
    optional = tuple(x for x in OPTIONAL_EXTRAS if x in optional)  # one order, whatever was asked
    extras = ",".join((*(["bpy"] if with_bpy else []), *optional, *(["test"] if dev else [])))
    stamp_file = env / "wav2lip-installed.txt"
    stamp = source_stamp(extras + "|" + (torch_index_url or ""))
    if stamp_file.exists() and stamp_file.read_text().strip() == stamp:
        say(f"engine environment is up to date: {env}")
        return py
    needed = ["torch", "av", "cv2", *(["bpy"] if with_bpy else []), *(OPTIONAL_EXTRAS[x] for x in optional),
              *(["pytest"] if dev else [])]
    if not torch_index_url and runs_this_checkout(py, needed):
        # A contributor's environment (an editable install of this folder, e.g. the dev .venv):
        # it already runs these sources, and pip would replace the editable install with a copy.
        say(f"engine environment runs this checkout (editable install), nothing to install: {env}")
        return py
    pip = [py, "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    if run([py, "-m", "pip", "--version"], capture_output=True).returncode != 0:
        raise InstallError(f"pip does not run in {env}; delete that folder and run install.py again")
    if torch_index_url:
        say(f"installing {torch_pin()} from {torch_index_url}")
        if run([*pip, torch_pin(), "--index-url", torch_index_url]).returncode != 0:
            raise InstallError(f"could not install {torch_pin()} from {torch_index_url}; check the URL (e.g. a CUDA wheel index)")
    say(f"installing the core and its dependencies into {env} (torch pinned in pyproject.toml)")
    with tempfile.TemporaryDirectory() as tmp:
        # Editable for contributors (--dev) so tests see their edits; for users a plain copy,
        # built from a clean copy of the sources (see stage_source).
        src = ROOT if dev else stage_source(Path(tmp) / "wav2lip-blender")
        target = str(src) + (f"[{extras}]" if extras else "")
        if run([*pip, *(["-e"] if dev else []), target]).returncode != 0:
            raise InstallError("pip could not install the core (see above); check the network to PyPI and re-run")
    stamp_file.write_text(stamp + "\n")
    return py


# --- Blender --------------------------------------------------------------------------------

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
        out = run([exe, "--factory-startup", "--version"], capture_output=True, text=True, timeout=60).stdout
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
            raise InstallError(f"--blender {explicit} is not a Blender executable that runs; give the path of 'blender' (or blender.exe)")
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
    """Ask Blender where its user folders are; InstallError when it cannot run a script."""
    try:
        res = run([exe, "-b", "--factory-startup", "--python-exit-code", "1", "--python-expr", PROBE],
                  capture_output=True, text=True, timeout=180)
    except (OSError, subprocess.SubprocessError) as e:
        raise InstallError(f"Blender {vstr(version)} at {exe} does not run ({e})") from e
    line = next((ln for ln in res.stdout.splitlines() if ln.startswith("WAV2LIP-PROBE ")), None)
    if res.returncode != 0 or line is None:
        raise InstallError(f"Blender {vstr(version)} at {exe} cannot run a Python script in background mode "
                           f"(exit {res.returncode}: {last_line(res.stderr or res.stdout)})")
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
    except InstallError as e:
        return None, f"{e}: the add-on is not installed there"


def record_config(config_dir: Path, **values: str) -> Path:
    """Merge `values` into the JSON the add-on reads for its empty preferences. Atomic, and
    unchanged values leave the file untouched (re-running install.py changes nothing)."""
    path = config_dir / CONFIG_NAME
    try:
        current = json.loads(path.read_text()) if path.exists() else {}
    except (OSError, ValueError):
        current = {}
    merged = {**current, **{k: v for k, v in values.items() if v}}
    if merged == current and path.exists():
        return path
    config_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=config_dir, prefix=".wav2lip", suffix=".json")
    with os.fdopen(fd, "w") as f:
        json.dump(merged, f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)
    return path


def read_config(config_dir: Path) -> dict:
    try:
        return json.loads((config_dir / CONFIG_NAME).read_text())
    except (OSError, ValueError):
        return {}


# --- the add-on -----------------------------------------------------------------------------

_SKIP = shutil.ignore_patterns("__pycache__", "*.pyc", ".*", "pyrightconfig*.json", STAMP_NAME)


def stage_addon(dest: Path) -> Path:
    """The add-on as it is installed, in `dest` (created; must not exist): blender_addon/ plus the
    core's protocol.py as protocol.py (blender_addon/wire.py loads it), without caches."""
    shutil.copytree(ADDON_DIR, dest, ignore=_SKIP)
    shutil.copy2(ROOT / "wav2lip_core" / "protocol.py", dest / "protocol.py")
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


def _failure(what: str, res: subprocess.CompletedProcess) -> InstallError:
    return InstallError(f"{what} (exit {res.returncode}): {last_line(res.stderr) or last_line(res.stdout)}")


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
    res = run([info.exe, "-b", "--python-exit-code", "1", "--python-expr", ENABLE], capture_output=True, text=True, timeout=300)
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
        built = run([info.exe, "--factory-startup", "--command", "extension", "build", "--source-dir", src,
                     "--output-dir", out], capture_output=True, text=True, timeout=300)
        zips = list(out.glob("*.zip"))
        if built.returncode != 0 or not zips:
            raise _failure("Blender could not build the add-on", built)
        inst = run([info.exe, "--command", "extension", "install-file", "--repo", "user_default", "--enable", zips[0]],
                   capture_output=True, text=True, timeout=300)
        if inst.returncode != 0:
            raise _failure("Blender could not install the add-on", inst)
    if installed_stamp(info) != digest:
        raise InstallError(f"Blender reported the add-on installed, but {info.addon_dir} does not hold it; "
                           "is the user_default repository moved in Preferences > Get Extensions?")


def last_line(text: str | None) -> str:
    lines = [ln.strip() for ln in (text or "").splitlines() if ln.strip()]
    return lines[-1] if lines else ""


# --- checkpoint and detector weights --------------------------------------------------------

def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


VERIFY = (
    "import sys\n"
    "from wav2lip_core.errors import Wav2LipError\n"
    "from wav2lip_core.model import load_checkpoint, checkpoint_kind\n"
    "try:\n"
    "    load_checkpoint(sys.argv[1])\n"
    "except Wav2LipError as e:\n"
    "    print(e); sys.exit(1)\n"
    "print(checkpoint_kind(sys.argv[1]))\n"
)


def verify_checkpoint(py: Path, path: Path) -> str:
    """Load the checkpoint with the engine (never executing code from it); its kind or an error."""
    if not path.is_file():
        raise InstallError(f"checkpoint not found: {path}; {weights_help()}")
    res = run([py, "-c", VERIFY, path], capture_output=True, text=True)
    if res.returncode != 0:
        # The engine prints our one-line reason on stdout; a crash leaves a traceback (or nothing).
        why = last_line(res.stdout) or last_line(res.stderr) or f"the engine exited with code {res.returncode} and said nothing"
        raise InstallError(f"the engine could not load the checkpoint {path}: {why}")
    return res.stdout.strip()


# Face detector weights by file name, as face-alignment names them (protocol.py): a BlazeFace
# model needs its anchors file beside it. Looked for in this order in a folder.
DETECTOR_FILES = (protocol.BLAZEFACE_FILES["blazeface"], (protocol.S3FD_FILE, None),
                  protocol.BLAZEFACE_FILES["blazeface-back"])

VERIFY_DETECTOR = (
    "import sys\n"
    "try:\n"
    "    import numpy, torch\n"
    "    sd = torch.load(sys.argv[1], map_location='cpu', weights_only=True)\n"
    "    n = sum(1 for v in (sd.values() if isinstance(sd, dict) else ()) if hasattr(v, 'shape'))\n"
    "    if not n:\n"
    "        raise ValueError('it holds no tensors')\n"
    "    shape = numpy.load(sys.argv[2]).shape if len(sys.argv) > 2 else None\n"
    "except Exception as e:\n"
    "    print(f'{type(e).__name__}: {e}'.splitlines()[0]); sys.exit(1)\n"
    "print(n, 'tensors' + (f', anchors {shape[0]}x{shape[1]}' if shape else ''))\n"
)


def detector_files(path: Path) -> tuple[Path, Path | None]:
    """(weights, anchors or None) for --detector-weights: a .pth (BlazeFace's anchors .npy beside
    it), or a folder holding one of face-alignment's files."""
    if path.is_dir():
        for name, anchors in DETECTOR_FILES:
            if (path / name).is_file():
                return detector_files(path / name)
        raise InstallError(f"no face detector weights in {path}: it needs blazeface.pth + anchors.npy "
                           "(or s3fd-619a316812.pth); give the .pth file")
    if not path.is_file():
        raise InstallError(f"detector weights not found: {path}; give blazeface.pth (with anchors.npy beside it) "
                           "or s3fd-619a316812.pth")
    name = path.name.lower()
    if "s3fd" in name:
        return path, None
    anchors = path.with_name("anchorsback.npy" if "back" in name else "anchors.npy")
    if not anchors.is_file():
        raise InstallError(f"BlazeFace anchors not found: {anchors} is missing; put the {anchors.name} that comes "
                           f"with {path.name} beside it")
    return path, anchors


def verify_detector_weights(py: Path, path: Path) -> tuple[Path, str]:
    """(the weights file to record, what the engine found in it)."""
    weights, anchors = detector_files(path)
    res = run([py, "-c", VERIFY_DETECTOR, weights, *([anchors] if anchors else [])], capture_output=True, text=True)
    if res.returncode != 0:
        why = last_line(res.stdout) or last_line(res.stderr) or f"exit code {res.returncode}"
        raise InstallError(f"the engine could not load the detector weights {weights}: {why}; download them again")
    return weights, res.stdout.strip()


def detector_weights_status(py: Path, recorded: str | None, command: str = "python3 install.py") -> tuple[bool, str]:
    """The recorded BlazeFace/S3FD weights, else the ones where face-alignment looks (never
    downloaded here); Haar ships with OpenCV."""
    if recorded:
        try:
            weights, anchors = detector_files(Path(recorded))
        except InstallError as e:
            return False, f"recorded, but {e}"
        return True, f"{weights}" + (f" + {anchors.name}" if anchors else "")
    code = ("import torch.hub, os; d = os.path.join(torch.hub.get_dir(), 'checkpoints'); "
            f"print(d); print(*[f for f in {(protocol.BLAZEFACE_FILES['blazeface'][0], protocol.S3FD_FILE)!r} "
            "if os.path.isfile(os.path.join(d, f))])")
    res = run([py, "-c", code], capture_output=True, text=True)
    if res.returncode != 0:
        return False, "cannot ask the engine (is torch installed?)"
    lines = res.stdout.splitlines() + [""]
    folder, have = lines[0], lines[1].split()
    if have:
        return True, f"{', '.join(have)} in {folder}"
    return False, (f"no BlazeFace/S3FD weights in {folder} (put blazeface.pth + anchors.npy or s3fd-619a316812.pth "
                   f"there, or record them: {command} --detector-weights PATH); the Haar detector bundled "
                   "with OpenCV works meanwhile")


# --- status ---------------------------------------------------------------------------------

def status_rows(env: Path, blender: str | None, checkpoint: str | None) -> list[tuple[str, bool, str, bool]]:
    """(item, ok, detail, needed) for --check."""
    rows: list[tuple[str, bool, str, bool]] = []
    again = install_command(env)
    rows.append(("Python (installer)", sys.version_info >= (3, 10), sys.version.split()[0], True))
    py = venv_python(env)
    rows.append(("engine environment", py.exists(), str(env), True))
    engine_ok = False
    if py.exists():
        code = ("import torch, av, wav2lip_core; from wav2lip_core.device import pick_device; "
                "d = pick_device('auto'); print(torch.__version__, d.type, av.__version__, '.'.join(map(str, av.library_versions['libavcodec'])))")
        res = run([py, "-c", code], capture_output=True, text=True)
        if res.returncode == 0:
            tv, dev, avv, codec = res.stdout.split()[:4]
            engine_ok = True
            rows.append(("torch and device", True, f"torch {tv}, device {dev}", True))
            rows.append(("ffmpeg (PyAV)", True, f"PyAV {avv}, libavcodec {codec}", True))
        else:
            rows.append(("torch and device", False, f"engine does not import: {last_line(res.stderr) or '?'}", True))
            rows.append(("ffmpeg (PyAV)", False, "not checked", True))
    else:
        rows += [("torch and device", False, f"no engine: run {again}", True),
                 ("ffmpeg (PyAV)", False, f"no engine: run {again}", True)]
    try:
        info, why = usable_blender(blender)
    except InstallError as e:
        info, why = None, str(e)
    cfg: dict = {}
    if info:
        rows.append(("Blender", True, f"{vstr(info.version)} at {info.exe}", False))
        with tempfile.TemporaryDirectory() as tmp:
            digest = addon_hash(stage_addon(Path(tmp) / ADDON_ID))
        stamp = installed_stamp(info)
        state = "" if stamp == digest else (f" (outdated: run {again})" if stamp else f" (not installed: run {again})")
        rows.append(("add-on installed", stamp == digest, f"{info.addon_dir}{state}", False))
        cfg = read_config(info.config_dir)
    else:
        rows.append(("Blender", False, f"{why}; headless runs can use the bpy module", False))
        rows.append(("add-on installed", False, "no Blender", False))
    engine_cfg = read_config(env)
    ckpt = checkpoint or cfg.get(CONFIG_CHECKPOINT) or engine_cfg.get(CONFIG_CHECKPOINT)
    if ckpt and Path(ckpt).is_file():
        rows.append(("checkpoint", True, f"{ckpt} ({Path(ckpt).stat().st_size / 1e6:.0f} MB)", True))
    else:
        rows.append(("checkpoint", False, f"{'not found: ' + ckpt if ckpt else 'none recorded'}; {weights_help(again)}", True))
    if engine_ok:
        ok, detail = detector_weights_status(py, cfg.get(CONFIG_DETECTOR_WEIGHTS) or engine_cfg.get(CONFIG_DETECTOR_WEIGHTS), again)
        rows.append(("detector weights", ok, detail, False))
    else:
        rows.append(("detector weights", False, "not checked (no engine)", False))
    return rows


def print_status(rows) -> bool:
    width = max(len(r[0]) for r in rows)
    all_needed = True
    for item, ok, detail, needed in rows:
        mark = "ok" if ok else ("MISSING" if needed else "missing")
        all_needed &= ok or not needed
        say(f"  {item:<{width}}  {mark:<7}  {detail}")
    return all_needed


# --- main -----------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Set up Wav2Lip for Blender (safe to re-run).")
    ap.add_argument("--venv", type=Path, default=None, help=f"engine environment folder (default {default_venv()})")
    ap.add_argument("--torch-index-url", help="pip index for a torch build (e.g. a CUDA or ROCm wheel index)")
    ap.add_argument("--blender", help="Blender executable (default: `blender` on PATH, else the usual folders)")
    ap.add_argument("--no-blender", action="store_true", help="set up the engine only")
    ap.add_argument("--checkpoint", help="Wav2Lip checkpoint to verify and record")
    ap.add_argument("--detector-weights", help="BlazeFace (.pth, its anchors .npy beside it) or S3FD weights to record")
    ap.add_argument("--check", action="store_true", help="print a status table; exit 1 if something needed is missing")
    ap.add_argument("--int8", action="store_true",
                    help="also install NNCF for --precision int8 (the add-on's Precision: int8), about twice as fast on a CPU")
    ap.add_argument("--with", dest="extras", action="append", default=[], choices=sorted(OPTIONAL_EXTRAS), metavar="EXTRA",
                    help="also install an optional part (repeatable): int8; landmarks (--blend mouth, --align: dlib, "
                         "non-commercial model); enhance (--enhance: spandrel face restorers); ray (wav2lip batch --ray)"),
    ap.add_argument("--dev", action="store_true", help="editable install with the test dependencies")
    ap.add_argument("--demo", action="store_true", help="after setting up, lip-sync the demo (or --face/--audio) headless")
    ap.add_argument("--face", help="with --demo: your own video or image")
    ap.add_argument("--audio", help="with --demo: your own audio")
    ap.add_argument("--out-dir", type=Path, default=Path("wav2lip-demo"), help="with --demo: where results go")
    ap.add_argument("--package", action="store_true",
                    help="write the release zip (wav2lip_lipsync-VERSION.zip, installs in Blender 3.4+) and stop")
    ap.add_argument("--out", type=Path, help="with --package: the folder for the zip (default: dist/ in this folder)")
    a = ap.parse_args(argv)
    if a.package:
        import release  # beside this file

        return release.main(a.out)
    env = (a.venv or default_venv()).expanduser().resolve()
    try:
        if a.check:
            say("Wav2Lip for Blender: status")
            return 0 if print_status(status_rows(env, a.blender, a.checkpoint)) else 1
        if sys.version_info < (3, 10):
            raise InstallError(f"Python {sys.version.split()[0]} is too old: run install.py with Python 3.10 or newer")
        info, why = (None, "") if a.no_blender else usable_blender(a.blender)
        # Without a usable Blender program, headless runs use Blender as a Python module (bpy),
        # which exists for one Python version per Blender release: 3.11 for bpy 5.0.
        bpy_python = engine_python_version(env) == BPY_PYTHON
        if a.demo and info is None and not bpy_python:
            # Checked before anything is made: the demo could only fail, after minutes of pip.
            raise InstallError(
                f"{why or 'Blender: not used (--no-blender)'}; --demo without a Blender program needs Python "
                f"{vstr(BPY_PYTHON)} for the bpy module, and the engine would run Python {vstr(engine_python_version(env))}: "
                f"install Blender 3.4+ (blender.org) or pass --blender PATH, or run install.py with Python {vstr(BPY_PYTHON)}")
        with_bpy = info is None and not a.no_blender and bpy_python
        if why:
            say(why)
            say("  headless runs use the bpy module in the engine environment" if with_bpy else
                "  headless runs need Blender 3.4+, or Python 3.11 for the bpy module")
        py = ensure_engine(env, torch_index_url=a.torch_index_url, with_bpy=with_bpy or a.dev, dev=a.dev,
                           optional=tuple(a.extras) + (("int8",) if a.int8 else ()))
        say(f"engine Python: {py}")
        config: dict[str, str] = {CONFIG_PYTHON: str(py)}
        if a.checkpoint:
            ck = Path(a.checkpoint).expanduser().resolve()
            kind = verify_checkpoint(py, ck)
            say(f"checkpoint ok: {ck}\n  {kind}\n  sha256 {sha256_file(ck)}")
            config[CONFIG_CHECKPOINT] = str(ck)
        if a.detector_weights:
            weights, what = verify_detector_weights(py, Path(a.detector_weights).expanduser().resolve())
            say(f"detector weights ok: {weights} ({what})")
            config[CONFIG_DETECTOR_WEIGHTS] = str(weights)
        if info:
            kind = "extension" if info.extension else "legacy add-on"
            say(f"Blender {vstr(info.version)}: {info.exe}")
            with tempfile.TemporaryDirectory() as tmp:
                state = install_addon(info, stage_addon(Path(tmp) / ADDON_ID))
            if state == "up to date":
                say(f"add-on already installed, up to date ({info.addon_dir})")
            else:
                say(f"add-on {state} as a {kind} and enabled: {info.addon_dir} (Sequencer > Sidebar > Lip Sync; "
                    "restart Blender if it is open)")
            cfg = record_config(info.config_dir, **config)
            say(f"preferences recorded in {cfg}")
        record_config(env, **config)  # the engine's own copy, used by demo.py and the core
        if a.demo:
            cmd = [py, ROOT / "demo.py", "--out-dir", a.out_dir.resolve(), "--install-command", install_command(env)]
            cmd += ["--face", a.face] if a.face else []
            cmd += ["--audio", a.audio] if a.audio else []
            cmd += ["--checkpoint", config[CONFIG_CHECKPOINT]] if CONFIG_CHECKPOINT in config else []
            cmd += ["--blender", info.exe] if info else []
            return run(cmd).returncode
        say(f"done. Check with: {install_command(env)} --check")
        return 0
    except InstallError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except OSError as e:  # e.g. a folder that cannot be made or written (Blender's, the engine's)
        where = f"{e.filename}: " if e.filename else ""
        print(f"error: {where}{e.strerror or e}; check that path (its permissions, free space) and re-run", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
