#!/usr/bin/env python3
"""Face restoration (--enhance) cost per face, per architecture. Prints figures, asserts nothing.

    python bench/bench_enhance.py [--archs gfpgan restoreformer codeformer] [--faces 3]
        [--sizes 260x300 390x450] [--weights gfpgan=GFPGANv1.4.pth ...] [--device cpu]

Each face is a generated face box restored the way the sync pass does it: the 96x96 model output
resized to 512x512, restored, resized to the box (wav2lip_core.quality.enhance.Restorer.restore with the
box size). Default box sizes: 260x300 is a head-and-shoulders face in a 720p frame, 390x450 the
same shot at 1080p. Without --weights the restorers are built with random weights at the
released sizes (tests/restorer_checkpoints.py, full size): the same layers and shapes, so the
same arithmetic and cost as the released files (weights never change a dense network's cost).

Per architecture and box size:

    wall ms/face   elapsed time / faces (torch's own threads: all the cores it sees)
    cpu ms/face    process CPU time / faces (all threads): robust when other work shares the cores
    resize ms      the two resizes alone (96 -> 512, 512 -> box), included in the above

Best of the faces after one warm-up face (the first call pays for allocations).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from wav2lip_core.quality.enhance import RESTORE_SIZE, load_restorer  # noqa: E402


def size_arg(text: str) -> tuple[int, int]:
    w, h = text.lower().split("x")
    return int(w), int(h)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--archs", nargs="+", default=["gfpgan", "restoreformer", "codeformer"])
    p.add_argument("--faces", type=int, default=3, help="timed faces per size (after one warm-up)")
    p.add_argument("--sizes", nargs="+", type=size_arg, default=[(260, 300), (390, 450)])
    p.add_argument("--weights", nargs="*", default=[], metavar="ARCH=PATH", help="real restorer files")
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    given = dict(w.split("=", 1) for w in args.weights)
    rng = np.random.default_rng(0)
    face96 = cv2.GaussianBlur(rng.integers(0, 256, (96, 96, 3), np.uint8), (0, 0), 2)

    with tempfile.TemporaryDirectory(prefix="bench-enhance-") as tmp:
        for arch in args.archs:
            path = given.get(arch)
            origin = "given weights"
            if path is None:
                from restorer_checkpoints import write_checkpoint

                path = write_checkpoint(arch, os.path.join(tmp, f"{arch}.pth"), small=False)
                origin = "random weights, released size"
            t = time.perf_counter()
            r = load_restorer(path, args.device)
            load_s = time.perf_counter() - t
            print(f"{r.arch}: {r.info.parameters / 1e6:.1f} M parameters, {os.path.getsize(path) / 1e6:.0f} MB "
                  f"({origin}), loaded in {load_s:.1f} s, device {args.device}")
            r.restore([face96], sizes=[args.sizes[0]])  # warm-up
            for w, h in args.sizes:
                walls, cpus = [], []
                for _ in range(args.faces):
                    t, c = time.perf_counter(), time.process_time()
                    r.restore([face96], sizes=[(w, h)])
                    walls.append(time.perf_counter() - t)
                    cpus.append(time.process_time() - c)
                t = time.perf_counter()
                for _ in range(20):
                    cv2.resize(cv2.resize(face96, (RESTORE_SIZE, RESTORE_SIZE), interpolation=cv2.INTER_CUBIC),
                               (w, h), interpolation=cv2.INTER_AREA)
                resize_ms = (time.perf_counter() - t) / 20 * 1e3
                print(f"  box {w}x{h}: wall {min(walls) * 1e3:8.0f} ms/face   cpu {min(cpus) * 1e3:8.0f} ms/face"
                      f"   resize {resize_ms:.1f} ms")
            del r
            if path.startswith(tmp):
                os.remove(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
