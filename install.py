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
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parent
ADDON_DIR = ROOT / "blender_addon"
ADDON_ID = "wav2lip_lipsync"  # blender_manifest.toml `id`


def _load(name: str, path: Path) -> ModuleType:
    """A standard-library-only module by its path, without importing the core package."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # (dataclasses look their module up)
    spec.loader.exec_module(module)
    return module


# The engine's set-up, shared with the add-on's Set Up Engine button: one install module.
setup = _load("wav2lip_engine_setup", ADDON_DIR / "engine_setup.py")
protocol = setup.protocol
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


weights_help = setup.weights_help
InstallError = setup.SetupError  # a step failed; the message says what to do


def say(msg: str = "") -> None:
    print(msg, flush=True)


# --- engine environment ---------------------------------------------------------------------

default_venv = setup.default_venv
venv_python = setup.venv_python


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
    return setup.torch_pin(pyproject)


run = setup.run  # subprocess.run with every argument as text (paths included)


BUILD_SOURCES = setup.BUILD_SOURCES
OPTIONAL_EXTRAS = setup.OPTIONAL_EXTRAS


def stage_source(dest: Path) -> Path:
    """A clean copy of this checkout's build sources (see engine_setup.stage_source)."""
    return setup.stage_source(ROOT, dest)


def ensure_engine(env: Path, *, torch_index_url: str | None, with_bpy: bool, dev: bool,
                  optional: tuple[str, ...] = ()) -> Path:
    extras = (*(["bpy"] if with_bpy else []), *optional, *(["test"] if dev else []))
    o = setup.Options(env=env, source=ROOT, extras=extras, torch_index_url=torch_index_url or "",
                      pythons=(sys.executable,), editable=dev, keep_dev_env=True)
    # pip's own lines stay out of the terminal (as with pip -q); a failure quotes its last one.
    return setup.ensure_engine(o, lambda _f, text: say(text) if text else None)


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


record_config = setup.record_config
read_config = setup.read_config


# --- the add-on -----------------------------------------------------------------------------

_SKIP = shutil.ignore_patterns("__pycache__", "*.pyc", ".*", "pyrightconfig*.json", STAMP_NAME)


def stage_addon(dest: Path) -> Path:
    """The add-on as it is installed, in `dest` (created; must not exist): blender_addon/ plus the
    core's files it loads by path (protocol.ADDON_FILES: blender_addon/wire.py), without caches."""
    shutil.copytree(ADDON_DIR, dest, ignore=_SKIP)
    for name in protocol.ADDON_FILES:
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


last_line = setup.last_line
sha256_file = setup.sha256_file
verify_checkpoint = setup.verify_checkpoint
detector_files = setup.detector_files
verify_detector_weights = setup.verify_detector_weights
detector_weights_status = setup.detector_weights_status


# --- status ---------------------------------------------------------------------------------

def status_rows(env: Path, blender: str | None, checkpoint: str | None) -> list[tuple[str, bool, str, bool]]:
    """(item, ok, detail, needed) for --check."""
    rows: list[tuple[str, bool, str, bool]] = []
    again = install_command(env)
    rows.append(("Python (installer)", sys.version_info >= (3, 10), sys.version.split()[0], True))
    engine, engine_ok = setup.engine_rows(env, f"run {again}")
    rows += engine
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
    detector = cfg.get(CONFIG_DETECTOR_WEIGHTS) or engine_cfg.get(CONFIG_DETECTOR_WEIGHTS)
    rows += setup.weights_rows(env, engine_ok, ckpt, detector, again)
    rows.append(setup.optional_row(env, engine_ok))
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
