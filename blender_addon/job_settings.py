"""What a job uses, as plain values: the add-on preferences (with an operator's overrides and the
scene's own settings) read into `Settings`, where each path setting comes from (`Configured`:
the preference, else what install.py or Set Up Engine recorded, else torch's cache), and the
folder the clips go to. The choice lists the preferences and operators offer are here too.

It reads the preferences; preferences.py declares them (and draws them with engine_ui.py).
"""

from __future__ import annotations

import getpass
import os
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, List, Optional, Tuple

import bpy
from bpy.types import Context

from . import engine_config
from .wire import protocol

ADDON_ID = __package__ or "blender_addon"

# The engine's choice lists (protocol.py), plus the add-on's own "Fixed box" (the engine's --box).
DETECTORS = [tuple(c) for c in protocol.DETECTORS] + [
    (protocol.DETECTOR_BOX, "Fixed box", "No detection: use the same face box on every frame"),
]
DEVICES = [tuple(c) for c in protocol.DEVICES]
PRECISIONS = [tuple(c) for c in protocol.PRECISIONS]
BLENDS = [tuple(c) for c in protocol.BLENDS]
SILENCES = [tuple(c) for c in protocol.SILENCES]
ALIGNS = [tuple(c) for c in protocol.ALIGNS]
DEFAULT_DETECTOR = protocol.DETECTORS[0][0]  # "auto"
DEFAULT_DEVICE = protocol.DEVICES[0][0]
DEFAULT_PRECISION = protocol.PRECISIONS[0][0]  # "auto": exact fp32 on a CPU
DEFAULT_OUTPUT_DIR = "//lipsync/"


@dataclass
class Settings:
    """Preferences as plain values, with operator overrides applied."""

    checkpoint: str = ""
    detector: str = DEFAULT_DETECTOR
    detector_weights: str = ""
    box: Optional[Tuple[int, int, int, int]] = None
    device: str = DEFAULT_DEVICE
    precision: str = DEFAULT_PRECISION
    engine_python: str = ""
    output_dir: str = DEFAULT_OUTPUT_DIR
    blend: str = protocol.BLENDS[0][0]
    silence: str = protocol.SILENCE_HOLD
    align: str = protocol.ALIGN_AUTO
    enhance_weights: str = ""
    enhance_fidelity: float = protocol.ENHANCE_FIDELITY_DEFAULT
    sync_offset: float = 0.0  # per scene (the panel)
    sync_offset_auto: bool = False  # per scene (the panel's Auto): --sync-offset auto
    enhance: bool = False  # per scene (the panel)


def quality_args(s: Settings) -> List[str]:
    """The engine options for the quality settings (issue 11's), all spelled out."""
    P = protocol
    args = [P.OPT_BLEND, s.blend, P.OPT_SILENCE, s.silence, P.OPT_ALIGN, s.align]
    if s.sync_offset_auto:
        args += [P.OPT_SYNC_OFFSET, P.SYNC_OFFSET_AUTO]
    elif s.sync_offset:
        args += [P.OPT_SYNC_OFFSET, P.plain_number(s.sync_offset)]
    if s.enhance:
        args += [P.OPT_ENHANCE, s.enhance_weights, P.OPT_ENHANCE_FIDELITY, P.plain_number(s.enhance_fidelity)]
    return args


def addon_prefs(context: Optional[Context]) -> Any:
    if context is None:
        return None
    prefs: Any = context.preferences  # (Any: the stubs type Context's properties oddly)
    addon = prefs.addons.get(ADDON_ID) if prefs is not None else None
    return addon.preferences if addon is not None else None


def settings_from(context: Optional[Context], op: Any = None, scene_settings: Any = None) -> Settings:
    """Preferences (when the add-on is enabled through Blender) overridden by the operator's
    non-empty properties (used by scripts and the headless runner), with the scene's own
    (sync offset, enhance) from the panel."""
    s = Settings()
    p = addon_prefs(context)
    if scene_settings is not None:
        s.sync_offset = float(getattr(scene_settings, "sync_offset", 0.0))
        s.sync_offset_auto = bool(getattr(scene_settings, "sync_offset_auto", False))
        s.enhance = bool(getattr(scene_settings, "enhance", False))
    if p is not None:
        s.blend, s.silence, s.align = p.blend, p.silence, p.align
        s.enhance_weights = p.enhance_weights
        s.enhance_fidelity = float(p.enhance_fidelity)
        s.checkpoint = p.checkpoint
        s.detector = p.detector
        s.detector_weights = p.detector_weights
        s.device = p.device
        s.precision = p.precision
        s.engine_python = p.engine_python
        s.output_dir = p.output_dir or DEFAULT_OUTPUT_DIR
        if p.detector == protocol.DETECTOR_BOX:
            s.box = _box(tuple(p.box))
    if op is not None:
        for name in ("checkpoint", "detector_weights", "engine_python", "output_dir"):
            value = getattr(op, name, "")
            if value:
                setattr(s, name, value)
        if getattr(op, "detector", "") not in ("", "PREFS"):
            s.detector = op.detector
        if getattr(op, "device", "") not in ("", "PREFS"):
            s.device = op.device
        if getattr(op, "precision", "") not in ("", "PREFS"):
            s.precision = op.precision
        for name in ("blend", "silence", "align"):
            if getattr(op, name, "") not in ("", "PREFS"):
                setattr(s, name, getattr(op, name))
        if getattr(op, "enhance_weights", ""):  # a restorer given to the operator: enhance with it
            s.enhance_weights, s.enhance = op.enhance_weights, True
        for name in ("sync_offset", "enhance_fidelity"):  # only when the caller set them
            if getattr(op, name, None) is not None and _is_set(op, name):
                setattr(s, name, float(getattr(op, name)))
        if s.detector == protocol.DETECTOR_BOX:
            obox = _box(tuple(getattr(op, "box", (0, 0, 0, 0))))
            s.box = obox or s.box
    if not s.engine_python or not s.checkpoint:  # what install.py recorded (the engine reads
        recorded = installed_config()            # the detector weights' record itself)
        s.engine_python = s.engine_python or str(recorded.get(protocol.CONFIG_PYTHON, "") or "")
        s.checkpoint = s.checkpoint or str(recorded.get(protocol.CONFIG_CHECKPOINT, "") or "")
    s.checkpoint = _abs(s.checkpoint)
    s.detector_weights = _abs(s.detector_weights)
    s.enhance_weights = _abs(s.enhance_weights)
    s.engine_python = _abs(s.engine_python) if os.sep in s.engine_python or "//" in s.engine_python else s.engine_python
    return s


def _is_set(op: Any, name: str) -> bool:
    props = getattr(op, "properties", None)
    return bool(props is not None and props.is_property_set(name))


def detector_hint(s: Settings) -> str:
    """What "Auto" will run, for the panel (the engine decides and reports it in the end): BlazeFace
    where its weights are (preference, install.py's record, torch's hub cache), else Haar."""
    if s.detector != protocol.DETECTOR_AUTO:
        return ""
    recorded = str(installed_config().get(protocol.CONFIG_DETECTOR_WEIGHTS, "") or "")
    hub = os.path.join(protocol.torch_hub_checkpoints(), protocol.BLAZEFACE_FILES["blazeface"][0])
    if any(p and os.path.isfile(p) for p in (s.detector_weights, recorded, hub)):
        return "Auto: BlazeFace"
    return "Auto: Haar; set Detector Weights for BlazeFace"


@dataclass(frozen=True)
class Configured:
    """A path setting as a job will use it: its value and where that came from."""

    label: str  # "Checkpoint"
    value: str  # the path, "" when not set
    source: str  # "preferences", "install.py", ...; "" when not set
    unset: str  # what happens without one

    def text(self, short: bool = False) -> str:
        """One line for the panel (short: the file's name) or the preferences (the whole path)."""
        if not self.value:
            return f"{self.label}: (not set: {self.unset})"
        shown = os.path.basename(self.value.rstrip("/\\")) if short else self.value
        is_path = os.sep in self.value or bool(os.altsep and os.altsep in self.value)  # (not a bare `python3`)
        missing = "; file not found" if is_path and not os.path.exists(self.value) else ""
        return f"{self.label}: {shown or self.value} (from {self.source}{missing})"


def configured(prefs: Any, recorded: dict, hub_blazeface: str = "") -> List[Configured]:
    """Checkpoint, detector weights (unless the face box is fixed) and engine Python as a job
    started now will use them: the preference, else what install.py recorded (`recorded`, the
    config file), else the detector's weights from torch's cache (`hub_blazeface` when present).
    The same precedence as settings_from and the engine's own search."""

    def pick(label: str, pref: str, key: str, unset: str, extra: Tuple[str, str] = ("", "")) -> Configured:
        if pref:
            return Configured(label, _abs(pref) if os.sep in pref or "//" in pref else pref, "preferences", unset)
        value = str(recorded.get(key, "") or "")
        if value:
            return Configured(label, value, "install.py", unset)
        if extra[0]:
            return Configured(label, extra[0], extra[1], unset)
        return Configured(label, "", "", unset)

    out = [pick("Checkpoint", prefs.checkpoint, protocol.CONFIG_CHECKPOINT,
                "pick a Wav2Lip .pth file, or run install.py --checkpoint FILE")]
    if prefs.detector != protocol.DETECTOR_BOX:
        haar = "Auto uses Haar" if prefs.detector == protocol.DETECTOR_AUTO else "the engine's default location"
        out.append(pick("Detector Weights", prefs.detector_weights, protocol.CONFIG_DETECTOR_WEIGHTS, haar,
                        (hub_blazeface, "torch's cache") if hub_blazeface else ("", "")))
    out.append(pick("Engine Python", prefs.engine_python, protocol.CONFIG_PYTHON,
                    "searched for when you sync"))
    return out


def configured_now(prefs: Any) -> List[Configured]:
    """`configured` with install.py's record and torch's cache as they are now."""
    hub = os.path.join(protocol.torch_hub_checkpoints(), protocol.BLAZEFACE_FILES["blazeface"][0])
    return configured(prefs, installed_config(), hub if os.path.isfile(hub) else "")


def installed_config() -> dict:
    """The engine Python and checkpoint recorded by install.py or Set Up Engine in Blender's
    config folder (used for empty preferences)."""
    try:
        folder = bpy.utils.user_resource("CONFIG")
    except RuntimeError:
        return {}
    return engine_config.read_config(Path(folder))


def _box(v: tuple) -> Optional[Tuple[int, int, int, int]]:
    if len(v) != 4 or not any(v):
        return None
    return (int(v[0]), int(v[1]), int(v[2]), int(v[3]))


def _abs(path: str) -> str:
    return os.path.normpath(bpy.path.abspath(path)) if path else ""


def output_folder(settings: Settings) -> Tuple[str, str]:
    """(absolute folder, warning or ''). A //-relative folder needs a saved .blend; otherwise a
    private temp folder is used, with a warning."""
    return folder_for(settings.output_dir or DEFAULT_OUTPUT_DIR, "the synced clip")


MEDIA_DIR = "//media/"  # downloaded clips (Movie from URL), beside the .blend


def media_folder() -> Tuple[str, str]:
    """Where Movie from URL puts its downloads: output_folder's rule for `//media/`."""
    return folder_for(MEDIA_DIR, "the downloaded clip")


def folder_for(folder: str, what: str) -> Tuple[str, str]:
    """(absolute folder, warning or '') for a folder setting; `what` goes there (for the warning)."""
    if folder.startswith("//") and not bpy.data.filepath:
        tmp = private_temp_folder(tempfile.gettempdir())
        return tmp, f"the .blend file is not saved: {what} goes to the temp folder {tmp}; save the file and re-run to keep it beside the project"
    return os.path.normpath(bpy.path.abspath(folder)), ""


TEMP_FOLDER_PREFIX = "wav2lip_lipsync-"


def private_temp_folder(base: str) -> str:
    """This user's folder for unsaved files' clips in `base` (the shared temp folder), readable
    by this user only (0700). One that exists but is not this user's own private folder (another
    user's, or a link planted there) is never used: a fresh private one is made instead."""
    getuid = getattr(os, "getuid", None)  # (Windows has none; its temp folder is per user already)
    path = os.path.join(base, TEMP_FOLDER_PREFIX + (str(getuid()) if getuid else getpass.getuser()))
    try:
        os.mkdir(path, 0o700)
        return path
    except FileExistsError:
        if _own_folder(path):
            return path
    except OSError:
        pass
    return tempfile.mkdtemp(prefix=os.path.basename(path) + "-", dir=base)


def _own_folder(path: str) -> bool:
    """Whether `path` is a real folder (not a link) of this user's; made private if it is."""
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode):
        return False
    getuid = getattr(os, "getuid", None)
    if getuid is not None:
        if st.st_uid != getuid():
            return False
        if st.st_mode & 0o077:
            os.chmod(path, 0o700)
    return True
