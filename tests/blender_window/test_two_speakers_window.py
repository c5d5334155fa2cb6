"""Two people, each with their own voice, in a real Blender window (Debian's 3.4.1 under Xvfb)
with the real engine: two_speakers_window_script.py picks the astronaut (left) bound to one sound
strip and the cameraman (right) bound to another with Pick Face, clicks the panel's Sync and waits
for the result strip; these tests judge the result file, decoded here with PyAV.

The clip (two_shot.py) is made of public-domain pictures only. The astronaut speaks for the first
1.2 s, the cameraman from 1.6 s (two pieces of the conformance speech); the model is the
conformance checkpoint with --audio-gain 8, whose mouths follow the audio strongly. The engine's
default --silence hold keeps a silent person's face as the source, so a run of the same job with
silence for both is what "untouched" looks like through the same encoder.

WAV2LIP_UPDATE_DOCS=1 also writes the README's Pick Face picture (docs/pick_face.png) from the
window's screenshot.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from . import two_shot
from .conftest import ROOT, needs_window, require_blender, run_window_script

HERE = Path(__file__).resolve().parent
SCRIPT = HERE / "two_speakers_window_script.py"
SHARED = ROOT.parent / "shared"
SPEECH = SHARED / "conformance" / "speech_16k.wav"
WEIGHTS = SHARED / "weights" / "blazeface" / "blazefaceback.pth"  # the front model misses the cameraman
SECONDS = 2.8
# Who speaks when (output seconds): the astronaut's sound strip from frame 1, the cameraman's from 1.6 s.
TALKS = {"Astronaut": (0.0, 1.2), "Cameraman": (1.6, 2.8)}
EDGE = 0.4  # seconds around a speech's edges left unjudged (the mel window and the hold's fade)
CHANGED, UNTOUCHED = 15.0, 6.0  # mean |result - silent run| in the mouth (measured ~37-50 and <= 3.2)
PICTURE = ROOT / "docs" / "pick_face.png"

pytestmark = [needs_window, pytest.mark.skipif(not (SPEECH.is_file() and WEIGHTS.is_file()),
                                               reason="needs ../shared's conformance speech and BlazeFace weights")]


def _engine(python: str, clip: Path, checkpoint: Path, out: Path, speakers: list) -> None:
    args = [python, "-m", "wav2lip_core", "--face", str(clip), "--checkpoint", str(checkpoint), "--out", str(out),
            "--detector", "blazeface-back", "--detector-weights", str(WEIGHTS), "--device", "cpu",
            "--no-cache", "--progress", "none"]
    for x, y, audio, at in speakers:
        args += ["--speaker", str(x), str(y), f"{audio}@{at}", "0"]
    r = subprocess.run(args, capture_output=True, text=True, cwd=str(ROOT), timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]


@pytest.fixture(scope="module")
def two_run(tmp_path_factory, engine_python):
    require_blender()
    work = tmp_path_factory.mktemp("two-speakers")
    clip = two_shot.write_clip(work / "two_shot.mp4", SECONDS)
    speech = two_shot.read_speech(SPEECH)
    rate = two_shot.RATE
    sounds = []
    for name, (t0, t1) in TALKS.items():
        # Different words for each: the speech from the time they start, as long as they talk.
        piece = speech[int(t0 * rate): int(t1 * rate)]
        sounds.append({"name": name, "path": str(two_shot.write_wav(work / f"{name}.wav", piece)),
                       "frame": 1 + int(round(t0 * two_shot.FPS)), "at": t0, "silence":
                       str(two_shot.write_wav(work / f"{name}_silent.wav", np.zeros_like(piece)))})
    checkpoint = work / "loud.pth"
    subprocess.run([sys.executable, str(SHARED / "conformance" / "make_checkpoint.py"), str(checkpoint),
                    "--audio-gain", "8"], check=True, capture_output=True, timeout=120)
    r, _ = run_window_script(SCRIPT, work, {
        "work": str(work), "engine_python": engine_python, "clip": str(clip),
        "checkpoint": "//loud.pth",  # beside the .blend the script saves into `work` (short in the picture)
        "detector_weights": str(WEIGHTS), "clip_size": [2 * two_shot.SIDE, two_shot.SIDE], "fps": two_shot.FPS,
        "sounds": sounds, "widen_sidebar": 110}, timeout=300)
    print("pick face screenshot:", r.get("screenshot"))
    if r.get("result"):  # the same job with silence for both: the untouched look
        base = work / "silent.mp4"
        _engine(engine_python, clip, checkpoint, base,
                [(p["x"], p["y"], s["silence"], s["at"]) for p, s in zip(r["picks"], sounds)])
        r["silent_run"] = str(base)
    if os.environ.get("WAV2LIP_UPDATE_DOCS") == "1" and r.get("screenshot"):
        _write_picture(r, PICTURE)
    return r


def _write_picture(r: dict, out: Path) -> None:
    """The window's screenshot cut to the Sequencer's preview with its header (the hint) and
    sidebar, down to below the clip and the Sync button (window coordinates are y up)."""
    import cv2

    img = cv2.imread(r["screenshot"])
    height = img.shape[0]
    area, ui = r["area"], r["sidebar"]
    lowest = min(r["clip_on_screen"][1], r["sync_button"][1] if r.get("sync_button") else height)
    top, bottom = height - (area["y"] + area["height"]), height - max(area["y"], lowest - 8)
    picture = img[top:bottom, area["x"]: ui["x"] + ui["width"]]
    cv2.imwrite(str(out), picture)
    print(f"wrote {out} ({picture.shape[1]}x{picture.shape[0]})")


def test_each_pick_is_bound_to_its_own_sound(two_run):
    r = two_run
    assert r["invoke"] == [["RUNNING_MODAL"]] * 3, r["invoke"]
    assert len(r["faces"]) == 2, r["events"]
    left, right = r["faces"]
    assert r["hover"] == [left, right]  # the face under the pointer was the highlighted one
    picks = r["picks"]
    assert [p["sound"] for p in picks] == ["Astronaut", "Cameraman"], picks
    assert picks[0]["label"].startswith("Face 1 (left)") and picks[1]["label"].startswith("Face 2 (right)")
    for p, (x1, y1, x2, y2) in zip(picks, (left, right)):
        assert (p["x"], p["y"]) == ((x1 + x2) // 2, (y1 + y2) // 2)
    assert Path(r["screenshot"]).is_file() and r["screenshot_hover"] == right
    assert not r["session_after_escape"]


def test_sync_changes_each_face_only_while_its_own_sound_speaks(two_run):
    r = two_run
    assert r.get("sync_button"), "the panel's Sync button was not found"
    res = r["result"]
    assert res and (res["start"], res["frames"]) == (1, round(SECONDS * two_shot.FPS)), res
    got, base = two_shot.frames_of(Path(res["filepath"])), two_shot.frames_of(Path(r["silent_run"]))
    assert len(got) == len(base) == res["frames"]
    for name, (x1, y1, x2, y2) in zip(TALKS, r["faces"]):
        t0, t1 = TALKS[name]
        mouth = (slice((y1 + y2) // 2, min(two_shot.SIDE, y2 + 8)), slice(x1, x2))
        change = [float(np.abs(g[mouth].astype(int) - b[mouth].astype(int)).mean()) for g, b in zip(got, base)]
        times = [i / two_shot.FPS for i in range(len(got))]
        speaking = [c for t, c in zip(times, change) if t0 <= t <= t1 - EDGE]
        quiet = [c for t, c in zip(times, change) if t < t0 - EDGE or t >= t1 + EDGE]
        assert speaking and quiet, name
        assert min(speaking) > CHANGED, (name, [round(c, 1) for c in change])
        assert max(quiet) < UNTOUCHED, (name, [round(c, 1) for c in change])
