#!/usr/bin/env python3
"""Set up Wav2Lip for Blender on this machine: one command, safe to re-run.

    python3 install.py                       # engine env + core, add-on into Blender if found
    python3 install.py --checkpoint wav2lip_gan.pth   # also verify and record the weights
    python3 install.py --detector-weights blazeface.pth  # record face detector weights (anchors beside)
    python3 install.py --check               # status table; exit 1 if something needed is missing
    python3 install.py --demo                # set up, then lip-sync the bundled demo headless

Standard library only (Python >= 3.10). It never downloads model weights: when one is
missing it says which file, where to get it, and where to put it. This file reads the command
line and runs the steps in order; each step is a module of installer/ (see its __init__).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from installer import ADDON_ID, ROOT, addon_module, say
from installer.addon import install_addon, stage_addon
from installer.blender import usable_blender, vstr
from installer.engine import BPY_PYTHON, engine_python_version, ensure_engine, install_command
from installer.status import print_status, status_rows

base = addon_module("setup_base")
config = addon_module("engine_config")
weights = addon_module("setup_weights")
InstallError = base.SetupError  # a step failed; the message (one line) says what to do


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Set up Wav2Lip for Blender (safe to re-run).")
    ap.add_argument("--venv", type=Path, default=None, help=f"engine environment folder (default {base.default_venv()})")
    ap.add_argument("--torch-index-url", help="pip index for a torch build (e.g. a CUDA or ROCm wheel index)")
    ap.add_argument("--blender", help="Blender executable (default: `blender` on PATH, else the usual folders)")
    ap.add_argument("--no-blender", action="store_true", help="set up the engine only")
    ap.add_argument("--checkpoint", help="Wav2Lip checkpoint to verify and record")
    ap.add_argument("--detector-weights", help="BlazeFace (.pth, its anchors .npy beside it) or S3FD weights to record")
    ap.add_argument("--check", action="store_true", help="print a status table; exit 1 if something needed is missing")
    ap.add_argument("--int8", action="store_true",
                    help="also install NNCF for --precision int8 (the add-on's Precision: int8), about twice as fast on a CPU")
    ap.add_argument("--with", dest="extras", action="append", default=[], choices=sorted(base.OPTIONAL_EXTRAS), metavar="EXTRA",
                    help="also install an optional part (repeatable): int8; landmarks (--blend mouth, --align: dlib, "
                         "non-commercial model); enhance (--enhance: spandrel face restorers); ray (wav2lip batch --ray); url (video from a URL: wav2lip fetch, --face URL, Add > Movie from URL); "
                         "identity (follow a picked person through cuts: dlib's public-domain face recognition)")
    ap.add_argument("--dev", action="store_true", help="editable install with the test dependencies")
    ap.add_argument("--demo", action="store_true", help="after setting up, lip-sync the demo (or --face/--audio) headless")
    ap.add_argument("--face", help="with --demo: your own video or image")
    ap.add_argument("--audio", help="with --demo: your own audio")
    ap.add_argument("--out-dir", type=Path, default=Path("wav2lip-demo"), help="with --demo: where results go")
    ap.add_argument("--package", action="store_true",
                    help="write the release zip (wav2lip_lipsync-VERSION.zip, installs in Blender 3.4+) and stop")
    ap.add_argument("--out", type=Path, help="with --package: the folder for the zip (default: dist/ in this folder)")
    a = ap.parse_args(argv)
    if a.package:
        import release  # beside this file

        return release.main(a.out)
    env = (a.venv or base.default_venv()).expanduser().resolve()
    try:
        if a.check:
            say("Wav2Lip for Blender: status")
            return 0 if print_status(status_rows(env, a.blender, a.checkpoint)) else 1
        if sys.version_info < (3, 10):
            raise InstallError(f"Python {sys.version.split()[0]} is too old: run install.py with Python 3.10 or newer")
        info, why = (None, "") if a.no_blender else usable_blender(a.blender)
        # Without a usable Blender program, headless runs use Blender as a Python module (bpy),
        # which exists for one Python version per Blender release: 3.11 for bpy 5.0.
        bpy_python = engine_python_version(env) == BPY_PYTHON
        if a.demo and info is None and not bpy_python:
            # Checked before anything is made: the demo could only fail, after minutes of pip.
            raise InstallError(
                f"{why or 'Blender: not used (--no-blender)'}; --demo without a Blender program needs Python "
                f"{vstr(BPY_PYTHON)} for the bpy module, and the engine would run Python {vstr(engine_python_version(env))}: "
                f"install Blender 3.4+ (blender.org) or pass --blender PATH, or run install.py with Python {vstr(BPY_PYTHON)}")
        with_bpy = info is None and not a.no_blender and bpy_python
        if why:
            say(why)
            say("  headless runs use the bpy module in the engine environment" if with_bpy else
                "  headless runs need Blender 3.4+, or Python 3.11 for the bpy module")
        py = ensure_engine(env, torch_index_url=a.torch_index_url, with_bpy=with_bpy or a.dev, dev=a.dev,
                           optional=tuple(a.extras) + (("int8",) if a.int8 else ()))
        say(f"engine Python: {py}")
        recorded: dict[str, str] = {config.CONFIG_PYTHON: str(py)}
        if a.checkpoint:
            ck = Path(a.checkpoint).expanduser().resolve()
            kind = weights.verify_checkpoint(py, ck)
            say(f"checkpoint ok: {ck}\n  {kind}\n  sha256 {weights.sha256_file(ck)}")
            recorded[config.CONFIG_CHECKPOINT] = str(ck)
        if a.detector_weights:
            found, what = weights.verify_detector_weights(py, Path(a.detector_weights).expanduser().resolve())
            say(f"detector weights ok: {found} ({what})")
            recorded[config.CONFIG_DETECTOR_WEIGHTS] = str(found)
        if info:
            kind = "extension" if info.extension else "legacy add-on"
            say(f"Blender {vstr(info.version)}: {info.exe}")
            with tempfile.TemporaryDirectory() as tmp:
                state = install_addon(info, stage_addon(Path(tmp) / ADDON_ID))
            if state == "up to date":
                say(f"add-on already installed, up to date ({info.addon_dir})")
            else:
                say(f"add-on {state} as a {kind} and enabled: {info.addon_dir} (Sequencer > Sidebar > Lip Sync; "
                    "restart Blender if it is open)")
            cfg = config.record_config(info.config_dir, **recorded)
            say(f"preferences recorded in {cfg}")
        config.record_config(env, **recorded)  # the engine's own copy, used by demo.py and the core
        if a.demo:
            cmd = [py, ROOT / "demo.py", "--out-dir", a.out_dir.resolve(), "--install-command", install_command(env)]
            cmd += ["--face", a.face] if a.face else []
            cmd += ["--audio", a.audio] if a.audio else []
            cmd += ["--checkpoint", recorded[config.CONFIG_CHECKPOINT]] if config.CONFIG_CHECKPOINT in recorded else []
            cmd += ["--blender", info.exe] if info else []
            return base.run(cmd).returncode
        say(f"done. Check with: {install_command(env)} --check")
        return 0
    except InstallError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except OSError as e:  # e.g. a folder that cannot be made or written (Blender's, the engine's)
        where = f"{e.filename}: " if e.filename else ""
        print(f"error: {where}{e.strerror or e}; check that path (its permissions, free space) and re-run", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())


if __name__ == "__main__":
    sys.exit(main())
