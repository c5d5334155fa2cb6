"""Set Up Engine in the add-on's preferences: its operators, the one set-up at a time and its
background work (the set-up, the status table, the checks of picked weight files), polled.
What the preferences and the Lip Sync panel show of it is engine_draw.py's.

The work itself is engine_setup.py's (shared with install.py). In a window it runs as a
background process that a timer polls, so Blender stays responsive; in background mode
(`blender -b`) the operator runs it to the end before it returns. Nothing here runs a process
while drawing: the status table and file checks are cached and refreshed in the background.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import bpy
from bpy.types import Context

from . import compat, engine_setup, job_settings, setup_base, setup_pip, setup_python, setup_status, setup_task
from . import engine_python as engine_python_lookup

TICK_S = 0.25
SETUP_IDNAME = "wav2lip.setup_engine"


@dataclass
class Verified:
    """A picked file's check: the path it is for, and the engine's one line (ok) or why not."""

    path: str
    ok: Optional[bool]  # None while it runs
    text: str


@dataclass
class EngineState:
    """The add-on's one set-up at a time, the cached status table and the file checks."""

    task: Optional[setup_task.Task] = None
    env: Optional[Path] = None
    options: Optional[engine_setup.Options] = None
    message: str = ""  # the last set-up's outcome
    failed: bool = False
    check: Optional[setup_task.Task] = None
    rows: Optional[List[Tuple[str, bool, str, bool]]] = None
    verify: Dict[str, Tuple[str, setup_task.Task]] = field(default_factory=dict)
    verified: Dict[str, Verified] = field(default_factory=dict)
    ticks: int = 0


state = EngineState()


def engine_env() -> Path:
    """Where install.py puts the engine (WAV2LIP_ENGINE_VENV overrides)."""
    return setup_base.default_venv().expanduser().resolve()


def config_dir() -> Path:
    return Path(bpy.utils.user_resource("CONFIG"))


def setting_up() -> bool:
    return state.task is not None and state.task.running()


def setup_fraction() -> Tuple[float, str, str]:
    return state.task.progress() if state.task is not None else (0.0, "", "")


# --- what a set-up installs -----------------------------------------------------------------

def options(prefs: Any, op: Any = None) -> engine_setup.Options:
    """The set-up the preferences ask for; the operator's own non-empty properties win (scripts)."""
    extras = tuple(x for x in setup_base.OPTIONAL_EXTRAS if prefs is not None and getattr(prefs, extra_prop(x), False))
    op_extras = str(getattr(op, "extras", "") or "")
    if op_extras:
        extras = tuple(x.strip() for x in op_extras.split(",") if x.strip())
        unknown = [x for x in extras if x not in setup_base.OPTIONAL_EXTRAS]
        if unknown:
            raise setup_base.SetupError(f"unknown optional part {', '.join(unknown)}: choose from "
                                          f"{', '.join(setup_base.OPTIONAL_EXTRAS)}")
    index = str(getattr(op, "torch_index_url", "") or (getattr(prefs, "torch_index_url", "") if prefs else "")).strip()
    wheels = str(getattr(op, "find_links", "") or (getattr(prefs, "wheels_dir", "") if prefs else "")).strip()
    wheels = os.path.normpath(bpy.path.abspath(wheels)) if wheels else ""
    if wheels and not os.path.isdir(wheels):
        raise setup_base.SetupError(f"the wheels folder {wheels} does not exist: pick the folder that holds the "
                                      "engine's wheels")
    if not wheels and compat.online_access() is False:
        raise setup_base.SetupError(OFFLINE)
    python = str(getattr(op, "python", "") or "")
    pythons = (python,) if python else tuple(setup_python.python_candidates([sys.executable]))
    return engine_setup.Options(env=engine_env(), source=setup_pip.engine_source(), extras=extras,
                                torch_index_url=index, find_links=wheels, pythons=pythons,
                                config_dirs=(config_dir(),))


OFFLINE = ("Blender's Allow Online Access is off (Preferences > System > Network): allow it, or pick a "
           "Wheels Folder holding the engine's wheels (made online with: pip download ENGINE_SRC setuptools "
           "wheel -d FOLDER)")


def extra_prop(name: str) -> str:
    return f"setup_{name}"


# --- the background work, polled --------------------------------------------------------------

def poll() -> bool:
    """Take in what finished; whether anything still runs."""
    task = state.task
    if task is not None and not task.running() and state.options is not None:
        result = task.result() or {}
        if task.cancelled:
            # The script untrusted the environment before changing it; make sure, whatever the
            # moment the kill came.
            engine_setup.untrust(state.options)
            state.message, state.failed = "Set-up cancelled: the engine is not set up (press Set Up Engine again)", True
        elif result.get("ok"):
            state.message, state.failed = f"Engine set up: {result.get('python', '')}", False
        else:
            state.message, state.failed = f"Set-up failed: {result.get('error', 'unknown error')}", True
        print(f"Wav2Lip: {state.message}", flush=True)
        state.task, state.options = None, None
        start_check()
        recheck_picked()
    if state.check is not None and not state.check.running():
        result = state.check.result() or {}
        state.rows = [tuple(r) for r in result.get("rows", [])] if result.get("ok") else [  # type: ignore[misc]
            ("engine", False, str(result.get("error", "the check failed")), True)]
        state.check = None
    for kind, (path, t) in list(state.verify.items()):
        if not t.running():
            result = t.result() or {}
            ok = bool(result.get("ok"))
            state.verified[kind] = Verified(path, ok, str(result.get("text" if ok else "error", "")))
            del state.verify[kind]
    return setting_up() or state.check is not None or bool(state.verify)


def _tick() -> Optional[float]:
    state.ticks += 1
    busy = poll()
    wm: Any = getattr(bpy.context, "window_manager", None)
    for window in (wm.windows if wm is not None else []):
        for area in window.screen.areas:
            if area.type in ("PREFERENCES", "SEQUENCE_EDITOR"):
                area.tag_redraw()
    return TICK_S if busy else None


def _watch() -> None:
    if not bpy.app.background and not bpy.app.timers.is_registered(_tick):
        bpy.app.timers.register(_tick, first_interval=TICK_S)


def start_check() -> None:
    """The status table, computed in a background process (cached until the next Refresh)."""
    if state.check is not None and state.check.running():
        return
    prefs = job_settings.addon_prefs(bpy.context)
    args = ["check", "--venv", str(engine_env()), "--config-dir", str(config_dir())]
    if prefs is not None and prefs.checkpoint:
        args += ["--checkpoint", os.path.normpath(bpy.path.abspath(prefs.checkpoint))]
    if prefs is not None and prefs.detector_weights:
        args += ["--detector-weights", os.path.normpath(bpy.path.abspath(prefs.detector_weights))]
    state.check = setup_task.Task(args).start()
    _watch()


def engine_python() -> str:
    """The engine a job would use now (preference, recorded, or the set-up one), '' if none."""
    prefs = job_settings.addon_prefs(bpy.context)
    for c in (job_settings.configured_now(prefs) if prefs is not None else []):
        if c.label == "Engine Python" and c.value and os.path.isfile(c.value):
            return c.value
    env = engine_env()
    if setup_base.installed(env):
        return str(setup_base.venv_python(env))
    # No set-up here, but a job may still find one (a checkout's .venv, say): the cached lookup.
    return engine_python_lookup.found_in_background(prefs.engine_python if prefs is not None else "") or ""


def verify_picked(kind: str, value: str) -> None:
    """Check a file picked in Checkpoint ("checkpoint") or Detector Weights ("detector") in the
    background; its line shows under the field."""
    path = os.path.normpath(bpy.path.abspath(value)) if value else ""
    state.verify.pop(kind, None)
    if not path:
        state.verified.pop(kind, None)
        return
    py = engine_python()
    if not py:
        state.verified[kind] = Verified(path, None, "checked once the engine is set up")
        return
    state.verified[kind] = Verified(path, None, "checking…")
    state.verify[kind] = (path, setup_task.Task(["verify", kind, path, "--engine-python", py]).start())
    _watch()


def recheck_picked() -> None:
    prefs = job_settings.addon_prefs(bpy.context)
    if prefs is not None:
        verify_picked("checkpoint", prefs.checkpoint)
        verify_picked("detector", prefs.detector_weights)


# --- operators ------------------------------------------------------------------------------

class WAV2LIP_OT_setup_engine(bpy.types.Operator):
    """Build the engine environment (torch, the lip-sync core) with pip, from the add-on's own
    sources; in the background, with a progress bar (background mode: to the end)"""

    bl_idname = SETUP_IDNAME
    bl_label = "Set Up Engine"
    bl_options = {"REGISTER"}

    extras: bpy.props.StringProperty(  # type: ignore[valid-type]
        name="Optional Parts", default="", options={"SKIP_SAVE"},
        description="Comma-separated optional parts (empty: the preferences' checkboxes)")
    torch_index_url: bpy.props.StringProperty(  # type: ignore[valid-type]
        name="Torch Index URL", default="", options={"SKIP_SAVE"})
    find_links: bpy.props.StringProperty(  # type: ignore[valid-type]
        name="Wheels Folder", default="", subtype="DIR_PATH", options={"SKIP_SAVE"})
    python: bpy.props.StringProperty(  # type: ignore[valid-type]
        name="Python", default="", subtype="FILE_PATH", options={"SKIP_SAVE"},
        description="The Python to make the environment with (empty: Blender's own, else one found on the machine)")

    def execute(self, context: Context) -> set:
        if setting_up():
            self.report({"ERROR"}, "Set Up Engine is already running: wait for it, or press Cancel")
            return {"CANCELLED"}
        prefs = job_settings.addon_prefs(context)
        try:
            o = options(prefs, self)
        except setup_base.SetupError as e:
            return self._fail(str(e))
        if bpy.app.background:
            return self._run_here(o)
        state.message, state.failed, state.rows = "", False, None
        state.options = o
        state.task = setup_task.Task(setup_task.setup_args(o)).start()
        _watch()
        return {"FINISHED"}

    def _run_here(self, o: engine_setup.Options) -> set:
        """Background mode: no timers run, so the set-up runs to the end before returning."""
        last = [-1]

        def progress(f: float, text: str) -> None:
            pct = int(f * 100)
            if text or pct >= last[0] + 10:
                last[0] = pct
                print(f"Set Up Engine: {pct} %" + (f" {text}" if text else ""), flush=True)

        try:
            py = engine_setup.set_up(o, progress)
        except (setup_base.SetupError, OSError) as e:
            return self._fail(str(e))
        state.message, state.failed = f"Engine set up: {py}", False
        state.rows = setup_status.addon_status(o.env, config_dir())
        for item, ok, detail, needed in state.rows:
            print(f"  {item:<20} {'ok' if ok else ('MISSING' if needed else 'missing'):<7} {detail}", flush=True)
        self.report({"INFO"}, state.message)
        return {"FINISHED"}

    def _fail(self, why: str) -> set:
        state.message, state.failed = f"Set-up failed: {why}", True
        self.report({"ERROR"}, why)
        return {"CANCELLED"}


class WAV2LIP_OT_setup_engine_cancel(bpy.types.Operator):
    """Stop Set Up Engine; the half-made engine is not used (press Set Up Engine again)"""

    bl_idname = "wav2lip.setup_engine_cancel"
    bl_label = "Cancel Set-Up"
    bl_options = {"REGISTER"}

    def execute(self, context: Context) -> set:
        if state.task is None:
            return {"CANCELLED"}
        state.task.cancel()
        poll()
        return {"FINISHED"}


class WAV2LIP_OT_engine_status(bpy.types.Operator):
    """Check the engine again (the install.py --check table), in the background"""

    bl_idname = "wav2lip.engine_status"
    bl_label = "Refresh"
    bl_options = {"REGISTER"}

    def execute(self, context: Context) -> set:
        if bpy.app.background:
            state.rows = setup_status.addon_status(engine_env(), config_dir())
        else:
            start_check()
        return {"FINISHED"}


classes = (WAV2LIP_OT_setup_engine, WAV2LIP_OT_setup_engine_cancel, WAV2LIP_OT_engine_status)


def register() -> None:
    for cls in classes:
        bpy.utils.register_class(cls)


def unregister() -> None:
    if bpy.app.timers.is_registered(_tick):
        bpy.app.timers.unregister(_tick)
    for task in [state.task, state.check, *(t for _p, t in state.verify.values())]:
        if task is not None:
            task.cancel()
    if state.options is not None:
        engine_setup.untrust(state.options)
    state.__init__()  # type: ignore[misc]
    for cls in reversed(classes):
        bpy.utils.unregister_class(cls)
