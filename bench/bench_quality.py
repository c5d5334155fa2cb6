#!/usr/bin/env python3
"""CPU cost per output frame of the quality options, and what --silence hold saves. Prints
figures, asserts nothing.

    python bench/bench_quality.py [--repeats 5] [--only silence offset fade options]
        [--seconds 2] [--runs 2] [--clips katie portrait] [--checkpoint CKPT]

Sources: ../shared/media speech (musetalk_eng.wav 60 s with natural pauses, the SadTalker clip's
own track, vretalk_face2's track) and ../shared/conformance/speech_16k.wav with a 1.5 s pause
written into it. Per option:

  silence   the detector (silence.frame_weights: 50 ms RMS per mel column, per-frame window
            maxima, hangover, fades) in us per output frame at 25 fps; the frames it holds and so
            the model forwards it saves, per track
  offset    plan.window(k) for a fractional --sync-offset (two columns interpolated) against the
            whole-frame slice, us per frame
  fade      the blend of a fade frame (paste, then mixed with the source) against a plain paste,
            ms per frame, for a 384x384 face box (a 1080p close-up) on a BGR frame
  options   whole pipeline runs (pipeline.run, as the CLI calls it; the model, landmark
            predictor and restorer loaded once and kept, as the warm engine keeps them) of
            --seconds of a real clip with its BlazeFace box given as --box, one row per option:
            the defaults --align off --blend feather --silence sync as the baseline, then
            --silence hold (on the clip's own track, and on speech paused for the middle half of
            the run, with the frames held), --sync-offset 0.5, --blend mouth, --enhance
            (RestoreFormer, small variant, RANDOM weights from tests/restorer_checkpoints.py:
            only its cost means something; the released RestoreFormer costs more:
            bench/bench_enhance.py), and --align auto on the clip turned by 25 degrees
            (tests/landmark_clips.py, written at 25 fps) against --align off on that clip.
            Wall seconds; per output frame, wall ms and CPU ms (the process's CPU time, all
            threads: steadier than the wall clock on a shared machine), both over the row's
            baseline; and the stages' busy seconds (LipSyncResult.stage_seconds: decode+crop,
            landmarks, the model, enhance and blend+encode run overlapped in threads, so they do
            not add up to the wall). Clips: katie (sadtalker_WDA_KatieHill_000.mp4, 512x512
            25 fps) and, asked for, portrait (liveportrait_d13.mp4, 720x1280 30 fps, which has
            no sound: driven by musetalk_eng.wav). Without --checkpoint the conformance
            checkpoint is built (released layout, not trained weights: the same cost).

Best of --repeats for times (--runs for the whole runs of `options`, one for --enhance); the
machine is shared, and the best is the least disturbed.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
sys.path.insert(0, str(ROOT))

from wav2lip_core.quality import silence  # noqa: E402
from wav2lip_core.media.audio import load_audio, mel_chunk_starts, melspectrogram  # noqa: E402

FPS = 25.0
TRACKS = {
    "musetalk_eng.wav (60 s, natural pauses)": SHARED / "media" / "musetalk_eng.wav",
    "KatieHill own track (8 s)": SHARED / "media" / "sadtalker_WDA_KatieHill_000.mp4",
    "vretalk_face2 own track (5 s)": SHARED / "media" / "vretalk_face2.mp4",
    "sadtalker_imagine.wav (5.6 s)": SHARED / "media" / "sadtalker_imagine.wav",
}


def best(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def with_pause(wav: np.ndarray, at: float, seconds: float) -> np.ndarray:
    i = int(at * 16000)
    return np.concatenate([wav[:i], np.zeros(int(seconds * 16000), np.float32), wav[i:]])


def bench_silence(repeats: int) -> None:
    print("--silence hold: detector cost and model forwards saved (25 fps)")
    tracks = {name: load_audio(path) for name, path in TRACKS.items()}
    speech = load_audio(SHARED / "conformance" / "speech_16k.wav")
    tracks["speech_16k + one 1.5 s pause (6.5 s)"] = with_pause(speech, 2.5, 1.5)
    print(f"  {'track':42s} {'frames':>6s} {'held':>6s} {'fading':>6s} {'forwards saved':>14s} {'us/frame':>9s}")
    for name, wav in tracks.items():
        starts = mel_chunk_starts(melspectrogram(wav).shape[1], FPS)
        found = silence.frame_weights(wav, starts, None, FPS)
        n = len(starts)
        s = best(lambda: silence.frame_weights(wav, starts, None, FPS), repeats)
        fading = int(np.count_nonzero((found.weights > 0) & (found.weights < 1)))
        print(f"  {name:42s} {n:6d} {found.held:6d} {fading:6d} {found.held / n:13.1%} {s / n * 1e6:9.1f}")


def bench_offset(repeats: int) -> None:
    from wav2lip_core.sync.plan import Plan

    wav = load_audio(SHARED / "media" / "musetalk_eng.wav")
    mel = melspectrogram(wav)
    starts = mel_chunk_starts(mel.shape[1], FPS)
    n = len(starts)
    whole = Plan(info=None, start=0, used=1, fps=FPS, duration=0, sources=[], times=[], mel_starts=starts, mel=mel)
    half = Plan(info=None, start=0, used=1, fps=FPS, duration=0, sources=[], times=[],
                mel_starts=[max(s - 2, 0) for s in starts], mel=mel, mel_fracs=[0.4] * n)
    t_whole = best(lambda: [np.ascontiguousarray(whole.window(k)) for k in range(n)], repeats)
    t_frac = best(lambda: [half.window(k) for k in range(n)], repeats)
    print("--sync-offset: the mel window per frame")
    print(f"  whole-frame offset (a slice, copied as the model input takes it) {t_whole / n * 1e6:7.1f} us/frame")
    print(f"  fractional offset (two columns interpolated)                    {t_frac / n * 1e6:7.1f} us/frame")


def bench_fade(repeats: int) -> None:
    import av

    from wav2lip_core.sync.blend import paste
    from wav2lip_core.sync.stages import faded_paste

    with av.open(str(SHARED / "media" / "sadtalker_WDA_KatieHill_000.mp4")) as c:
        face = next(c.decode(video=0)).to_ndarray(format="bgr24")
    import cv2

    frame = np.zeros((1080, 1920, 3), np.uint8)
    frame[300:684, 700:1084] = cv2.resize(face, (384, 384))
    box = (300, 684, 700, 1084)
    pred = cv2.resize(face[250:450, 150:350], (96, 96))
    frames = [frame.copy() for _ in range(20)]
    print("--silence hold fades: blend per frame, 384x384 box in a 1080p BGR frame")
    for blend in ("feather", "hard"):
        t_paste = best(lambda: [paste(f, pred, box, blend) for f in frames], repeats) / len(frames)
        t_fade = best(lambda: [faded_paste(f, pred, box, blend, 0.5) for f in frames], repeats) / len(frames)
        print(f"  {blend:8s} paste {t_paste * 1e3:6.2f} ms   fade {t_fade * 1e3:6.2f} ms (only the ~6 frames around each hold)")


# name: (video, the audio that drives it; liveportrait_d13.mp4 has no sound track)
OPTION_CLIPS = {
    "katie": (SHARED / "media" / "sadtalker_WDA_KatieHill_000.mp4",) * 2,
    "portrait": (SHARED / "media" / "liveportrait_d13.mp4", SHARED / "media" / "musetalk_eng.wav"),
}
TILT = 25  # degrees the turned clip is turned by (issue 11 measures 15 and 30)
# (label, request fields over the baseline's, whether it runs on the turned clip)
OPTION_ROWS = [
    ("baseline: --align off --blend feather --silence sync", {}, False),
    ("--silence hold", {"silence": "hold"}, False),
    ("--silence hold, speech paused for half the run", {"silence": "hold", "audio": "PAUSED"}, False),
    ("--sync-offset 0.5", {"sync_offset": 0.5}, False),
    ("--blend mouth", {"blend": "mouth"}, False),
    ("--enhance (small RestoreFormer, random weights)", {"enhance": "RESTORER"}, False),
    (f"turned {TILT} deg baseline: --align off", {}, True),
    (f"turned {TILT} deg: --align auto", {"align": "auto"}, True),
]
STAGE_COLUMNS = ("decode", "landmarks", "crop", "model", "enhance", "blend", "encode")


def _checkpoint(folder: Path) -> str:
    import subprocess

    path = str(folder / "wav2lip_conformance.pth")
    subprocess.run([sys.executable, str(SHARED / "conformance" / "make_checkpoint.py"), path, "--prefix", "module."],
                   check=True, capture_output=True)
    return path


def bench_options(args) -> None:
    import os
    import tempfile

    with tempfile.TemporaryDirectory(prefix="bench-quality-") as tmp:
        folder = Path(tmp)
        # A private model cache (the conformance checkpoint never lands in the user's), set
        # before tests/conftest.py (imported by landmark_clips) would make one of its own.
        os.environ["WAV2LIP_MODEL_CACHE"] = str(folder / "models")
        sys.path.insert(0, str(ROOT / "tests"))
        from landmark_clips import boxes_for, write_rotated_clip
        from restorer_checkpoints import write_checkpoint

        from wav2lip_core.quality import enhance
        from wav2lip_core.faces import landmarks
        from wav2lip_core.model import runtime
        from wav2lip_core.media.decode import read_frames
        from wav2lip_core.sync.pipeline import LipSyncRequest, run
        from wav2lip_core.sync.plan import make_plan
        from wav2lip_core.media.probe import probe_video

        checkpoint = args.checkpoint or _checkpoint(folder)
        restorer = write_checkpoint("restoreformer", folder / "restoreformer_small_random.pth", small=True)
        executors, restorers = runtime.Executors(), enhance.Restorers()
        paused = _paused_speech(folder / "paused.wav", args.seconds)
        print(f"Quality options: whole runs of {args.seconds:g} s of each clip, best of {args.runs} "
              f"(after one untimed run loading the model), {os.cpu_count()} CPUs shared, "
              f"load average {os.getloadavg()[0]:.1f}")
        print("  --enhance uses a RANDOM-weight small RestoreFormer: only its cost is meaningful, "
              "and the released one costs more (bench/bench_enhance.py)")
        if not landmarks.available():
            print("  (landmarks extra missing: --blend mouth and --align auto rows skipped)")

        for clip in args.clips:
            src, sound = OPTION_CLIPS[clip]
            info = probe_video(src)
            count = int(round(args.seconds * info.fps)) + 2
            turned, _ = write_rotated_clip(folder / f"{clip}-turned.mp4", TILT, count, src)
            faces = {}
            for kind, path in ((False, src), (True, turned)):
                first = next(iter(read_frames(probe_video(path), [0])))[1]
                faces[kind] = (str(path), boxes_for([first])[0])

            def request(fields: dict, on_turned: bool, out: str) -> LipSyncRequest:
                face, box = faces[on_turned]
                kw = {"silence": "sync", "align": "off", "blend": "feather", "audio": str(sound), **fields}
                if kw.get("enhance") == "RESTORER":
                    kw["enhance"] = restorer
                if kw["audio"] == "PAUSED":
                    kw["audio"] = paused
                return LipSyncRequest(face=face, checkpoint=checkpoint, out=out, box=box,
                                      duration=args.seconds, cache=False, device="cpu", **kw)

            out = str(folder / "out.mp4")
            run(request({}, False, out), executors=executors)  # loads (and converts) the model once
            print(f"\n  {clip}: {src.name} {info.width}x{info.height} {info.fps:g} fps, box {faces[False][1]}, "
                  f"turned clip's box {faces[True][1]}")
            print(f"  {'option':62s} {'frames':>6s} {'wall s':>7s} {'wall ms':>8s} {'cpu ms':>8s} "
                  f"{'+wall ms':>8s} {'+cpu ms':>8s}   "
                  + " ".join(f"{c:>9s}" for c in STAGE_COLUMNS) + "   (stage busy seconds)")
            base_ms = {}
            for label, fields, on_turned in OPTION_ROWS:
                if fields.get("enhance") and args.no_enhance:
                    continue
                if (fields.get("blend") == "mouth" or fields.get("align") == "auto") and not landmarks.available():
                    continue
                req = request(fields, on_turned, out)
                # Loaded once, outside the timed runs, as a warm engine keeps them.
                if fields.get("enhance"):
                    restorers.get(req.enhance)
                if req.blend == "mouth" or req.align == "auto":
                    landmarks.load_predictor()
                best_result, best_cpu = None, None
                # A restorer on a CPU costs seconds per face: one run says enough.
                for _ in range(1 if fields.get("enhance") else args.runs):
                    c = time.process_time()
                    result = run(req, executors=executors, restorers=restorers)
                    cpu = time.process_time() - c
                    if best_result is None or result.seconds < best_result.seconds:
                        best_result = result
                    best_cpu = cpu if best_cpu is None else min(best_cpu, cpu)
                ms = best_result.seconds / best_result.frames * 1e3
                cpu_ms = best_cpu / best_result.frames * 1e3
                if not fields:
                    base_ms[on_turned] = (ms, cpu_ms)
                extra = (f"{ms - base_ms[on_turned][0]:+8.1f} {cpu_ms - base_ms[on_turned][1]:+8.1f}" if fields
                         else f"{'':>8s} {'':>8s}")
                if fields.get("silence") == "hold":
                    plan = make_plan(req, probe_video(req.face), load_audio(req.audio))
                    held = 0 if plan.weights is None else int((plan.weights == 0).sum())
                    label = f"{label} ({held} of {best_result.frames} held)"
                stages = best_result.stage_seconds
                print(f"  {label:62s} {best_result.frames:6d} {best_result.seconds:7.2f} {ms:8.1f} {cpu_ms:8.1f} "
                      f"{extra}   "
                      + " ".join(f"{stages.get(c, 0.0):9.2f}" for c in STAGE_COLUMNS))


def _paused_speech(out: Path, seconds: float) -> str:
    """`seconds` of conformance speech, silent through its middle half (16 kHz 16-bit wav)."""
    import wave

    speech = load_audio(SHARED / "conformance" / "speech_16k.wav")
    n = int(seconds * 16000)
    wav = np.resize(speech, n).copy()
    wav[n // 4: 3 * n // 4] = 0.0
    with wave.open(str(out), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes((np.clip(wav, -1, 1) * 32767).astype("<i2").tobytes())
    return str(out)


BENCHES = {"silence": bench_silence, "offset": bench_offset, "fade": bench_fade, "options": bench_options}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--only", nargs="+", choices=sorted(BENCHES), default=list(BENCHES))
    p.add_argument("--seconds", type=float, default=2.0, help="options: output seconds per run")
    p.add_argument("--runs", type=int, default=2, help="options: timed runs per row (the best is shown)")
    p.add_argument("--clips", nargs="+", choices=sorted(OPTION_CLIPS), default=["katie"], help="options: clips")
    p.add_argument("--no-enhance", action="store_true", help="options: leave out the --enhance row (seconds a frame)")
    p.add_argument("--checkpoint", help="options: a Wav2Lip checkpoint (default: the conformance one, built)")
    args = p.parse_args()
    for name in args.only:
        if name == "options":
            bench_options(args)
        else:
            BENCHES[name](args.repeats)


if __name__ == "__main__":
    main()
