"""--sync-offset F: output frame k is driven by the audio window of frame k - F (negative: the
mouth moves earlier), fractions interpolated between mel columns, clamped at the ends.

The windows are checked against the original's rule from the conformance data; the effect is
measured end to end through the CLI with the click-train method: a still face, short bursts of
real speech with silence between, and per burst the centroid (in frames) of the mouth's change
between consecutive output frames, which must move by F.
"""

from __future__ import annotations

import json
import subprocess
import sys
import wave

import av
import cv2
import numpy as np
import pytest

from conftest import CONFORMANCE, MEDIA, ROOT
from wav2lip_core import protocol
from wav2lip_core.media.audio import load_audio
from wav2lip_core.sync.pipeline import LipSyncRequest
from wav2lip_core.sync.plan import make_plan
from wav2lip_core.media.probe import probe_video

FACE2 = MEDIA / "vretalk_face2.mp4"  # 844x844, 25 fps
FACE1_VFR = MEDIA / "vretalk_face1.mp4"  # variable frame rate, nominal 30 fps
SPEECH16K = CONFORMANCE / "speech_16k.wav"
BOX = tuple(int(v) for v in np.load(CONFORMANCE / "model_io.npz")["box"])
FPS = 25
RATE = 16000
# The original's window start per frame at 25 fps (int(i * 80 / fps), the last clamped to the end).
REFERENCE_STARTS = json.loads((CONFORMANCE / "mel_chunk_starts.json").read_text())[str(float(FPS))]


def plan_for(face=FACE2, audio=SPEECH16K, **kw):
    req = LipSyncRequest(face=str(face), audio=str(audio), checkpoint="c", out="o.mp4",
                         silence=protocol.SILENCE_SYNC, **kw)
    return make_plan(req, probe_video(face), load_audio(audio))


# ---------------------------------------------------------------------------------------------
# the windows


@pytest.mark.parametrize("offset", [2.0, -3.0])
def test_whole_frame_offsets_take_the_original_window_of_frame_k_minus_f(offset):
    plan = plan_for(sync_offset=offset)
    mel = plan.mel
    last = len(REFERENCE_STARTS) - 1
    assert plan.mel_fracs is None
    for k in range(len(plan.sources)):
        i = min(max(k - int(offset), 0), last)  # clamped to the first and last window
        s = REFERENCE_STARTS[i]
        assert np.array_equal(plan.window(k), mel[:, s: s + 16]), k
    assert plan.sources == plan_for().sources and plan.times == plan_for().times  # pictures unchanged


def test_half_frame_offset_is_the_window_half_way_between_two_frames():
    """Offset 0.5: frame k's window starts half way between the original's starts of frames k-1
    and k; a start between two columns averages the two column-aligned windows around it."""
    zero, half = plan_for(), plan_for(sync_offset=0.5)
    assert zero.mel_fracs is None and half.mel_fracs is not None
    mel = zero.mel
    odd = 0
    for k in range(1, len(REFERENCE_STARTS)):
        mid = (REFERENCE_STARTS[k - 1] + REFERENCE_STARTS[k]) / 2
        a = int(mid)
        want = mel[:, a: a + 16] if mid == a else (mel[:, a: a + 16] + mel[:, a + 1: a + 17]) / 2
        odd += mid != a
        assert np.allclose(half.window(k), want, atol=1e-6), k
    assert odd > 30  # both kinds occur (starts step by 3 or 4 columns at 25 fps)
    assert np.array_equal(half.window(0), mel[:, :16])  # clamped at the start


def test_variable_frame_rate_windows_shift_by_the_offset_in_columns():
    """A variable-rate clip keeps its frame times; its windows move by F frames of its average
    rate (80 / fps columns each), between columns where that is not whole, clamped to the audio."""
    info = probe_video(FACE1_VFR)
    assert info.variable_frame_rate
    zero = plan_for(FACE1_VFR, duration=2.0)
    mel = zero.mel
    n_mel = mel.shape[1]
    for offset in (-3.0, 1.5):
        plan = plan_for(FACE1_VFR, duration=2.0, sync_offset=offset)
        assert plan.times == zero.times and plan.sources == zero.sources
        for k, t in enumerate(plan.times):
            p = min(max(int(t * 80) - offset * 80 / info.fps, 0.0), n_mel - 16.0)
            a = int(p)
            want = (1 - (p - a)) * mel[:, a: a + 16] + (p - a) * mel[:, a + 1: a + 17] if p > a else mel[:, a: a + 16]
            assert np.allclose(plan.window(k), want, atol=1e-5), (offset, k)


def test_source_times_path_shifts_the_windows_too():
    times = tuple(k / 30 for k in range(40))
    zero = plan_for(FACE1_VFR, fps=25.0, duration=1.6, source_times=times)
    two = plan_for(FACE1_VFR, fps=25.0, duration=1.6, source_times=times, sync_offset=2.0)
    assert two.sources == zero.sources
    for k in range(len(two.sources)):
        s = min(REFERENCE_STARTS[max(k - 2, 0)], zero.mel.shape[1] - 16)  # 1.6 s of audio: clamped earlier
        assert np.array_equal(two.window(k), zero.mel[:, s: s + 16]), k


# ---------------------------------------------------------------------------------------------
# the click train, through the CLI


BURSTS = (0.5, 1.12, 1.73, 2.35)  # seconds; ~15 frames apart, at different phases of a frame
BURST_S = 0.06
CLICKS_S = 2.8
HALF = 7.5  # frames either side of a burst's response belonging to it


def write_click_train(path) -> str:
    """Bursts of real speech (60 ms each, from different places in the recording) in silence."""
    sp = load_audio(SPEECH16K)
    a = np.zeros(int(CLICKS_S * RATE), np.float32)
    n = int(BURST_S * RATE)
    for i, b in enumerate(BURSTS):
        src = int((0.5 + 0.7 * i) * RATE)
        a[int(b * RATE): int(b * RATE) + n] = sp[src: src + n] * 3
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes((np.clip(a, -1, 1) * 32767).astype(np.int16).tobytes())
    return str(path)


def mouth_change(path) -> np.ndarray:
    """Mean absolute change of the mouth (lower half of the face box) from frame k-1 to k."""
    y1, y2, x1, x2 = BOX
    with av.open(str(path)) as c:
        m = np.stack([f.to_ndarray(format="bgr24")[(y1 + y2) // 2: y2, x1:x2].astype(np.float32)
                      for f in c.decode(video=0)])
    assert len(m) == round(CLICKS_S * FPS)
    return np.abs(np.diff(m, axis=0)).mean(axis=(1, 2, 3))


def centroids(change: np.ndarray) -> np.ndarray:
    """Per burst, the centroid (in frames) of the mouth's change around it."""
    at = np.arange(1, len(change) + 1) - 0.5  # change k-1 -> k sits between the two frames
    excess = np.maximum(change - np.median(change), 0.0)
    out = []
    for b in BURSTS:
        # The response's middle at offset 0 is ~1.25 frames before the burst (a window starts at
        # its frame and looks 0.2 s ahead); the same span serves every offset tested.
        sel = np.abs(at - (b * FPS - 1.25)) <= HALF
        out.append(float((at[sel] * excess[sel]).sum() / excess[sel].sum()))
    return np.array(out)


def test_click_train_centroid_moves_by_the_offset(loud_checkpoint, tmp_path):
    clicks = write_click_train(tmp_path / "clicks.wav")
    with av.open(str(FACE2)) as c:
        cv2.imwrite(str(tmp_path / "still.png"), next(c.decode(video=0)).to_ndarray(format="bgr24"))

    def run_cli(offset: float) -> np.ndarray:
        out = tmp_path / f"out_{offset}.mp4"
        r = subprocess.run([sys.executable, "-m", "wav2lip_core", "--face", str(tmp_path / "still.png"),
                            "--audio", clicks, "--checkpoint", str(loud_checkpoint), "--out", str(out),
                            "--box", *map(str, BOX), "--fps", str(FPS), "--device", "cpu",
                            protocol.OPT_SILENCE, protocol.SILENCE_SYNC, protocol.OPT_SYNC_OFFSET, str(offset)],
                           cwd=ROOT, capture_output=True, text=True, timeout=400)
        assert r.returncode == 0, r.stderr[-2000:]
        return mouth_change(out)

    base = run_cli(0.0)
    # Premise: the still mouth changes around the bursts and stays still between them.
    near = np.zeros(len(base), bool)
    for b in BURSTS:
        near |= np.abs(np.arange(1, len(base) + 1) - 0.5 - (b * FPS - 1.25)) <= 5
    assert base[near].mean() > 10 * base[~near].mean() + 0.2, (base[near].mean(), base[~near].mean())

    c0 = centroids(base)
    for offset in (2.0, -1.5):
        moved = centroids(run_cli(offset)) - c0
        assert abs(moved.mean() - offset) < 0.2, (offset, moved)
        assert np.all(np.abs(moved - offset) < 0.5), (offset, moved)


@pytest.mark.parametrize("value, expected", [("-1e0", -1.0), ("-1e-1", -0.1), ("-.5e1", -5.0), ("-1.5", -1.5),
                                             ("2", 2.0)])
def test_negative_offsets_in_any_float_spelling_are_values(value, expected):
    from wav2lip_core.jobs.request import parse_args

    args = parse_args(["--face", "f.mp4", "--audio", "a.wav", "--checkpoint", "c.pth", "--out", "o.mp4",
                       "--sync-offset", value])
    assert args.sync_offset == expected and args.face == "f.mp4"


def test_an_option_after_sync_offset_is_still_an_option(capsys):
    from wav2lip_core.jobs.request import parse_args

    with pytest.raises(SystemExit):
        parse_args(["--face", "f.mp4", "--audio", "a.wav", "--checkpoint", "c.pth", "--out", "o.mp4", "--sync-offset",
                    "--face"])
    assert "--sync-offset: expected one argument" in capsys.readouterr().err


def test_engine_jobs_take_the_same_spellings():
    from wav2lip_core.jobs.request import parse_job

    args = ["--face", "f.mp4", "--audio", "a.wav", "--checkpoint", "c.pth", "--out", "o.mp4", "--sync-offset", "-2.5e-1"]
    assert parse_job(args).sync_offset == -0.25
