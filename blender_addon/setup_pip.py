"""What the engine is built from and pip at work: the build sources (a checkout, or the release
zip's engine_src/), the torch pin read from pyproject.toml, the stamp of the sources, pip's
output turned into progress, and whether an environment already runs a checkout. Standard
library only.
"""

from __future__ import annotations

import hashlib
import math
import queue
import re
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from .setup_base import SetupError, clean_env, run

HERE = Path(__file__).resolve().parent
# What the core's wheel is built from: pyproject.toml's readme, license-files and packages.
BUILD_SOURCES = ("pyproject.toml", "README.md", "LICENSE", "wav2lip_core")

Progress = Callable[[float, str], None]


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
    # Every module of the core, its subpackages' too (an edit anywhere is a new engine).
    core = root / "wav2lip_core"
    for p in [root / "pyproject.toml", *sorted(core.rglob("*.py"), key=lambda q: q.relative_to(core).as_posix())]:
        h.update((p.relative_to(core).as_posix() if p.is_relative_to(core) else p.name).encode())
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
                            env=clean_env(), bufsize=1)
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
