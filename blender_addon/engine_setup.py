"""The engine environment: made, filled by pip, checked. Standard library only, no bpy.

One module for both ways in: install.py loads this file by its path (like protocol.py), and the
add-on imports it for its Set Up Engine button, which runs it as a script in a background
process (`python engine_setup.py setup ...`: JSON lines on stdout, one per progress step or pip
line, the last one the result) so Blender stays responsive.

What a later run trusts is written last: the "installed" stamp in the environment and the
engine's Python in the config the add-on reads. A set-up clears both before it changes an
environment, so one that was cancelled or failed half-way is never used, and is redone.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import math
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Callable, Dict, List, Optional, Sequence, Tuple

HERE = Path(__file__).resolve().parent


def _load_protocol() -> ModuleType:
    """protocol.py beside this file (an installed add-on's copy) or the checkout's core's."""
    for path in (HERE / "protocol.py", HERE.parent / "wav2lip_core" / "protocol.py"):
        if path.is_file():
            spec = importlib.util.spec_from_file_location("wav2lip_setup_protocol", path)
            assert spec is not None and spec.loader is not None
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            return module
    raise ImportError("no protocol.py beside engine_setup.py (an incomplete add-on): install it again")


protocol = _load_protocol()
CONFIG_NAME = protocol.CONFIG_NAME
CONFIG_PYTHON = protocol.CONFIG_PYTHON
CONFIG_CHECKPOINT = protocol.CONFIG_CHECKPOINT
CONFIG_DETECTOR_WEIGHTS = protocol.CONFIG_DETECTOR_WEIGHTS

# Optional parts a user may add to the engine (pyproject's extras) and a module each installs.
OPTIONAL_EXTRAS = {"int8": "nncf", "landmarks": "dlib", "enhance": "spandrel", "ray": "ray"}
# What each does, for the add-on's checkboxes and the status table.
EXTRA_HELP = {
    "int8": "NNCF: Precision int8, about twice as fast on a CPU",
    "landmarks": "dlib: Blend mouth and Align Face (its model is non-commercial)",
    "enhance": "spandrel: Enhance face (HD) restorers",
    "ray": "Ray: wav2lip batch --ray across machines",
}
# What the core's wheel is built from: pyproject.toml's readme, license-files and packages.
BUILD_SOURCES = ("pyproject.toml", "README.md", "LICENSE", "wav2lip_core")
STAMP_FILE = "wav2lip-installed.txt"
# Pythons the engine can run on (torch wheels, the core's own floor).
PYTHON_RANGE = ((3, 10), (3, 12))


class SetupError(Exception):
    """A step failed; the message (one line) says what to do."""


def run(cmd: Sequence, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], **kw)


def last_line(text: Optional[str]) -> str:
    lines = [ln.strip() for ln in (text or "").splitlines() if ln.strip()]
    return lines[-1] if lines else ""


# --- where things are -----------------------------------------------------------------------

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


def engine_source(addon_dir: Path = HERE) -> Path:
    """What the engine is built from: the installed add-on's engine_src/ (the release zip), else
    the checkout the add-on runs from (blender_addon/ beside wav2lip_core/)."""
    for root in (addon_dir / "engine_src", addon_dir.parent):
        if (root / "pyproject.toml").is_file() and (root / "wav2lip_core" / "__init__.py").is_file():
            return root
    raise SetupError(f"the add-on in {addon_dir} holds no engine sources (engine_src/): install the release zip "
                     "(wav2lip_lipsync-<version>.zip) again, or run install.py from a checkout")


def torch_pin(pyproject: Path) -> str:
    """The torch requirement from pyproject.toml, the one place it is pinned."""
    m = re.search(r'"(torch==[^"]+)"', pyproject.read_text())
    if not m:
        raise SetupError(f"no torch pin found in {pyproject}")
    return m.group(1)


def source_stamp(root: Path, extras: str) -> str:
    """What the installed core was built from: re-running with the same sources skips pip."""
    h = hashlib.sha256(extras.encode())
    for p in sorted([root / "pyproject.toml", *(root / "wav2lip_core").glob("*.py")]):
        h.update(p.name.encode())
        h.update(p.read_bytes())
    return h.hexdigest()


def stage_source(root: Path, dest: Path) -> Path:
    """A clean copy of what the wheel is built from, in `dest` (created). pip builds in the folder
    it is given, and setuptools' build/ there keeps modules deleted since the last build: they
    would be installed again. The source stays as it is (no build/, no egg-info)."""
    dest.mkdir(parents=True)
    for name in BUILD_SOURCES:
        if (root / name).is_dir():
            shutil.copytree(root / name, dest / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(root / name, dest / name)
    return dest


def record_config(config_dir: Path, **values: str) -> Path:
    """Merge `values` into the JSON the add-on reads for its empty preferences (a None value
    removes its key). Atomic, and unchanged values leave the file untouched."""
    path = config_dir / CONFIG_NAME
    current = read_config(config_dir)
    merged = {**current, **{k: v for k, v in values.items() if v}}
    for k, v in values.items():
        if v is None:
            merged.pop(k, None)
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
    """What install.py or Set Up Engine recorded in `config_dir` ({} when nothing readable is)."""
    try:
        data = json.loads((config_dir / CONFIG_NAME).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


# --- which Python makes the environment -----------------------------------------------------

PROBE_PYTHON = "import sys, venv, ensurepip; print(*sys.version_info[:2])"


def python_candidates(first: Sequence[str] = ()) -> List[str]:
    """`first` (e.g. Blender's own Python), then the Pythons on PATH, newest first."""
    found = [p for p in first if p]
    for name in ("python3.12", "python3.11", "python3.10", "python3"):
        p = shutil.which(name)
        if p:
            found.append(p)
    out: List[str] = []
    for p in found:
        if p not in out:
            out.append(p)
    return out


def python_version(python: str) -> Optional[Tuple[int, int]]:
    """The version of a Python that has venv and ensurepip, else None."""
    try:
        res = run([python, "-I", "-c", PROBE_PYTHON], capture_output=True, text=True, timeout=60,
                  env=_clean_env())
        major, minor = map(int, res.stdout.split())
    except (OSError, subprocess.SubprocessError, ValueError):
        return None
    return (major, minor) if res.returncode == 0 else None


def what_to_install() -> str:
    """The one thing a user installs when no Python here can make the environment."""
    if sys.platform.startswith("linux") and Path("/etc/debian_version").exists():
        return "install Python's venv module: sudo apt install python3-venv"
    if sys.platform.startswith("linux"):
        return "install Python 3.11 with its venv module from your distribution (e.g. python3.11 and python3-venv)"
    return "install Python 3.11 from python.org"


def _clean_env() -> Dict[str, str]:
    env = dict(os.environ)
    for key in ("PYTHONHOME", "PYTHONPATH", "PYTHONSTARTUP", "__PYVENV_LAUNCHER__"):
        env.pop(key, None)
    return env


def create_env(env: Path, pythons: Sequence[str], say: Callable[[str], None]) -> str:
    """Make the environment at `env` with the first of `pythons` that can (right version, venv
    with pip); returns that Python. SetupError, one line, when none can."""
    tried: List[str] = []
    for python in pythons:
        version = python_version(python)
        if version is None:
            tried.append(f"{python} (no venv/ensurepip)")
            continue
        if not PYTHON_RANGE[0] <= version <= PYTHON_RANGE[1]:
            tried.append(f"{python} ({version[0]}.{version[1]})")
            continue
        say(f"creating the engine environment in {env} with Python {version[0]}.{version[1]} ({python})")
        res = run([python, "-I", "-m", "venv", env], capture_output=True, text=True, env=_clean_env())
        if res.returncode == 0 and venv_python(env).exists():
            return python
        tried.append(f"{python} ({last_line(res.stderr) or last_line(res.stdout) or 'venv failed'})")
        shutil.rmtree(env, ignore_errors=True)
    raise SetupError(f"no Python here can make the engine environment ({'; '.join(tried) or 'none found'}): "
                     f"{what_to_install()}, then set up the engine again")


# --- the set-up -----------------------------------------------------------------------------

Progress = Callable[[float, str], None]


@dataclass
class Options:
    """What a set-up installs, and where."""

    env: Path
    source: Path  # a folder holding BUILD_SOURCES (a checkout, or the add-on's engine_src/)
    extras: Tuple[str, ...] = ()  # names from OPTIONAL_EXTRAS (and install.py's bpy/test)
    torch_index_url: str = ""
    find_links: str = ""  # a local folder of wheels: pip installs from it alone (no network)
    pythons: Tuple[str, ...] = ()  # to make a new environment with, best first
    editable: bool = False  # install.py --dev
    config_dirs: Tuple[Path, ...] = ()  # where the engine's Python is recorded once it works
    keep_dev_env: bool = False  # install.py: an environment running the checkout itself is left alone


def stamp_for(o: Options, extras: str) -> str:
    return source_stamp(o.source, extras + "|" + o.torch_index_url)


def pip_fraction(line: str, state: Dict[str, int]) -> Optional[float]:
    """How far pip is (0..1 of its part) from one of its output lines; None: no step."""
    if line.startswith(("Collecting", "Requirement already satisfied", "Processing", "Looking in")):
        state["seen"] = state.get("seen", 0) + 1
        return 0.6 * (1 - 0.93 ** state["seen"])
    if line.startswith(("Downloading", "Using cached", "Building wheel", "Created wheel", "Building")):
        return None
    if line.startswith("Installing collected packages"):
        return 0.75
    if line.startswith("Successfully installed"):
        return 1.0
    return None


# pip says nothing while it unpacks and installs (torch alone: a minute or more); meanwhile the
# bar creeps towards the end of pip's part, so that it visibly lives.
CREEP_S = 40.0


def run_pip(cmd: Sequence, progress: Progress, start: float, end: float, log: Callable[[str], None]) -> Tuple[int, List[str]]:
    """pip with its output streamed: every line logged, the bar moved between start and end."""
    proc = subprocess.Popen([str(c) for c in cmd], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=_clean_env(), bufsize=1)
    lines: "queue.Queue[Optional[str]]" = queue.Queue()

    def read() -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            lines.put(raw)
        lines.put(None)

    threading.Thread(target=read, name="wav2lip-pip-reader", daemon=True).start()
    state: Dict[str, int] = {}
    tail: List[str] = []
    done = 0.0
    installing_since: Optional[float] = None
    while True:
        try:
            raw = lines.get(timeout=1.0)
        except queue.Empty:
            if installing_since is not None and done < 0.97:
                waited = time.monotonic() - installing_since
                progress(start + (end - start) * (done + (0.97 - done) * (1 - math.exp(-waited / CREEP_S))), "")
            continue
        if raw is None:
            break
        line = raw.strip()
        if not line:
            continue
        tail = (tail + [line])[-20:]
        log(line)
        f = pip_fraction(line, state)
        if f is not None and f > done:
            done = f
            progress(start + (end - start) * f, "")  # (same step: the line itself is logged)
        if line.startswith("Installing collected packages"):
            installing_since = time.monotonic()
        elif line.startswith("Successfully installed"):
            installing_since = None
    return proc.wait(), tail


def ensure_engine(o: Options, progress: Progress, log: Callable[[str], None] = lambda _l: None) -> Path:
    """Make (or bring up to date) the engine environment; its Python. The stamp is cleared
    before anything is changed and written only when everything worked."""
    env, py = o.env, venv_python(o.env)
    optional = tuple(x for x in OPTIONAL_EXTRAS if x in o.extras)  # one order, whatever was asked
    extras = ",".join((*(["bpy"] if "bpy" in o.extras else []), *optional, *(["test"] if "test" in o.extras else [])))
    stamp_file = env / STAMP_FILE
    stamp = stamp_for(o, extras)
    progress(0.02, "checking the engine environment")
    if py.exists() and stamp_file.exists() and stamp_file.read_text().strip() == stamp:
        progress(1.0, f"engine environment is up to date: {env}")
        return py
    needed = ["torch", "av", "cv2", *(["bpy"] if "bpy" in o.extras else []), *(OPTIONAL_EXTRAS[x] for x in optional),
              *(["pytest"] if "test" in o.extras else [])]
    if py.exists() and not o.torch_index_url and o.keep_dev_env and runs_checkout(py, o.source, needed):
        # A contributor's environment (an editable install of this folder, e.g. the dev .venv):
        # it already runs these sources, and pip would replace the editable install with a copy.
        progress(1.0, f"engine environment runs this checkout (editable install), nothing to install: {env}")
        return py
    untrust(o)
    if not py.exists():
        create_env(env, o.pythons or (sys.executable,), lambda msg: progress(0.05, msg))
    if (run([py, "-m", "pip", "--version"], capture_output=True, env=_clean_env()).returncode != 0
            and (env / "pyvenv.cfg").is_file()):
        # An environment never trusted (no stamp: e.g. a cancelled set-up) that cannot run pip: made again.
        progress(0.05, f"making the unfinished engine environment in {env} again")
        shutil.rmtree(env)
        create_env(env, o.pythons or (sys.executable,), lambda msg: progress(0.05, msg))
    if run([py, "-m", "pip", "--version"], capture_output=True, env=_clean_env()).returncode != 0:
        raise SetupError(f"pip does not run in {env}; delete that folder and set up the engine again")
    pip = [py, "-m", "pip", "install", "--disable-pip-version-check", "--progress-bar", "off"]
    if o.find_links:
        pip += ["--no-index", "--find-links", o.find_links]
    start = 0.10
    if o.torch_index_url:
        pin = torch_pin(o.source / "pyproject.toml")
        progress(start, f"installing {pin} from {o.torch_index_url}")
        rc, tail = run_pip([*pip, pin, "--index-url", o.torch_index_url], progress, 0.10, 0.45, log)
        if rc != 0:
            raise SetupError(f"could not install {pin} from {o.torch_index_url}: {last_line(chr(10).join(tail))}; "
                             "check the URL (e.g. a CUDA wheel index)")
        start = 0.45
    progress(start, f"installing the core and its dependencies into {env}")
    with tempfile.TemporaryDirectory() as tmp:
        # Editable for contributors (--dev) so tests see their edits; for users a plain copy,
        # built from a clean copy of the sources (see stage_source).
        src = o.source if o.editable else stage_source(o.source, Path(tmp) / "wav2lip-blender")
        target = str(src) + (f"[{extras}]" if extras else "")
        rc, tail = run_pip([*pip, *(["-e"] if o.editable else []), target], progress, start, 0.95, log)
        if rc != 0:
            where = f"the wheels in {o.find_links}" if o.find_links else "PyPI (check the network)"
            raise SetupError(f"pip could not install the core from {where}: {last_line(chr(10).join(tail))}")
    progress(0.96, "checking that the engine imports")
    res = run([py, "-c", "import wav2lip_core, torch, av"], capture_output=True, text=True, cwd=tempfile.gettempdir(),
              env=_clean_env())
    if res.returncode != 0:
        raise SetupError(f"the engine was installed but does not import: {last_line(res.stderr)}")
    stamp_file.write_text(stamp + "\n")
    return py


def untrust(o: Options) -> None:
    """Before an environment changes: no stamp, and no config names its Python."""
    (o.env / STAMP_FILE).unlink(missing_ok=True)
    py = str(venv_python(o.env))
    for d in o.config_dirs:
        if read_config(d).get(CONFIG_PYTHON) == py:
            record_config(d, **{CONFIG_PYTHON: None})  # type: ignore[arg-type]


def installed(env: Path) -> bool:
    """Whether a set-up of `env` finished (its stamp is written last)."""
    return venv_python(env).exists() and (env / STAMP_FILE).is_file()


def set_up(o: Options, progress: Progress, log: Callable[[str], None] = lambda _l: None) -> Path:
    """ensure_engine, then the engine recorded where the add-on (and the core) read it."""
    py = ensure_engine(o, progress, log)
    for d in (*o.config_dirs, o.env):
        record_config(d, **{CONFIG_PYTHON: str(py)})
    progress(1.0, f"engine ready: {py}")
    return py


FIND_SPECS = (
    "import importlib.util as u, sys\n"
    "s = u.find_spec('wav2lip_core')\n"
    "print(s.origin if s else '')\n"
    "print(all(u.find_spec(m) is not None for m in sys.argv[1:]))\n"
)


def runs_checkout(py: Path, root: Path, modules: Sequence[str]) -> bool:
    """Whether `py` imports wav2lip_core from `root` and finds `modules` (nothing imported)."""
    # cwd elsewhere: `python -c` puts the working folder first on sys.path.
    res = run([py, "-c", FIND_SPECS, *modules], capture_output=True, text=True, cwd=tempfile.gettempdir())
    lines = res.stdout.splitlines()
    if res.returncode != 0 or len(lines) < 2 or not lines[0]:
        return False
    return Path(lines[0]).resolve() == (root / "wav2lip_core" / "__init__.py").resolve() and lines[1] == "True"


# --- checkpoint and detector weights --------------------------------------------------------

def weights_help(command: str = "python3 install.py") -> str:
    how = (f"run: {command} --checkpoint PATH" if command else "pick it in Checkpoint (add-on preferences)")
    return ("get wav2lip_gan.pth (or wav2lip.pth) from the Wav2Lip authors (github.com/Rudrabha/Wav2Lip, "
            f"'Getting the weights'; research/non-commercial licence) and {how}")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


VERIFY = (
    "import sys\n"
    "from wav2lip_core.errors import Wav2LipError\n"
    "from wav2lip_core.model.checkpoint import load_checkpoint, checkpoint_kind\n"
    "try:\n"
    "    load_checkpoint(sys.argv[1])\n"
    "except Wav2LipError as e:\n"
    "    print(e); sys.exit(1)\n"
    "print(checkpoint_kind(sys.argv[1]))\n"
)


def verify_checkpoint(py: Path, path: Path, command: str = "python3 install.py") -> str:
    """Load the checkpoint with the engine (never executing code from it); its kind or an error."""
    if not path.is_file():
        raise SetupError(f"checkpoint not found: {path}; {weights_help(command)}")
    res = run([py, "-c", VERIFY, path], capture_output=True, text=True, cwd=tempfile.gettempdir())
    if res.returncode != 0:
        # The engine prints our one-line reason on stdout; a crash leaves a traceback (or nothing).
        why = last_line(res.stdout) or last_line(res.stderr) or f"the engine exited with code {res.returncode} and said nothing"
        raise SetupError(f"the engine could not load the checkpoint {path}: {why}")
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


def detector_files(path: Path) -> Tuple[Path, Optional[Path]]:
    """(weights, anchors or None): a .pth (BlazeFace's anchors .npy beside it), or a folder
    holding one of face-alignment's files."""
    if path.is_dir():
        for name, anchors in DETECTOR_FILES:
            if (path / name).is_file():
                return detector_files(path / name)
        raise SetupError(f"no face detector weights in {path}: it needs blazeface.pth + anchors.npy "
                         "(or s3fd-619a316812.pth); give the .pth file")
    if not path.is_file():
        raise SetupError(f"detector weights not found: {path}; give blazeface.pth (with anchors.npy beside it) "
                         "or s3fd-619a316812.pth")
    name = path.name.lower()
    if "s3fd" in name:
        return path, None
    anchors = path.with_name("anchorsback.npy" if "back" in name else "anchors.npy")
    if not anchors.is_file():
        raise SetupError(f"BlazeFace anchors not found: {anchors} is missing; put the {anchors.name} that comes "
                         f"with {path.name} beside it")
    return path, anchors


def verify_detector_weights(py: Path, path: Path) -> Tuple[Path, str]:
    """(the weights file to record, what the engine found in it)."""
    weights, anchors = detector_files(path)
    res = run([py, "-c", VERIFY_DETECTOR, weights, *([anchors] if anchors else [])], capture_output=True, text=True,
              cwd=tempfile.gettempdir())
    if res.returncode != 0:
        why = last_line(res.stdout) or last_line(res.stderr) or f"exit code {res.returncode}"
        raise SetupError(f"the engine could not load the detector weights {weights}: {why}; download them again")
    return weights, res.stdout.strip()


def describe_file(py: Path, kind: str, path: Path) -> str:
    """One line for a picked file: what the engine found in it and its sha256 prefix."""
    if kind == "checkpoint":
        what = verify_checkpoint(py, path, command="").splitlines()[0]
        return f"{what}; sha256 {sha256_file(path)[:12]}"
    weights, what = verify_detector_weights(py, path)
    return f"{weights.name}: {what}; sha256 {sha256_file(weights)[:12]}"


def detector_weights_status(py: Path, recorded: Optional[str], command: str = "python3 install.py") -> Tuple[bool, str]:
    """The recorded BlazeFace/S3FD weights, else the ones where face-alignment looks (never
    downloaded here); Haar ships with OpenCV."""
    if recorded:
        try:
            weights, anchors = detector_files(Path(recorded))
        except SetupError as e:
            return False, f"recorded, but {e}"
        return True, f"{weights}" + (f" + {anchors.name}" if anchors else "")
    code = ("import torch.hub, os; d = os.path.join(torch.hub.get_dir(), 'checkpoints'); "
            f"print(d); print(*[f for f in {(protocol.BLAZEFACE_FILES['blazeface'][0], protocol.S3FD_FILE)!r} "
            "if os.path.isfile(os.path.join(d, f))])")
    res = run([py, "-c", code], capture_output=True, text=True, cwd=tempfile.gettempdir())
    if res.returncode != 0:
        return False, "cannot ask the engine (is torch installed?)"
    lines = res.stdout.splitlines() + [""]
    folder, have = lines[0], lines[1].split()
    if have:
        return True, f"{', '.join(have)} in {folder}"
    record = f"record them: {command} --detector-weights PATH" if command else "pick them in Detector Weights"
    return False, (f"no BlazeFace/S3FD weights in {folder} (put blazeface.pth + anchors.npy or s3fd-619a316812.pth "
                   f"there, or {record}); the Haar detector bundled with OpenCV works meanwhile")


# --- status (install.py --check, the add-on's table) ----------------------------------------

Row = Tuple[str, bool, str, bool]  # (item, ok, detail, needed)

ENGINE_INFO = ("import torch, av, wav2lip_core; from wav2lip_core.model.device import pick_device; "
               "d = pick_device('auto'); print(torch.__version__, d.type, av.__version__, "
               "'.'.join(map(str, av.library_versions['libavcodec'])))")


def engine_rows(env: Path, again: str) -> Tuple[List[Row], bool]:
    """engine environment, torch and device, ffmpeg; and whether the engine imports."""
    py = venv_python(env)
    rows: List[Row] = [("engine environment", py.exists(), str(env), True)]
    if not py.exists():
        return rows + [("torch and device", False, f"no engine: {again}", True),
                       ("ffmpeg (PyAV)", False, f"no engine: {again}", True)], False
    res = run([py, "-c", ENGINE_INFO], capture_output=True, text=True, cwd=tempfile.gettempdir())
    if res.returncode != 0:
        return rows + [("torch and device", False, f"engine does not import: {last_line(res.stderr) or '?'}", True),
                       ("ffmpeg (PyAV)", False, "not checked", True)], False
    tv, dev, avv, codec = res.stdout.split()[:4]
    return rows + [("torch and device", True, f"torch {tv}, device {dev}", True),
                   ("ffmpeg (PyAV)", True, f"PyAV {avv}, libavcodec {codec}", True)], True


def weights_rows(env: Path, engine_ok: bool, checkpoint: Optional[str], detector: Optional[str],
                 command: str) -> List[Row]:
    rows: List[Row] = []
    if checkpoint and Path(checkpoint).is_file():
        rows.append(("checkpoint", True, f"{checkpoint} ({Path(checkpoint).stat().st_size / 1e6:.0f} MB)", True))
    else:
        rows.append(("checkpoint", False, f"{'not found: ' + checkpoint if checkpoint else 'none recorded'}; "
                     f"{weights_help(command)}", True))
    if engine_ok:
        ok, detail = detector_weights_status(venv_python(env), detector, command)
        rows.append(("detector weights", ok, detail, False))
    else:
        rows.append(("detector weights", False, "not checked (no engine)", False))
    return rows


def optional_row(env: Path, engine_ok: bool) -> Row:
    if not engine_ok:
        return ("optional parts", False, "not checked (no engine)", False)
    code = "import importlib.util as u, sys; print(*[n for n in sys.argv[1:] if u.find_spec(n.split('=')[1])])"
    res = run([venv_python(env), "-c", code, *(f"{k}={m}" for k, m in OPTIONAL_EXTRAS.items())],
              capture_output=True, text=True, cwd=tempfile.gettempdir())
    have = [x.split("=")[0] for x in res.stdout.split()]
    missing = [x for x in OPTIONAL_EXTRAS if x not in have]
    detail = (", ".join(have) or "none") + (f" (not installed: {', '.join(missing)})" if missing else "")
    return ("optional parts", True, detail, False)  # (optional: none installed is fine)


def addon_status(env: Path, config_dir: Optional[Path], checkpoint: str = "", detector: str = "") -> List[Row]:
    """The add-on's table: install.py --check's engine, weights and optional parts rows."""
    cfg = read_config(config_dir) if config_dir else {}
    engine_cfg = read_config(env)
    rows, ok = engine_rows(env, "press Set Up Engine")
    if ok and not installed(env):
        rows[0] = ("engine environment", False, f"{env} (a set-up did not finish: press Set Up Engine)", True)
    ckpt = checkpoint or cfg.get(CONFIG_CHECKPOINT) or engine_cfg.get(CONFIG_CHECKPOINT)
    det = detector or cfg.get(CONFIG_DETECTOR_WEIGHTS) or engine_cfg.get(CONFIG_DETECTOR_WEIGHTS)
    return rows + weights_rows(env, ok, ckpt, det, "") + [optional_row(env, ok)]


# --- the background process (the add-on's side) ---------------------------------------------

@dataclass
class Task:
    """This file run as a script in a process group of its own, its JSON lines collected by a
    thread; the UI polls it (nothing here blocks)."""

    args: List[str]
    python: str = sys.executable
    events: List[dict] = field(default_factory=list)
    proc: Optional[subprocess.Popen] = None
    cancelled: bool = False

    def start(self) -> "Task":
        kw: dict = {"start_new_session": True} if os.name == "posix" else {
            "creationflags": getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0)}
        self.proc = subprocess.Popen([self.python, "-I", str(Path(__file__).resolve()), *self.args],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, env=_clean_env(), **kw)
        threading.Thread(target=self._read, name="wav2lip-setup-reader", daemon=True).start()
        return self

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                event = json.loads(line)
            except ValueError:
                event = {"log": line.rstrip()}  # a Python crash's traceback, say
            self.events.append(event if isinstance(event, dict) else {"log": str(event)})

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def result(self) -> Optional[dict]:
        """The last event once the process has ended (with 'ok'), else None."""
        if self.running() or self.proc is None:
            return None
        self.proc.wait()
        final = next((e for e in reversed(self.events) if "ok" in e), None)
        if final is None:
            logs = [e["log"] for e in self.events if e.get("log")]
            why = "cancelled" if self.cancelled else (logs[-1] if logs else f"exit code {self.proc.returncode}")
            final = {"ok": False, "error": why}
        return final

    def progress(self) -> Tuple[float, str, str]:
        """(fraction, step text, last log line)."""
        f, text, log = 0.0, "starting", ""
        for e in self.events:
            if "progress" in e:
                f, text = float(e["progress"]), str(e.get("text") or text)
            if e.get("log"):
                log = str(e["log"])
        return f, text, log

    def cancel(self) -> None:
        """Stop the script and everything it started (pip, its builds)."""
        self.cancelled = True
        if not self.running():
            return
        assert self.proc is not None
        try:
            if os.name == "posix":
                os.killpg(self.proc.pid, signal.SIGKILL)
            else:
                run(["taskkill", "/F", "/T", "/PID", self.proc.pid], capture_output=True)
        except OSError:
            pass
        self.proc.wait()


def setup_args(o: Options) -> List[str]:
    args = ["setup", "--venv", str(o.env), "--source", str(o.source)]
    for x in o.extras:
        args += ["--with", x]
    if o.torch_index_url:
        args += ["--torch-index-url", o.torch_index_url]
    if o.find_links:
        args += ["--find-links", o.find_links]
    for p in o.pythons:
        args += ["--python", p]
    for d in o.config_dirs:
        args += ["--config-dir", str(d)]
    return args


# --- as a script ----------------------------------------------------------------------------

def _emit(**event) -> None:
    print(json.dumps(event), flush=True)


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description="Set up or check the Wav2Lip engine (JSON lines on stdout).")
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("setup")
    s.add_argument("--venv", type=Path, required=True)
    s.add_argument("--source", type=Path, required=True)
    s.add_argument("--with", dest="extras", action="append", default=[])
    s.add_argument("--torch-index-url", default="")
    s.add_argument("--find-links", default="")
    s.add_argument("--python", dest="pythons", action="append", default=[])
    s.add_argument("--config-dir", dest="config_dirs", type=Path, action="append", default=[])
    c = sub.add_parser("check")
    c.add_argument("--venv", type=Path, required=True)
    c.add_argument("--config-dir", type=Path)
    c.add_argument("--checkpoint", default="")
    c.add_argument("--detector-weights", default="")
    v = sub.add_parser("verify")
    v.add_argument("kind", choices=("checkpoint", "detector"))
    v.add_argument("path", type=Path)
    v.add_argument("--engine-python", type=Path, required=True)
    a = ap.parse_args(argv)
    try:
        if a.cmd == "setup":
            o = Options(env=a.venv, source=a.source, extras=tuple(a.extras), torch_index_url=a.torch_index_url,
                        find_links=a.find_links, pythons=tuple(a.pythons), config_dirs=tuple(a.config_dirs))
            py = set_up(o, lambda f, t: _emit(progress=round(f, 4), text=t), lambda line: _emit(log=line))
            _emit(ok=True, python=str(py))
        elif a.cmd == "check":
            _emit(ok=True, rows=addon_status(a.venv, a.config_dir, a.checkpoint, a.detector_weights))
        else:
            _emit(ok=True, text=describe_file(a.engine_python, a.kind, a.path))
    except SetupError as e:
        _emit(ok=False, error=str(e))
        return 1
    except OSError as e:
        where = f"{e.filename}: " if e.filename else ""
        _emit(ok=False, error=f"{where}{e.strerror or e}; check that path (its permissions, free space) and try again")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
