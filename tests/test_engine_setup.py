"""engine_setup.py and its steps (setup_*.py, engine_config.py), the install modules install.py and
the add-on's Set Up Engine share: which Python makes the environment, what the source stamp
covers, and a cancelled set-up leaves nothing a later run trusts."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT

sys.path.insert(0, str(ROOT))
import install  # noqa: E402
from installer import addon_module  # noqa: E402

setup = addon_module("engine_setup")
base = addon_module("setup_base")
config = addon_module("engine_config")
pip = addon_module("setup_pip")
python_setup = addon_module("setup_python")
setup_task = addon_module("setup_task")
BASE_PYTHON = Path(os.path.realpath(getattr(sys, "_base_executable", sys.executable)))


def python_without_venv(folder: Path) -> Path:
    """A real Python whose ensurepip is missing, as Debian's system Python is without the
    python3-venv package."""
    stub = folder / "no-ensurepip" / "ensurepip"
    stub.mkdir(parents=True)
    (stub / "__init__.py").write_text("raise ModuleNotFoundError(\"No module named 'ensurepip'\", name='ensurepip')\n")
    exe = folder / "python3"
    # -I would ignore PYTHONPATH (and so the stub): the wrapper drops it.
    exe.write_text("#!/bin/sh\nfor a; do shift; [ \"$a\" = -I ] || set -- \"$@\" \"$a\"; done\n"
                   f"PYTHONPATH={stub.parent} exec {BASE_PYTHON} \"$@\"\n")
    exe.chmod(0o755)
    return exe


def test_the_python_without_venv_is_like_debians(tmp_path):
    """Debian ships ensurepip in python3.X-venv (dpkg -S ensurepip): without it the import fails."""
    import subprocess

    bad = python_without_venv(tmp_path / "py")
    res = subprocess.run([str(bad), "-I", "-c", "import ensurepip"], capture_output=True, text=True)
    assert res.returncode != 0 and "No module named 'ensurepip'" in res.stderr
    ok = subprocess.run([str(bad), "-I", "-c", "import venv, json"], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr


def test_no_python_that_can_make_the_environment_gets_one_line_saying_what_to_install(tmp_path, monkeypatch):
    bad = python_without_venv(tmp_path / "py")
    with pytest.raises(base.SetupError) as e:
        python_setup.create_env(tmp_path / "env", [str(bad)], lambda _m: None)
    msg = str(e.value)
    assert "\n" not in msg and str(bad) in msg
    if Path("/etc/debian_version").exists():
        assert "sudo apt install python3-venv" in msg, msg
    assert not (tmp_path / "env").exists()
    monkeypatch.setattr(python_setup.sys, "platform", "win32")
    assert python_setup.what_to_install() == "install Python 3.11 from python.org"


def test_a_python_that_can_is_used_after_one_that_cannot(tmp_path):
    bad = python_without_venv(tmp_path / "py")
    said = []
    used = python_setup.create_env(tmp_path / "env", [str(bad), str(BASE_PYTHON)], said.append)
    assert used == str(BASE_PYTHON)
    assert base.venv_python(tmp_path / "env").exists()
    assert "with Python 3." in said[-1]


def test_extras_are_one_list(monkeypatch):
    assert install.base.OPTIONAL_EXTRAS is base.OPTIONAL_EXTRAS
    assert set(base.OPTIONAL_EXTRAS) == {"int8", "landmarks", "enhance", "ray", "url", "identity"}
    assert set(base.EXTRA_HELP) == set(base.OPTIONAL_EXTRAS)


def _wait(task, until, timeout=240.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if until(task):
            return
        if not task.running():
            break
        time.sleep(0.05)
    raise AssertionError(f"never happened; events: {task.events[-10:]}")


def test_cancelled_set_up_leaves_nothing_trusted(tmp_path):
    """Cancel while pip runs: no stamp, the config no longer names the engine, and the next
    set-up installs again instead of calling it up to date."""
    env, cfg = tmp_path / "engine", tmp_path / "config"
    # An earlier set-up had recorded this engine (and the stamp said it was complete).
    python_setup.create_env(env, [str(BASE_PYTHON)], lambda _m: None)
    (env / base.STAMP_FILE).write_text("from an earlier set-up\n")
    config.record_config(cfg, **{config.CONFIG_PYTHON: str(base.venv_python(env)), config.CONFIG_CHECKPOINT: "/w/a.pth"})
    o = setup.Options(env=env, source=ROOT, pythons=(str(BASE_PYTHON),), config_dirs=(cfg,))
    task = setup_task.Task(setup_task.setup_args(o)).start()
    _wait(task, lambda t: any("log" in e for e in t.events))  # pip is at work
    task.cancel()
    assert not task.running() and task.result() == {"ok": False, "error": "cancelled"}
    assert not (env / base.STAMP_FILE).exists() and not base.installed(env)
    recorded = json.loads((cfg / config.CONFIG_NAME).read_text())
    assert config.CONFIG_PYTHON not in recorded and recorded[config.CONFIG_CHECKPOINT] == "/w/a.pth"
    # The next run does not trust what is there: it goes to pip again.
    again = setup_task.Task(setup_task.setup_args(o)).start()
    try:
        _wait(again, lambda t: any("log" in e for e in t.events))
        assert not any("up to date" in str(e.get("text", "")) for e in again.events)
    finally:
        again.cancel()


def test_the_source_stamp_covers_the_cores_subpackages(tmp_path):
    """An edit in any module of the core, one in a subpackage too, is a new engine: the stamp
    changes, so the next set-up runs pip instead of calling the environment up to date."""
    import shutil

    (tmp_path / "pyproject.toml").write_text("[project]\n")
    shutil.copytree(ROOT / "wav2lip_core", tmp_path / "wav2lip_core", ignore=shutil.ignore_patterns("__pycache__"))
    before = pip.source_stamp(tmp_path, "")
    assert pip.source_stamp(tmp_path, "") == before
    deep = next(p for p in sorted((tmp_path / "wav2lip_core").rglob("*.py")) if p.parent.name == "sync")
    deep.write_text(deep.read_text() + "\n# edited\n")
    assert pip.source_stamp(tmp_path, "") != before
