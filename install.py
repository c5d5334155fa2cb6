#!/usr/bin/env python3
"""Set up Wav2Lip for Blender on this machine: one command, safe to re-run.

    python3 install.py                       # engine env + core, add-on into Blender if found
    python3 install.py --checkpoint wav2lip_gan.pth   # also verify and record the weights
    python3 install.py --check               # status table; exit 1 if something needed is missing
    python3 install.py --demo                # set up, then lip-sync the bundled demo headless

Standard library only (Python >= 3.10). It never downloads model weights: when one is
missing it says which file, where to get it, and where to put it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
ADDON_DIR = ROOT / "blender_addon"
ADDON_ID = "wav2lip_lipsync"  # blender_manifest.toml `id`
CONFIG_NAME = "wav2lip_lipsync.json"  # in Blender's user config folder, read by the add-on
WEIGHTS_HELP = (
    "get wav2lip_gan.pth (or wav2lip.pth) from the Wav2Lip authors (github.com/Rudrabha/Wav2Lip, "
    "'Getting the weights'; research/non-commercial licence) and run: python3 install.py --checkpoint PATH"
)


class InstallError(Exception):
    """A step failed; the message says what to do."""


def say(msg: str = "") -> None:
    print(msg, flush=True)


# --- engine environment ---------------------------------------------------------------------

def default_venv() -> Path:
    if os.environ.get("WAV2LIP_ENGINE_VENV"):
        return Path(os.environ["WAV2LIP_ENGINE_VENV"]).expanduser()
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local"))
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    else:
        base = Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local" / "share"))
    return base / "wav2lip-blender" / "engine"


def venv_python(env: Path) -> Path:
    return env / ("Scripts/python.exe" if sys.platform == "win32" else "bin/python")


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


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], **kw)


def ensure_engine(env: Path, *, torch_index_url: str | None, with_bpy: bool, dev: bool) -> Path:
    py = venv_python(env)
    if not py.exists():
        say(f"creating the engine environment in {env}")
        venv.EnvBuilder(with_pip=True, clear=False).create(env)
    extras = ",".join(x for x, on in (("bpy", with_bpy), ("test", dev)) if on)
    stamp_file = env / "wav2lip-installed.txt"
    stamp = source_stamp(extras + "|" + (torch_index_url or ""))
    if stamp_file.exists() and stamp_file.read_text().strip() == stamp:
        say(f"engine environment is up to date: {env}")
        return py
    pip = [py, "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    if run([py, "-m", "pip", "--version"], capture_output=True).returncode != 0:
        raise InstallError(f"pip does not run in {env}; delete that folder and run install.py again")
    if torch_index_url:
        say(f"installing {torch_pin()} from {torch_index_url}")
        if run([*pip, torch_pin(), "--index-url", torch_index_url]).returncode != 0:
            raise InstallError(f"could not install {torch_pin()} from {torch_index_url}; check the URL (e.g. a CUDA wheel index)")
    target = str(ROOT) + (f"[{extras}]" if extras else "")
    say(f"installing the core and its dependencies into {env} (torch pinned in pyproject.toml)")
    # Editable for contributors (--dev) so tests see their edits; a plain copy for users.
    if run([*pip, *(["-e"] if dev else []), target]).returncode != 0:
        raise InstallError("pip could not install the core (see above); check the network to PyPI and re-run")
    stamp_file.write_text(stamp + "\n")
    return py


# --- Blender --------------------------------------------------------------------------------

def blender_candidates() -> list[Path]:
    """The usual install folders, newest-looking first."""
    home = Path.home()
    globs: list[tuple[Path, str]] = []
    if sys.platform == "win32":
        for base in (os.environ.get("ProgramFiles", r"C:\Program Files"), os.environ.get("ProgramFiles(x86)", "")):
            if base:
                globs.append((Path(base) / "Blender Foundation", "Blender*/blender.exe"))
        globs.append((Path(os.environ.get("ProgramFiles", r"C:\Program Files")) / "Steam" / "steamapps" / "common", "Blender/blender.exe"))
    elif sys.platform == "darwin":
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


def blender_config_dir(version: tuple[int, int, int]) -> Path:
    """Blender's per-version user config folder (BLENDER_USER_CONFIG overrides, as in Blender)."""
    if os.environ.get("BLENDER_USER_CONFIG"):
        return Path(os.environ["BLENDER_USER_CONFIG"])
    ver = f"{version[0]}.{version[1]}"
    if sys.platform == "win32":
        base = Path(os.environ.get("APPDATA", Path.home() / "AppData" / "Roaming")) / "Blender Foundation" / "Blender"
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support" / "Blender"
    else:
        base = Path(os.environ.get("XDG_CONFIG_HOME", Path.home() / ".config")) / "blender"
    return base / ver / "config"


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


def install_addon(exe: Path, version: tuple[int, int, int]) -> None:
    """Build the extension zip with Blender's own builder and install it (4.2+)."""
    if version < (4, 2, 0):
        raise InstallError(f"Blender {'.'.join(map(str, version))} is too old: the add-on needs 4.2 LTS or newer")
    with tempfile.TemporaryDirectory() as tmp:
        built = run([exe, "--factory-startup", "--command", "extension", "build", "--source-dir", ADDON_DIR,
                     "--output-dir", tmp], capture_output=True, text=True)
        zips = list(Path(tmp).glob("*.zip"))
        if built.returncode != 0 or not zips:
            raise InstallError(f"Blender could not build the add-on: {(built.stderr or built.stdout).strip()[-300:]}")
        inst = run([exe, "--factory-startup", "--command", "extension", "install-file", "--repo", "user_default",
                    "--enable", zips[0]], capture_output=True, text=True)
        if inst.returncode != 0:
            raise InstallError(f"Blender could not install the add-on: {(inst.stderr or inst.stdout).strip()[-300:]}")


def addon_installed(version: tuple[int, int, int]) -> bool:
    ext = blender_config_dir(version).parent / "extensions" / "user_default" / ADDON_ID
    return (ext / "blender_manifest.toml").is_file()


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
        raise InstallError(f"checkpoint not found: {path}; {WEIGHTS_HELP}")
    res = run([py, "-c", VERIFY, path], capture_output=True, text=True)
    if res.returncode != 0:
        raise InstallError((res.stdout.strip() or res.stderr.strip().splitlines()[-1]) if (res.stdout or res.stderr) else "the engine could not load it")
    return res.stdout.strip()


def detector_weights_status(py: Path) -> tuple[bool, str]:
    """BlazeFace/S3FD weights where face-alignment looks (never downloaded here); Haar ships with OpenCV."""
    code = ("import torch.hub, os; d = os.path.join(torch.hub.get_dir(), 'checkpoints'); "
            "print(d); print(*[f for f in ('blazeface.pth', 's3fd-619a316812.pth') if os.path.isfile(os.path.join(d, f))])")
    res = run([py, "-c", code], capture_output=True, text=True)
    if res.returncode != 0:
        return False, "cannot ask the engine (is torch installed?)"
    lines = res.stdout.splitlines() + [""]
    folder, have = lines[0], lines[1].split()
    if have:
        return True, f"{', '.join(have)} in {folder}"
    return False, (f"no BlazeFace/S3FD weights in {folder} (put blazeface.pth + anchors.npy or s3fd-619a316812.pth "
                   "there, or give --detector-weights); the Haar detector bundled with OpenCV works meanwhile")


# --- status ---------------------------------------------------------------------------------

def status_rows(env: Path, blender: str | None, checkpoint: str | None) -> list[tuple[str, bool, str, bool]]:
    """(item, ok, detail, needed) for --check."""
    rows: list[tuple[str, bool, str, bool]] = []
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
            last = (res.stderr.strip().splitlines() or ["?"])[-1]
            rows.append(("torch and device", False, f"engine does not import: {last}", True))
            rows.append(("ffmpeg (PyAV)", False, "not checked", True))
    else:
        rows += [("torch and device", False, "no engine: run python3 install.py", True),
                 ("ffmpeg (PyAV)", False, "no engine: run python3 install.py", True)]
    try:
        found = find_blender(blender)
    except InstallError as e:
        found, err = None, str(e)
    else:
        err = "not found: install Blender 4.2+ or pass --blender PATH (headless runs can use the bpy module)"
    cfg: dict = {}
    if found:
        exe, ver = found
        rows.append(("Blender", True, f"{'.'.join(map(str, ver))} at {exe}", False))
        rows.append(("add-on installed", addon_installed(ver), str(blender_config_dir(ver).parent / "extensions" / "user_default" / ADDON_ID), False))
        cfg = read_config(blender_config_dir(ver))
    else:
        rows.append(("Blender", False, err, False))
        rows.append(("add-on installed", False, "no Blender", False))
    ckpt = checkpoint or cfg.get("checkpoint") or read_config(env).get("checkpoint")
    if ckpt and Path(ckpt).is_file():
        rows.append(("checkpoint", True, f"{ckpt} ({Path(ckpt).stat().st_size / 1e6:.0f} MB)", True))
    else:
        rows.append(("checkpoint", False, f"{'not found: ' + ckpt if ckpt else 'none recorded'}; {WEIGHTS_HELP}", True))
    if engine_ok:
        ok, detail = detector_weights_status(py)
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
    ap.add_argument("--check", action="store_true", help="print a status table; exit 1 if something needed is missing")
    ap.add_argument("--dev", action="store_true", help="editable install with the test dependencies")
    ap.add_argument("--demo", action="store_true", help="after setting up, lip-sync the demo (or --face/--audio) headless")
    ap.add_argument("--face", help="with --demo: your own video or image")
    ap.add_argument("--audio", help="with --demo: your own audio")
    ap.add_argument("--out-dir", type=Path, default=Path("wav2lip-demo"), help="with --demo: where results go")
    a = ap.parse_args(argv)
    env = (a.venv or default_venv()).expanduser().resolve()
    try:
        if a.check:
            say("Wav2Lip for Blender: status")
            return 0 if print_status(status_rows(env, a.blender, a.checkpoint)) else 1
        if sys.version_info < (3, 10):
            raise InstallError(f"Python {sys.version.split()[0]} is too old: run install.py with Python 3.10 or newer")
        found = None if a.no_blender else find_blender(a.blender)
        # Without a Blender program, headless runs use Blender as a Python module (bpy), which
        # exists for one Python version per Blender release: 3.11 for bpy 5.0.
        with_bpy = found is None and not a.no_blender and sys.version_info[:2] == (3, 11)
        py = ensure_engine(env, torch_index_url=a.torch_index_url, with_bpy=with_bpy or a.dev, dev=a.dev)
        say(f"engine Python: {py}")
        config: dict[str, str] = {"python": str(py)}
        if a.checkpoint:
            ck = Path(a.checkpoint).expanduser().resolve()
            kind = verify_checkpoint(py, ck)
            say(f"checkpoint ok: {ck}\n  {kind}\n  sha256 {sha256_file(ck)}")
            config["checkpoint"] = str(ck)
        if found:
            exe, ver = found
            say(f"Blender {'.'.join(map(str, ver))}: {exe}")
            if not addon_installed(ver):
                install_addon(exe, ver)
                say("add-on installed and enabled (Sequencer > Sidebar > Lip Sync)")
            else:
                say("add-on already installed")
            cfg = record_config(blender_config_dir(ver), **config)
            say(f"preferences recorded in {cfg}")
        elif not a.no_blender:
            say("Blender: not found (pass --blender PATH to install the add-on); "
                + ("headless runs use the bpy module in the engine environment" if with_bpy else
                   "headless runs need Blender, or Python 3.11 for the bpy module"))
        record_config(env, **config)  # the engine's own copy, used by demo.py and the add-on's search
        if a.demo:
            cmd = [py, ROOT / "demo.py", "--out-dir", a.out_dir.resolve()]
            cmd += ["--face", a.face] if a.face else []
            cmd += ["--audio", a.audio] if a.audio else []
            cmd += ["--checkpoint", config["checkpoint"]] if "checkpoint" in config else []
            cmd += ["--blender", found[0]] if found else []
            return run(cmd).returncode
        say("done. Check with: python3 install.py --check")
        return 0
    except InstallError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
