"""--silence hold: frames whose audio window is silent keep the source mouth and skip the model;
--silence sync is the original. Real speech (the conformance recording) with silences written
into it here, a real clip (vretalk_face2 with the conformance face box), the real conformance
model counted at its forward, and the encoded output decoded with PyAV.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import wave

import av
import numpy as np
import pytest
import torch

from conftest import CONFORMANCE, MEDIA, ROOT
from wav2lip_core import protocol
from wav2lip_core.quality import silence
from wav2lip_core.media.audio import load_audio
from wav2lip_core.errors import Wav2LipError
from wav2lip_core.sync.pipeline import LipSyncRequest, run
from wav2lip_core.sync.request import check_request
from wav2lip_core.sync.plan import make_plan
from wav2lip_core.media.probe import probe_video
from wav2lip_core.model.runtime import load_executor

FACE2 = MEDIA / "vretalk_face2.mp4"  # 844x844, 25 fps
SPEECH16K = CONFORMANCE / "speech_16k.wav"  # 16 kHz mono real speech, no pause longer than ~0.1 s
BOX = tuple(int(v) for v in np.load(CONFORMANCE / "model_io.npz")["box"])  # its face in vretalk_face2
FPS = 25
RATE = 16000
# The audio: 0.6 s of speech, a GAP of silence, 0.6 s of speech.
SPEECH_S, GAP = 0.6, (0.6, 2.0)
# A frame's mel window spans [t - 0.025, t + 0.225] s (16 columns of 50 ms every 12.5 ms from t).
WINDOW = (-0.025, 0.225)


def write_wav(path, samples: np.ndarray) -> str:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes((np.clip(samples, -1, 1) * 32767).astype(np.int16).tobytes())
    return str(path)


def speech_with_gap(path, gap: tuple[float, float] = GAP, after: float = SPEECH_S) -> str:
    """Real speech with zeros from gap[0] to gap[1] s (the speech before and after is the
    recording's own, in order)."""
    sp = load_audio(SPEECH16K)
    a, b = (int(round(t * RATE)) for t in gap)
    return write_wav(path, np.concatenate([sp[:a], np.zeros(b - a, np.float32), sp[a: a + int(after * RATE)]]))


def window_in(k: int, lo: float, hi: float) -> bool:
    """Whether frame k's mel window lies inside [lo, hi] seconds."""
    return lo <= k / FPS + WINDOW[0] and k / FPS + WINDOW[1] <= hi


def window_touches(k: int, lo: float, hi: float) -> bool:
    return k / FPS + WINDOW[0] < hi and k / FPS + WINDOW[1] > lo


def decoded(path) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="bgr24") for f in c.decode(video=0)]


def mouth(frame: np.ndarray) -> np.ndarray:
    """The lower half of the face box: where the model's face goes."""
    y1, y2, x1, x2 = BOX
    return frame[(y1 + y2) // 2: y2, x1:x2].astype(np.float32)


class CountingExecutor:
    """A real executor whose forward calls are counted (frames per call); everything else is the
    executor's own."""

    def __init__(self, inner):
        self.inner = inner
        self.calls: list[int] = []

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def forward(self, mel, face, *args, **kw):
        self.calls.append(len(face))
        return self.inner.forward(mel, face, *args, **kw)


@pytest.fixture(scope="module")
def torch_model(checkpoint):
    return load_executor(checkpoint, runtime="torch", device=torch.device("cpu"), precision="fp32")


def request(checkpoint, audio, out, **kw) -> LipSyncRequest:
    kw.setdefault("box", BOX)
    kw.setdefault("device", "cpu")
    kw.setdefault("precision", "fp32")
    kw.setdefault("runtime", "torch")
    return LipSyncRequest(face=str(FACE2), audio=str(audio), checkpoint=str(checkpoint), out=str(out), **kw)


# ---------------------------------------------------------------------------------------------
# the detector


def test_levels_are_librosa_rms_per_mel_column():
    import librosa

    wav = load_audio(SPEECH16K)
    got = silence.column_levels_db(wav)
    rms = librosa.feature.rms(y=wav, frame_length=800, hop_length=200, center=True, pad_mode="constant")[0]
    want = 20 * np.log10(np.maximum(rms.astype(np.float64), 1e-10))
    assert got.shape == want.shape
    loud = want > -100
    assert np.abs(got[loud] - want[loud]).max() < 0.01
    plan = make_plan(LipSyncRequest(face=str(FACE2), audio=str(SPEECH16K), checkpoint="c", out="o.mp4"),
                     probe_video(FACE2), wav)
    assert len(got) == plan.mel.shape[1]  # one level per mel column


def test_frames_in_a_long_silence_are_held_with_fades(tmp_path):
    audio = speech_with_gap(tmp_path / "gap.wav")
    info, wav = probe_video(FACE2), load_audio(audio)
    plan = make_plan(LipSyncRequest(face=str(FACE2), audio=audio, checkpoint="c", out="o.mp4"), info, wav)
    w = plan.weights
    n = len(plan.sources)
    assert n == math.ceil((GAP[1] + SPEECH_S) * FPS) and w.shape == (n,)
    for k in range(n):
        if window_touches(k, 0, GAP[0]) or window_touches(k, GAP[1], 9):
            assert w[k] == 1.0, f"frame {k} hears speech but is not fully synced ({w[k]})"
        # Inside the gap, farther than a hangover and a fade (0.3 s) from its ends: held.
        if window_in(k, GAP[0] + 0.3, GAP[1] - 0.3):
            assert w[k] == 0.0, f"frame {k} hears only silence but is not held ({w[k]})"
    # Fades: between the synced and held stretches the weight falls, then rises, strictly between.
    held = np.flatnonzero(w == 0)
    assert held.size >= 15 and np.all(np.diff(held) == 1), "one held stretch"
    down = w[: held[0]][::-1]
    up = w[held[-1] + 1:]
    for ramp in (down, up):
        fade = ramp[: np.argmax(ramp == 1.0)]
        assert 2 <= len(fade) <= 4 and np.all((fade > 0) & (fade < 1)), ramp[:6]
        assert np.all(np.diff(fade) > 0), fade  # rising away from the held stretch

    sync = make_plan(LipSyncRequest(face=str(FACE2), audio=audio, checkpoint="c", out="o.mp4",
                                    silence=protocol.SILENCE_SYNC), info, wav)
    assert sync.weights is None and sync.mel_starts == plan.mel_starts


def test_short_pauses_stay_synced_and_the_level_is_the_tracks_own(tmp_path):
    """A 0.25 s pause between words is not held; a quieter recording of the same speech (-20 dB)
    holds the same frames as the original (the threshold follows the track's level)."""
    info = probe_video(FACE2)
    short = load_audio(speech_with_gap(tmp_path / "short.wav", gap=(0.6, 0.85)))
    plan = make_plan(LipSyncRequest(face=str(FACE2), audio="a", checkpoint="c", out="o.mp4"), info, short)
    assert np.all(plan.weights == 1.0)

    loud = load_audio(speech_with_gap(tmp_path / "gap.wav"))
    quiet_path = write_wav(tmp_path / "quiet.wav", loud * 0.1)
    a = make_plan(LipSyncRequest(face=str(FACE2), audio="a", checkpoint="c", out="o.mp4"), info, loud)
    b = make_plan(LipSyncRequest(face=str(FACE2), audio="a", checkpoint="c", out="o.mp4"), info, load_audio(quiet_path))
    assert np.count_nonzero(a.weights == 0) > 10
    assert np.array_equal(a.weights, b.weights)


def test_outside_the_audible_window_is_silence_and_held():
    """--audible: the sound plays from 1.0 to 1.6 s of 3 s; before and after, frames are held."""
    info, wav = probe_video(FACE2), load_audio(SPEECH16K)
    plan = make_plan(LipSyncRequest(face=str(FACE2), audio="a", checkpoint="c", out="o.mp4", duration=3.0,
                                    audible=(1.0, 1.6)), info, wav)
    w = plan.weights
    for k in range(len(w)):
        if window_in(k, 0, 1.0 - 0.3) or window_in(k, 1.6 + 0.3, 3.0):
            assert w[k] == 0.0, k
        if window_touches(k, 1.0, 1.6):
            assert w[k] == 1.0, k


def test_bad_silence_and_offset_values_are_one_line_errors(tmp_path):
    audio = speech_with_gap(tmp_path / "a.wav")
    for kw, what in (({"silence": "mute"}, "--silence"), ({"sync_offset": float("nan")}, "--sync-offset")):
        with pytest.raises(Wav2LipError, match=what):
            check_request(LipSyncRequest(face=str(FACE2), audio=audio, checkpoint=str(audio), out=str(tmp_path / "o.mp4"), **kw))


# ---------------------------------------------------------------------------------------------
# end to end: held frames are the source and cost no forward; --silence sync is the original


def test_held_frames_are_the_source_and_skip_the_model(checkpoint, torch_model, tmp_path):
    audio = speech_with_gap(tmp_path / "gap.wav")
    n = math.ceil((GAP[1] + SPEECH_S) * FPS)
    src = decoded(FACE2)[:n]

    runs = {}
    for mode in (protocol.SILENCE_SYNC, protocol.SILENCE_HOLD):
        executor = CountingExecutor(torch_model)
        res = run(request(checkpoint, audio, tmp_path / f"{mode}.mp4", silence=mode, batch_size=8), executor=executor)
        assert res.frames == n and res.frames_with_face == n
        runs[mode] = (decoded(res.out), executor.calls)
    (sync_out, sync_calls), (hold_out, hold_calls) = runs["sync"], runs["hold"]
    assert sum(sync_calls) == n  # the original: every frame with a face goes through the model

    # Encoding noise: how far the decoded output is from the source where nothing was edited.
    y1, y2, x1, x2 = BOX
    above = (slice(0, y1), slice(None))
    noise = max(float(np.abs(o[above].astype(np.float32) - s[above]).mean()) for o, s in zip(hold_out, src))
    assert noise < 2.0
    d_hold = np.array([np.abs(mouth(o) - mouth(s)).mean() for o, s in zip(hold_out, src)])
    d_sync = np.array([np.abs(mouth(o) - mouth(s)).mean() for o, s in zip(sync_out, src)])
    assert d_sync.min() > 4 * noise, "test premise: the model visibly changes every synced mouth"

    looks_like_source = d_hold < 2 * noise
    speech = [k for k in range(n) if window_touches(k, 0, GAP[0]) or window_touches(k, GAP[1], 9)]
    deep = [k for k in range(n) if window_in(k, GAP[0] + 0.3, GAP[1] - 0.3)]
    assert len(deep) >= 10
    assert looks_like_source[deep].all(), d_hold[deep]  # held: the source mouth within encode noise
    assert not looks_like_source[speech].any(), d_hold[speech]  # speech: lip-synced
    # The speech frames are the original's lip-sync: far closer to it than to the source (the
    # encoder's choices differ after a held stretch, so not bit for bit here; see the next test).
    for k in speech:
        assert np.abs(mouth(hold_out[k]) - mouth(sync_out[k])).mean() < 0.2 * d_sync[k], k
    # The model ran for exactly the frames that do not look like the source.
    assert sum(hold_calls) == n - int(looks_like_source.sum())
    assert sum(hold_calls) <= n - len(deep) and all(c > 0 for c in hold_calls)
    # A batch (8 frames in output order) of held frames only never reaches the model.
    batches_with_synced = sum(not looks_like_source[b: b + 8].all() for b in range(0, n, 8))
    assert len(hold_calls) == batches_with_synced < len(sync_calls)

    # Fades lie between: each differs from the source along the synced frame's change, by a
    # fraction strictly between 0 and 1, falling into the hold and rising out of it.
    frac = []
    for k in range(n):
        ds = (mouth(sync_out[k]) - mouth(src[k])).ravel()
        dh = (mouth(hold_out[k]) - mouth(src[k])).ravel()
        frac.append(float(ds @ dh / (ds @ ds)))
    frac = np.array(frac)
    held = np.flatnonzero(looks_like_source)
    into, out_of = frac[held[0] - 3: held[0]], frac[held[-1] + 1: held[-1] + 4]
    assert np.all((into > 0.1) & (into < 0.9)) and np.all(np.diff(into) < 0), into
    assert np.all((out_of > 0.1) & (out_of < 0.9)) and np.all(np.diff(out_of) > 0), out_of


def test_hold_without_silence_writes_the_originals_file(checkpoint, torch_model, tmp_path):
    """Speech without pauses: --silence hold writes the very frames --silence sync (the original,
    checked bit for bit in test_pipeline's conformance tests) writes, with every frame synced."""
    audio = str(SPEECH16K)
    outs = {}
    for mode in (protocol.SILENCE_SYNC, protocol.SILENCE_HOLD):
        executor = CountingExecutor(torch_model)
        res = run(request(checkpoint, audio, tmp_path / f"{mode}.mp4", silence=mode, duration=0.6, crf=0),
                  executor=executor)
        outs[mode] = (decoded(res.out), sum(executor.calls))
    assert outs["sync"][1] == outs["hold"][1] == 15
    assert all(np.array_equal(a, b) for a, b in zip(outs["sync"][0], outs["hold"][0]))


# ---------------------------------------------------------------------------------------------
# the command line


def test_cli_audio_with_no_speech_keeps_the_source_and_says_so(checkpoint, tmp_path):
    audio = write_wav(tmp_path / "silent.wav", np.zeros(RATE, np.float32))
    out = tmp_path / "out.mp4"
    r = subprocess.run([sys.executable, "-m", "wav2lip_core", "--face", str(FACE2), "--audio", audio,
                        "--checkpoint", str(checkpoint), "--out", str(out), "--box", *map(str, BOX),
                        "--device", "cpu", "--progress", "json"], cwd=ROOT, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    events = [json.loads(line) for line in r.stdout.splitlines()]
    notes = [e["message"] for e in events if e.get("event") == "note"]
    assert any("silent throughout" in m for m in notes), notes
    got, src = decoded(out), decoded(FACE2)
    assert len(got) == FPS
    for o, s in zip(got, src):
        assert np.abs(o.astype(np.float32) - s).mean() < 2.0
        assert np.abs(mouth(o) - mouth(s)).mean() < 2.0
