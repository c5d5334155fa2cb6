"""Lip-sync strips of a .blend without the UI, optionally render the sequencer and save.

    blender -b scene.blend --python blender_addon/headless.py -- --video-strip Face --audio-strip Speech \
        [--checkpoint CKPT.pth] [--detector blazeface --detector-weights W.pth | --box T B L R] \
        [--device auto|cuda|cpu] [--precision auto|fp32|int8] [--engine-python PY] [--output-dir DIR] [--mute-source] \
        [--blend-mode feather|hard|mouth] [--silence hold|sync] [--align auto|off] [--sync-offset F] \
        [--enhance RESTORER.pth [--enhance-fidelity W]] \
        [--render OUT.mp4] [--frame-range START END] [--save]

From an installed add-on (the release zip, install.py) the same script is in Blender's user
folder, and works from there (it needs nothing from a checkout):

    blender -b scene.blend --python ~/.config/blender/3.4/scripts/addons/wav2lip_lipsync/headless.py -- ...
    blender -b scene.blend --python ~/.config/blender/4.2/extensions/user_default/wav2lip_lipsync/headless.py -- ...

or with a Python that has the `bpy` module:

    python blender_addon/headless.py --blend scene.blend -- --video-strip Face ...

Exit code 0 on success, 1 when the sync (or render/save) fails, 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import sys
from typing import Any, Dict, List, Optional, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))


def _protocol() -> Any:
    """The engine protocol's choice lists, loaded without bpy (wire.py beside this file)."""
    spec = importlib.util.spec_from_file_location("_wav2lip_headless_wire", os.path.join(HERE, "wire.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.protocol


def split_argv(argv: List[str]) -> Tuple[Optional[str], List[str]]:
    """(the --blend file, the script's own options). Options follow `--`; `--blend` may come
    before it (plain Python) or after it."""
    if "--" in argv:
        i = argv.index("--")
        pre, opts = argv[:i], argv[i + 1:]
    else:
        pre, opts = argv, []
    blend = None
    if "--blend" in pre and pre.index("--blend") + 1 < len(pre):
        blend = pre[pre.index("--blend") + 1]
    return blend, opts


def parse(opts: List[str], blend: Optional[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="headless.py", description="Lip-sync strips of a .blend without the UI.")
    ap.add_argument("--blend", default=blend, help="the .blend to open (when not opened by Blender)")
    ap.add_argument("--video-strip", required=True)
    ap.add_argument("--audio-strip", default="", help="sound strip (default: the one overlapping the video most)")
    ap.add_argument("--scene", default="", help="scene name (default: the file's active scene)")
    ap.add_argument("--checkpoint", default="")
    P = _protocol()
    ap.add_argument("--detector", default="", choices=("",) + P.names(P.DETECTORS),
                    help="face detector (default: the add-on preferences, else auto)")
    ap.add_argument("--detector-weights", default="")
    ap.add_argument("--box", nargs=4, type=int, metavar=("TOP", "BOTTOM", "LEFT", "RIGHT"))
    ap.add_argument("--device", default="", choices=("",) + P.names(P.DEVICES))
    ap.add_argument("--precision", default="", choices=("",) + P.names(P.PRECISIONS),
                    help="model precision (default: the add-on preferences, else auto); int8 is faster on a CPU")
    ap.add_argument("--blend-mode", default="", choices=("",) + P.names(P.BLENDS),
                    help="the engine's --blend (--blend here is the .blend file); default: the add-on preferences")
    ap.add_argument("--silence", default="", choices=("",) + P.names(P.SILENCES), help="default: the add-on preferences")
    ap.add_argument("--align", default="", choices=("",) + P.names(P.ALIGNS), help="default: the add-on preferences")
    ap.add_argument("--sync-offset", type=float, metavar="FRAMES", help="default: the scene's Sync Offset")
    ap.add_argument("--enhance", default="", metavar="RESTORER", help="restore the mouth with these weights")
    ap.add_argument("--enhance-fidelity", type=float, metavar="W", help="CodeFormer only, 0..1")
    ap.add_argument("--engine-python", default="", help="the engine's interpreter: a path, or a name on PATH")
    ap.add_argument("--output-dir", default="")
    ap.add_argument("--mute-source", action="store_true")
    ap.add_argument("--render", default="", metavar="OUT.mp4", help="render the sequencer to H.264/AAC")
    ap.add_argument("--frame-range", nargs=2, type=int, metavar=("START", "END"),
                    help="frames to render (default: the scene's range)")
    ap.add_argument("--save", action="store_true", help="save the .blend afterwards")
    return ap.parse_args(opts)


def ensure_addon(bpy: Any) -> Any:
    """The add-on's operator, registering this folder's add-on when it is not installed."""
    if hasattr(bpy.types, "SEQUENCER_OT_wav2lip_sync"):
        return None
    parent, name = os.path.split(HERE)
    if parent not in sys.path:
        sys.path.insert(0, parent)
    import addon_utils

    mod = addon_utils.enable(name, default_set=False, handle_error=None)
    if mod is None:  # pragma: no cover - fall back to a plain import
        mod = importlib.import_module(name)
        mod.register()
    return mod


# What rendering changes: restored before --save, so the saved .blend keeps the user's own
# render settings (output path, format, codec, frame range, ...).
_RENDER_ATTRS = ("filepath", "use_file_extension", "use_sequencer")
_SIMPLE = {"BOOLEAN", "INT", "FLOAT", "STRING", "ENUM"}


def _props(struct: Any) -> Dict[str, Any]:
    values: Dict[str, Any] = {}
    for prop in struct.bl_rna.properties:
        if prop.identifier == "rna_type" or prop.is_readonly or prop.type not in _SIMPLE:
            continue
        value = getattr(struct, prop.identifier)
        values[prop.identifier] = tuple(value) if getattr(prop, "is_array", False) else value
    return values


def _restore(struct: Any, values: Dict[str, Any], first: Tuple[str, ...] = ()) -> None:
    # Some enums' items depend on others (a file format on the media type): those go first.
    for name in list(first) + [n for n in values if n not in first]:
        if name not in values:
            continue
        try:
            if getattr(struct, name) != values[name]:
                setattr(struct, name, values[name])
        except (AttributeError, TypeError, ValueError):
            pass  # an option that the restored format does not have


def render_settings(scene: Any) -> Dict[str, Any]:
    r = scene.render
    return {"render": {a: getattr(r, a) for a in _RENDER_ATTRS},
            "image": _props(r.image_settings), "ffmpeg": _props(r.ffmpeg),
            "frames": (scene.frame_start, scene.frame_end)}


def restore_render_settings(scene: Any, saved: Dict[str, Any]) -> None:
    r = scene.render
    _restore(r.image_settings, saved["image"], first=("media_type", "file_format"))
    _restore(r.ffmpeg, saved["ffmpeg"], first=("format", "codec"))
    _restore(r, saved["render"])
    scene.frame_start, scene.frame_end = saved["frames"]


def render(bpy: Any, scene: Any, out: str, frame_range: Optional[List[int]]) -> None:
    compat = importlib.import_module(_addon_package(bpy) + ".compat")
    out = os.path.abspath(bpy.path.abspath(out))
    os.makedirs(os.path.dirname(out), exist_ok=True)
    saved = render_settings(scene)
    try:
        compat.set_ffmpeg_output(scene, out, audio=True)
        scene.render.use_sequencer = True
        if frame_range:
            scene.frame_start, scene.frame_end = frame_range
        window = bpy.context.window
        if window is not None and window.scene != scene:
            window.scene = scene
        bpy.ops.render.render(animation=True, scene=scene.name)
    finally:
        restore_render_settings(scene, saved)
    if not os.path.isfile(out):
        raise RuntimeError(f"rendering wrote no file at {out}")
    print(f"headless: rendered {out}")


def _addon_package(bpy: Any) -> str:
    cls = getattr(bpy.types, "SEQUENCER_OT_wav2lip_sync")
    module = sys.modules.get(cls.__module__)
    return (module.__package__ if module is not None else None) or os.path.basename(HERE)


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv if argv is None else argv)
    blend, opts = split_argv(argv)
    try:
        args = parse(opts, blend)
    except SystemExit as exc:
        return int(exc.code or 0) if exc.code not in (None, 0) else 0
    import bpy

    if args.blend and os.path.abspath(bpy.data.filepath or "") != os.path.abspath(args.blend):
        if not os.path.isfile(args.blend):
            print(f"error: no such .blend file: {args.blend}", file=sys.stderr)
            return 2
        bpy.ops.wm.open_mainfile(filepath=args.blend)
    enabled = ensure_addon(bpy)
    try:
        return run(bpy, args)
    finally:
        if enabled is not None:  # leave nothing registered (Blender 4.5 hangs at exit otherwise)
            import addon_utils

            addon_utils.disable(enabled.__name__, default_set=False, handle_error=None)


def run(bpy: Any, args: argparse.Namespace) -> int:
    scene = bpy.data.scenes.get(args.scene) if args.scene else bpy.context.scene
    if scene is None:
        print(f"error: no scene named '{args.scene}'", file=sys.stderr)
        return 2
    window = bpy.context.window
    if window is not None and window.scene != scene:
        window.scene = scene
    kw: dict = dict(video_strip=args.video_strip, audio_strip=args.audio_strip)
    for name in ("checkpoint", "detector_weights", "engine_python", "output_dir"):
        value = getattr(args, name)
        if name == "engine_python" and value and os.sep not in value and not (os.altsep and os.altsep in value):
            kw[name] = value  # a bare name (`python3`): looked up on PATH by the add-on
        elif value:
            kw[name] = os.path.abspath(value)
    if args.box:
        kw["detector"], kw["box"] = "box", tuple(args.box)
    elif args.detector:
        kw["detector"] = args.detector
    if args.device:
        kw["device"] = args.device
    if args.precision:
        kw["precision"] = args.precision
    for name, value in (("blend", args.blend_mode), ("silence", args.silence), ("align", args.align)):
        if value:
            kw[name] = value
    if args.sync_offset is not None:
        kw["sync_offset"] = args.sync_offset
    if args.enhance:
        kw["enhance_weights"] = os.path.abspath(args.enhance)
    if args.enhance_fidelity is not None:
        kw["enhance_fidelity"] = args.enhance_fidelity
    if args.mute_source:
        kw["mute_source"] = True
    try:
        with bpy.context.temp_override(scene=scene):
            result = bpy.ops.sequencer.wav2lip_sync(**kw)
    except RuntimeError as exc:  # the operator's error report
        print(f"error: {str(exc).replace('Error: ', '', 1).strip()}", file=sys.stderr)
        return 1
    if result != {"FINISHED"}:
        print(f"error: lip sync did not finish ({', '.join(sorted(result))})", file=sys.stderr)
        return 1
    ed = scene.sequence_editor
    new = ed.active_strip if ed is not None else None
    if new is not None:
        print(f"headless: inserted '{new.name}' channel {new.channel} frames "
              f"{new.frame_final_start}-{new.frame_final_end - 1}: {bpy.path.abspath(new.filepath)}")
    try:
        if args.render:
            render(bpy, scene, args.render, args.frame_range)
        if args.save:
            if not bpy.data.filepath:
                print("error: --save needs a .blend that was opened from a file", file=sys.stderr)
                return 1
            bpy.ops.wm.save_mainfile()
            print(f"headless: saved {bpy.data.filepath}")
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    if code:
        sys.exit(code)  # in Blender too: `blender -b ... --python` returns this code
