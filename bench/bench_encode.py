#!/usr/bin/env python3
"""x264 presets compared on real frames: encode time, file size, quality. Prints figures, asserts nothing.

    python bench/bench_encode.py [--frames 100] [--repeats 1] [--crf 18]
        [--presets ultrafast superfast veryfast faster fast medium] [--sizes 512 1080 720x1280]
        [--sweep 14 16 20 22] [--threading SLICE FRAME]

Sources (../shared/media): sadtalker_WDA_KatieHill_000.mp4 at its own 512x512, the same frames
scaled to 1920x1080, and liveportrait_d13.mp4 at its own 720x1280. The first --frames frames are
decoded and converted to yuv420p av.VideoFrames beforehand, so only the encoder is timed: each
preset goes through wav2lip_core.media.encoders.open_stream (what the writer uses) into an in-memory MP4,
frames in, flush, packets muxed. Per preset:

    wall ms/frame   elapsed time / frames (x264's own threads: all the cores it sees)
    cpu ms/frame    process CPU time / frames (all threads): the cores it takes from the other stages
    KiB/s           the MP4's size per second of video at the clip's rate
    size vs medium  the MP4's size relative to --preset medium's
    PSNR dB         decoded output vs the source frames, over all Y, U and V samples

With --sweep CRF...: each preset is also encoded at those crf values, and
    size at medium's quality   the size it needs for --preset medium's PSNR at --crf (interpolated
                               in log size along its own crf curve), relative to medium's: crf is
                               not the same quality across presets (faster presets turn off
                               x264's mbtree and psy tools), so this is the fair size comparison.

Best of --repeats for the times (the presets interleaved, so background load hits them alike);
size and PSNR do not change between repeats.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import os
import sys
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
MEDIA = ROOT.parent / "shared" / "media"
sys.path.insert(0, str(ROOT))

from wav2lip_core import protocol  # noqa: E402
from wav2lip_core.media.encoders import X264_THREADING, choose_encoder, open_stream  # noqa: E402

TIME_BASE = Fraction(1, 90000)
SOURCES = {
    "512": ("sadtalker_WDA_KatieHill_000.mp4", None),
    "1080": ("sadtalker_WDA_KatieHill_000.mp4", (1920, 1080)),
    "720x1280": ("liveportrait_d13.mp4", None),
}
DEFAULT_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium")


def load_frames(path: Path, size: tuple[int, int] | None, count: int) -> tuple[list[av.VideoFrame], Fraction]:
    """The clip's first `count` frames as yuv420p frames (scaled to `size` when given), and its rate."""
    frames = []
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        rate = stream.average_rate or Fraction(25)
        for frame in c.decode(stream):
            if size is not None:
                frame = frame.reformat(width=size[0], height=size[1], format="yuv420p",
                                       interpolation="BICUBIC")
            elif frame.format.name != "yuv420p":
                frame = frame.reformat(format="yuv420p")
            out = av.VideoFrame.from_ndarray(frame.to_ndarray(), format="yuv420p")
            frames.append(out)
            if len(frames) == count:
                break
    return frames, Fraction(rate)


def encode(frames: list[av.VideoFrame], rate: Fraction, preset: str, crf: int,
           threading: str | None = None) -> tuple[float, float, bytes]:
    """(wall s, cpu s, mp4 bytes) for one encode of `frames` (`threading`: FFmpeg's thread_type,
    None: what the product uses)."""
    buf = io.BytesIO()
    container = av.open(buf, "w", format="mp4")
    choice = choose_encoder(protocol.ENCODER_X264, preset=preset, crf=crf, cuda=False)
    if threading is not None:
        choice = dataclasses.replace(choice, threading=threading)
    w, h = frames[0].width, frames[0].height
    step = round(1 / (rate * TIME_BASE))
    t0, c0 = time.perf_counter(), time.process_time()
    stream = open_stream(container, choice, width=w, height=h, rate=rate, time_base=TIME_BASE)
    for k, frame in enumerate(frames):
        frame.pts = k * step
        frame.time_base = TIME_BASE
        container.mux(stream.encode(frame))
    container.mux(stream.encode(None))
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    container.close()
    return wall, cpu, buf.getvalue()


def psnr(data: bytes, frames: list[av.VideoFrame]) -> float:
    sq, n = 0.0, 0
    with av.open(io.BytesIO(data)) as c:
        for out, src in zip(c.decode(video=0), frames):
            d = out.to_ndarray().astype(np.float64) - src.to_ndarray()
            sq += float(np.sum(d * d))
            n += d.size
    mse = sq / n
    return float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--frames", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--crf", type=int, default=18)
    ap.add_argument("--presets", nargs="+", default=list(DEFAULT_PRESETS), choices=protocol.names(protocol.PRESETS))
    ap.add_argument("--sizes", nargs="+", default=list(SOURCES), choices=list(SOURCES))
    ap.add_argument("--sweep", type=int, nargs="*", default=[], metavar="CRF",
                    help="also encode at these crf values and report each preset's size at medium's quality")
    ap.add_argument("--threading", nargs="+", choices=("SLICE", "FRAME"),
                    help="FFmpeg thread types to compare (default: the product's, encoders.X264_THREADING)")
    args = ap.parse_args()
    threadings = args.threading or [X264_THREADING]
    print(f"x264 crf {args.crf}, {args.frames} frames per clip, best of {args.repeats}; "
          f"PyAV {av.__version__}, FFmpeg {av.ffmpeg_version_info}; {os.cpu_count()} CPUs")
    for key in args.sizes:
        name, size = SOURCES[key]
        frames, rate = load_frames(MEDIA / name, size, args.frames)
        w, h = frames[0].width, frames[0].height
        seconds = len(frames) / rate
        runs = [(p, t) for p in args.presets for t in threadings]
        best = {r: (float("inf"), float("inf")) for r in runs}
        data = {}
        for _ in range(args.repeats):
            for r in runs:
                wall, cpu, data[r] = encode(frames, rate, r[0], args.crf, r[1])
                best[r] = (min(best[r][0], wall), min(best[r][1], cpu))
        ref = len(data["medium", threadings[0]]) if "medium" in args.presets else None
        quality = {r: psnr(data[r], frames) for r in runs}
        equal = {}
        if args.sweep and ref:
            if len(threadings) > 1:
                sys.exit("--sweep compares presets: give one --threading with it")
            equal = equal_quality_sizes(frames, rate, args, {p: data[p, t] for p, t in runs},
                                        {p: quality[p, t] for p, t in runs})
        print(f"\n{name} {w}x{h} @ {float(rate):g} fps, {len(frames)} frames")
        extra = (" size at medium's quality |", "---|") if equal else ("", "")
        print(f"| preset | threads | wall ms/frame | cpu ms/frame | KiB/s | size vs medium | PSNR dB |{extra[0]}")
        print(f"|---|---|---|---|---|---|---|{extra[1]}")
        for r in runs:
            wall, cpu = best[r]
            rel = f"{len(data[r]) / ref:.2f}x" if ref else "-"
            eq = "" if not equal else (f" {equal[r[0]] / ref:.2f}x |" if equal[r[0]] else " - |")
            print(f"| {r[0]} | {r[1].lower()} | {1000 * wall / len(frames):.1f} | {1000 * cpu / len(frames):.1f} | "
                  f"{len(data[r]) / 1024 / float(seconds):.0f} | {rel} | {quality[r]:.2f} |{eq}")


def equal_quality_sizes(frames, rate, args, data, quality) -> dict[str, float | None]:
    """Per preset, the bytes it needs to reach medium's PSNR at --crf (None: outside the sweep)."""
    target = quality["medium"]
    out = {}
    for p in args.presets:
        points = [(quality[p], len(data[p]))]
        for crf in args.sweep:
            if crf != args.crf:
                blob = encode(frames, rate, p, crf)[2]
                points.append((psnr(blob, frames), len(blob)))
        points.sort()
        xs = [q for q, _ in points]
        if not xs[0] <= target <= xs[-1]:
            out[p] = None
            continue
        out[p] = float(np.exp(np.interp(target, xs, [np.log(n) for _, n in points])))
    return out


if __name__ == "__main__":
    main()
