"""The add-on preferences and the per-scene settings (the panel's), as Blender properties, and how
the preferences draw. What a job makes of them is job_settings.py's; Set Up Engine's box and the
checks of picked files are engine_ui.py's and engine_draw.py's.
"""

from __future__ import annotations

from typing import Any, Optional

import bpy
from bpy.types import Context

from . import engine_draw, engine_ui
from .job_settings import (ADDON_ID, ALIGNS, BLENDS, DEFAULT_DETECTOR, DEFAULT_DEVICE, DEFAULT_OUTPUT_DIR,
                           DEFAULT_PRECISION, DETECTORS, DEVICES, PRECISIONS, SILENCES, Configured, configured_now)
from .setup_base import EXTRA_HELP, OPTIONAL_EXTRAS
from .wire import protocol


def _checkpoint_picked(self: Any, _context: Context) -> None:
    engine_ui.verify_picked("checkpoint", self.checkpoint)


def _detector_picked(self: Any, _context: Context) -> None:
    engine_ui.verify_picked("detector", self.detector_weights)


class WAV2LIP_AddonPreferences(bpy.types.AddonPreferences):
    bl_idname = ADDON_ID

    checkpoint: bpy.props.StringProperty(  # type: ignore[valid-type]
        name="Checkpoint", subtype="FILE_PATH", default="", update=_checkpoint_picked,
        description="Wav2Lip checkpoint file (.pth), e.g. wav2lip_gan.pth (checked by the engine when picked)",
    )
    detector: bpy.props.EnumProperty(  # type: ignore[valid-type]
        name="Face Detector", items=DETECTORS, default=DEFAULT_DETECTOR,
    )
    detector_weights: bpy.props.StringProperty(  # type: ignore[valid-type]
        name="Detector Weights", subtype="FILE_PATH", default="", update=_detector_picked,
        description="Weights of the face detector (empty: the engine's default location)",
    )
    torch_index_url: bpy.props.StringProperty(  # type: ignore[valid-type]
        name="Torch Index URL", default="",
        description="Set Up Engine: pip index for a torch build, e.g. https://download.pytorch.org/whl/cu124 "
        "(CUDA) or .../rocm6.2 (ROCm); empty: PyPI's torch",
    )
    wheels_dir: bpy.props.StringProperty(  # type: ignore[valid-type]
        name="Wheels Folder", subtype="DIR_PATH", default="",
        description="Set Up Engine without network: a local folder holding the engine's wheels "
        "(pip --no-index --find-links); empty: download from PyPI",
    )
    box: bpy.props.IntVectorProperty(  # type: ignore[valid-type]
        name="Face Box", size=4, default=(0, 0, 0, 0), min=0,
        description="Top, bottom, left, right of the face in pixels (Fixed box detector)",
    )
    device: bpy.props.EnumProperty(  # type: ignore[valid-type]
        name="Device", items=DEVICES, default=DEFAULT_DEVICE,
    )
    precision: bpy.props.EnumProperty(  # type: ignore[valid-type]
        name="Precision", items=PRECISIONS, default=DEFAULT_PRECISION,
        description="How the model computes: int8 is about twice as fast on a CPU (accuracy unverified)",
    )
    engine_python: bpy.props.StringProperty(  # type: ignore[valid-type]
        name="Engine Python", subtype="FILE_PATH", default="",
        description="Python interpreter of the environment that has wav2lip_core and torch "
        "(set by install.py; empty: find one that can import wav2lip_core)",
    )
    output_dir: bpy.props.StringProperty(  # type: ignore[valid-type]
        name="Output Folder", subtype="DIR_PATH", default=DEFAULT_OUTPUT_DIR,
        description="Where synced clips are written (// = beside the .blend file)",
    )
    blend: bpy.props.EnumProperty(  # type: ignore[valid-type]
        name="Blend", items=BLENDS, default=protocol.BLENDS[0][0],
        description="How the synced mouth is blended into the frame",
    )
    silence: bpy.props.EnumProperty(  # type: ignore[valid-type]
        name="Silence", items=SILENCES, default=protocol.SILENCE_HOLD,
        description="What the mouth does where the audio is silent",
    )
    align: bpy.props.EnumProperty(  # type: ignore[valid-type]
        name="Align Face", items=ALIGNS, default=protocol.ALIGN_AUTO,
        description="Level tilted heads before the model (needs the engine's landmarks extra)",
    )
    enhance_weights: bpy.props.StringProperty(  # type: ignore[valid-type]
        name="Restorer Weights", subtype="FILE_PATH", default="",
        description="Face restorer for Enhance face (HD): a GFPGAN v1.3/v1.4, RestoreFormer or CodeFormer "
        "weights file (CodeFormer's licence is non-commercial); never downloaded",
    )
    enhance_fidelity: bpy.props.FloatProperty(  # type: ignore[valid-type]
        name="Fidelity", default=protocol.ENHANCE_FIDELITY_DEFAULT, min=0.0, max=1.0,
        description="CodeFormer only: 0 restores most, 1 stays closest to the synced face",
    )

    def draw(self, context: Context) -> None:
        layout = self.layout
        engine_draw.draw_preferences(layout, context, self)
        # What a job will use, with where it came from: an empty field may still have a value
        # that install.py recorded.
        shown = {c.label: c for c in configured_now(self)}
        layout.prop(self, "checkpoint")
        engine_draw.draw_verified(layout, "checkpoint", self.checkpoint)
        _draw_configured(layout, shown.get("Checkpoint"))
        row = layout.row()
        row.prop(self, "detector")
        row.prop(self, "device")
        row.prop(self, "precision")
        if self.detector == protocol.DETECTOR_BOX:
            layout.prop(self, "box")
        else:
            layout.prop(self, "detector_weights")
            engine_draw.draw_verified(layout, "detector", self.detector_weights)
            _draw_configured(layout, shown.get("Detector Weights"))
        layout.prop(self, "engine_python")
        _draw_configured(layout, shown.get("Engine Python"))
        layout.prop(self, "output_dir")
        row = layout.row()
        row.prop(self, "blend")
        row.prop(self, "silence")
        row.prop(self, "align")
        row = layout.row()
        row.prop(self, "enhance_weights")
        row.prop(self, "enhance_fidelity")


# Set Up Engine's checkboxes, one per optional part (setup_base.OPTIONAL_EXTRAS, the one list).
for _name in OPTIONAL_EXTRAS:
    WAV2LIP_AddonPreferences.__annotations__[engine_ui.extra_prop(_name)] = bpy.props.BoolProperty(
        name=_name, default=False, description=f"Set Up Engine also installs {EXTRA_HELP[_name]}")


def _draw_configured(layout: Any, c: Optional[Configured]) -> None:
    if c is not None:
        layout.label(text=c.text(), icon="INFO" if c.value else "ERROR")


class WAV2LIP_SceneSettings(bpy.types.PropertyGroup):
    mute_source: bpy.props.BoolProperty(  # type: ignore[valid-type]
        name="Mute Source", default=False,
        description="Mute the original strip after inserting the synced clip",
    )
    sync_offset: bpy.props.FloatProperty(  # type: ignore[valid-type]
        name="Sync Offset", default=0.0, soft_min=-5.0, soft_max=5.0, min=-protocol.SYNC_OFFSET_MAX, max=protocol.SYNC_OFFSET_MAX,
        step=10, precision=2,
        description="Shift the mouth against the sound, in frames (fractions allowed; negative: mouth earlier)",
    )
    sync_offset_auto: bpy.props.BoolProperty(  # type: ignore[valid-type]
        name="Auto Sync Offset", default=False,
        description="Sync a few seconds first, measure how far the mouth lags the sound and correct it "
                    f"(within {protocol.SYNC_OFFSET_AUTO_MAX:g} frames, only when the measure is confident); "
                    "the number is not used",
    )
    enhance: bpy.props.BoolProperty(  # type: ignore[valid-type]
        name="Enhance face (HD)", default=False,
        description="Restore the synced mouth with the face restorer set in the add-on preferences (slower)",
    )
    # The panel's Movie from URL fields (url_operators.py)
    fetch_url: bpy.props.StringProperty(  # type: ignore[valid-type]
        name="URL", default="", description="A video's web address (http:// or https://): a page playing it, or the file",
    )
    fetch_from: bpy.props.FloatProperty(  # type: ignore[valid-type]
        name="From", default=0.0, min=0.0, precision=2, description="Start of the part to download, seconds (0: the start)",
    )
    fetch_to: bpy.props.FloatProperty(  # type: ignore[valid-type]
        name="To", default=0.0, min=0.0, precision=2, description="End of the part to download, seconds (0: the end)",
    )
    fetch_channel: bpy.props.IntProperty(  # type: ignore[valid-type]
        name="Channel", default=1, min=1, max=128, description="The movie's channel (or the first free one above)",
    )


classes = (WAV2LIP_AddonPreferences, WAV2LIP_SceneSettings)


def register() -> None:
    for cls in classes:
        bpy.utils.register_class(cls)
    bpy.types.Scene.wav2lip = bpy.props.PointerProperty(type=WAV2LIP_SceneSettings)  # type: ignore[attr-defined]
    engine_ui.register()


def unregister() -> None:
    engine_ui.unregister()
    if hasattr(bpy.types.Scene, "wav2lip"):
        del bpy.types.Scene.wav2lip  # type: ignore[attr-defined]
    for cls in reversed(classes):
        bpy.utils.unregister_class(cls)
