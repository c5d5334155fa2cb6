"""The engine's set-up, in order: make the environment, install torch and the core with pip, check
that it imports, then trust it (the stamp, the engine's Python in the config). Standard library
only, no bpy; the steps are setup_python's, setup_pip's and engine_config's (see setup_base.py
for the whole set).

Both ways in run this: install.py, and the add-on's Set Up Engine button (in a background
process, setup_task.py, so that Blender stays responsive).

What a later run trusts is written last: the "installed" stamp in the environment and the
engine's Python in the config the add-on reads. A set-up clears both before it changes an
environment, so one that was cancelled or failed half-way is never used, and is redone.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Tuple

from .engine_config import CONFIG_PYTHON, read_config, record_config
from .setup_base import OPTIONAL_EXTRAS, STAMP_FILE, SetupError, clean_env, last_line, run, venv_python
from .setup_pip import Progress, run_pip, runs_checkout, source_stamp, stage_source, torch_pin
from .setup_python import create_env


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
    if (run([py, "-m", "pip", "--version"], capture_output=True, env=clean_env()).returncode != 0
            and (env / "pyvenv.cfg").is_file()):
        # An environment never trusted (no stamp: e.g. a cancelled set-up) that cannot run pip: made again.
        progress(0.05, f"making the unfinished engine environment in {env} again")
        shutil.rmtree(env)
        create_env(env, o.pythons or (sys.executable,), lambda msg: progress(0.05, msg))
    if run([py, "-m", "pip", "--version"], capture_output=True, env=clean_env()).returncode != 0:
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
              env=clean_env())
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


def set_up(o: Options, progress: Progress, log: Callable[[str], None] = lambda _l: None) -> Path:
    """ensure_engine, then the engine recorded where the add-on (and the core) read it."""
    py = ensure_engine(o, progress, log)
    for d in (*o.config_dirs, o.env):
        record_config(d, **{CONFIG_PYTHON: str(py)})
    progress(1.0, f"engine ready: {py}")
    return py
