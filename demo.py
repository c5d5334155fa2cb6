#!/usr/bin/env python3
"""Lip-sync a demo (or your own --face/--audio) through headless Blender with the add-on.

Run by `python3 install.py --demo` with the engine environment's Python. Steps: prepare the
inputs, build a .blend with an image/movie strip and a sound strip, run the add-on's operator
headless (blender_addon/headless.py), render the sequencer, print where everything is.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
DEMO_TEXT = "Hello from Blender. This portrait is speaking new dialogue, one frame at a time."


def banner(lines: list[str]) -> None:
    width = max(len(s) for s in lines) + 4
    print("\n" + "!" * width, *(f"! {s:<{width - 4}} !" for s in lines), "!" * width + "\n", sep="\n", flush=True)


def demo_face(out_dir: Path) -> Path:
    """A still portrait that ships with scikit-image (a face-alignment dependency)."""
    import cv2
    from skimage import data

    path = out_dir / "portrait.png"
    cv2.imwrite(str(path), cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR))
    return path


def demo_speech(out_dir: Path) -> Path:
    """Speech made locally with espeak-ng; without it, a syllable-rhythm vowel babble."""
    path = out_dir / "speech.wav"
    espeak = shutil.which("espeak-ng") or shutil.which("espeak")
    if espeak and subprocess.run([espeak, "-w", str(path), "-s", "150", DEMO_TEXT], capture_output=True).returncode == 0:
        return path
    import wave

    import numpy as np

    sr, seconds = 16000, 4.0
    t = np.arange(int(sr * seconds)) / sr
    syllables = np.clip(np.sin(2 * np.pi * 4.0 * t), 0, None) ** 2  # ~4 syllables per second
    pitch = 120 + 20 * np.sin(2 * np.pi * 0.5 * t)
    phase = 2 * np.pi * np.cumsum(pitch) / sr
    voice = sum(np.sin(k * phase) / k for k in range(1, 12))
    signal = 0.3 * syllables * voice / np.abs(voice).max()
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sr)
        w.writeframes((signal * 32767).astype(np.int16).tobytes())
    print("espeak-ng not found: using a synthetic babble as the demo dialogue (apt-get install espeak-ng for speech)")
    return path


def make_scene(face: str, audio: str, blend: str, width: int, height: int, is_image: bool, fps: int = 25) -> None:
    """Build the demo .blend. Runs inside Blender's own Python (or a Python with the bpy module),
    which has nothing but bpy: the picture's size and kind are the engine's (the caller's)."""
    import importlib.util

    import bpy

    # compat.py alone (it needs only bpy), not the add-on package: building a scene must not
    # depend on the add-on loading in this Blender.
    spec = importlib.util.spec_from_file_location("wav2lip_demo_compat", ROOT / "blender_addon" / "compat.py")
    assert spec is not None and spec.loader is not None
    compat = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(compat)

    bpy.ops.wm.read_factory_settings(use_empty=True)
    scene = bpy.context.scene
    scene.render.fps, scene.render.fps_base = fps, 1.0
    ed = compat.editor(scene, create=True)
    sound = compat.new_sound(ed, "Dialogue", audio, channel=1, frame_start=1)
    if is_image:
        strip = compat.new_image(ed, "Face", face, channel=2, frame_start=1)
        strip.frame_final_duration = sound.frame_final_duration
    else:
        strip = compat.new_movie(ed, "Face", face, channel=2, frame_start=1)
    scene.frame_start, scene.frame_end = 1, max(strip.frame_final_end, sound.frame_final_end) - 1
    scene.render.resolution_x, scene.render.resolution_y = width, height
    scene.render.resolution_percentage = 100
    bpy.ops.wm.save_as_mainfile(filepath=blend, relative_remap=True)
    if not os.path.isfile(blend):
        raise RuntimeError(f"Blender did not write {blend}")


def picture(path: Path) -> tuple[int, int, bool]:
    """Width and height for the render (even: H.264 needs it), and whether it is a still image
    (the core's probe decides, as it will for the sync). Runs in the engine's Python."""
    from wav2lip_core.media.probe import probe_video

    info = probe_video(str(path))
    return info.width - info.width % 2, info.height - info.height % 2, info.is_image


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--face")
    ap.add_argument("--audio")
    ap.add_argument("--checkpoint")
    ap.add_argument("--blender", help="Blender executable (default: the bpy module in this Python)")
    ap.add_argument("--out-dir", type=Path, default=Path("wav2lip-demo"))
    # The command that set this up (with its --venv): what the user re-runs with a checkpoint.
    ap.add_argument("--install-command", default="python3 install.py", help=argparse.SUPPRESS)
    ap.add_argument("--make-scene", nargs=6, metavar=("FACE", "AUDIO", "BLEND", "WIDTH", "HEIGHT", "KIND"),
                    help=argparse.SUPPRESS)
    argv = sys.argv[sys.argv.index("--") + 1:] if "--" in sys.argv else sys.argv[1:]
    a = ap.parse_args(argv)
    if a.make_scene:
        face, audio, blend, width, height, kind = a.make_scene
        make_scene(face, audio, blend, int(width), int(height), is_image=kind == "image")
        return 0

    out = a.out_dir.resolve()
    out.mkdir(parents=True, exist_ok=True)
    face = Path(a.face).resolve() if a.face else demo_face(out)
    audio = Path(a.audio).resolve() if a.audio else demo_speech(out)
    for p in (face, audio):
        if not p.is_file():
            print(f"error: file not found: {p}", file=sys.stderr)
            return 1
    checkpoint = a.checkpoint
    untrained = checkpoint is None
    if untrained:
        from wav2lip_core.model.checkpoint import save_untrained_checkpoint

        checkpoint = str(save_untrained_checkpoint(out / "untrained_wav2lip.pth", seed=0))
        banner(["NO TRAINED WAV2LIP CHECKPOINT: running with UNTRAINED weights (seeded, made here).",
                "The output goes through the whole path but is NOT lip-synced.",
                "Get wav2lip_gan.pth from the Wav2Lip authors (research/non-commercial licence),",
                f"then: {a.install_command} --checkpoint PATH --demo"])

    blend = out / "demo.blend"
    render = out / "demo_render.mp4"
    for stale in (blend, render):  # so what is printed at the end is this run's
        stale.unlink(missing_ok=True)
    from wav2lip_core.errors import Wav2LipError

    try:
        width, height, is_image = picture(face)
    except Wav2LipError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    scene_args = ["--make-scene", str(face), str(audio), str(blend), str(width), str(height), "image" if is_image else "movie"]
    if a.blender:
        # --python-exit-code: a failing script fails the command (Blender exits 0 otherwise).
        blender = [a.blender, "-b", "--factory-startup", "--python-exit-code", "1"]
        scene_cmd = [*blender, "--python", __file__, "--", *scene_args]
        sync_cmd = [*blender, str(blend), "--python", str(ROOT / "blender_addon" / "headless.py"), "--"]
    else:
        scene_cmd = [sys.executable, __file__, *scene_args]
        sync_cmd = [sys.executable, str(ROOT / "blender_addon" / "headless.py"), "--blend", str(blend), "--"]
    env = {**os.environ, "WAV2LIP_PYTHON": sys.executable}
    if subprocess.run(scene_cmd, env=env).returncode != 0 or not blend.is_file():
        print("error: could not build the demo scene (see above)", file=sys.stderr)
        return 1
    detector = ["--detector", "haar"]
    sync_cmd += ["--video-strip", "Face", "--audio-strip", "Dialogue", "--checkpoint", checkpoint, *detector,
                 "--engine-python", sys.executable, "--render", str(render), "--save"]
    how = f"Blender {a.blender}" if a.blender else "the bpy module"
    print(f"lip-syncing through headless Blender ({how}) with the add-on ...", flush=True)
    if subprocess.run(sync_cmd, env=env).returncode != 0 or not render.is_file():
        print("error: the headless lip-sync failed (see above)", file=sys.stderr)
        return 1
    synced = sorted((out / "lipsync").glob("*.mp4"), key=lambda p: p.stat().st_mtime)
    print(f"\nsynced clip:      {synced[-1] if synced else out / 'lipsync'}")
    print(f"rendered output:  {render}")
    print(f"Blender file:     {blend}")
    if untrained:
        print("(untrained weights: the mouth moves but does not follow the speech)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
