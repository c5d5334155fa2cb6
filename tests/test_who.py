"""Who speaks: the chosen person is synced through cuts and absences and nobody else is touched,
several speakers each driven by their own audio in one pass, --face-at auto picks the face that
speaks. Clips are built from the shared real footage (who_clips.py); the model is the loud
conformance checkpoint (its mouth follows the audio strongly), outputs lossless (--crf 0), so an
untouched tile is bit-exact against the source and a synced one is not.
"""

from __future__ import annotations

import json
import subprocess
import wave
from dataclasses import replace
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

import who_clips
from conftest import CONFORMANCE, ENGINE_PYTHON, MEDIA
from wav2lip_core.errors import Wav2LipError
from wav2lip_core.faces import identity
from wav2lip_core.media.audio import load_audio
from wav2lip_core.sync.pipeline import LipSyncRequest, run
from wav2lip_core.sync.speakers import Speaker, parse_speaker

pytestmark = pytest.mark.skipif(not identity.available(), reason="needs the identity extra (dlib)")


def _write_wav(path: Path, samples: np.ndarray, rate: int = 16000) -> Path:
    with wave.open(str(path), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(rate)
        f.writeframes((np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes())
    return path


@pytest.fixture(scope="module")
def sounds(tmp_path_factory) -> dict[str, Path]:
    """Real speech (3.2 s, so 60-80 frames at 25 fps are covered) and silence as long."""
    d = tmp_path_factory.mktemp("sounds")
    speech = load_audio(CONFORMANCE / "speech_16k.wav")[: int(3.2 * 16000)]
    return {"speech": _write_wav(d / "speech.wav", speech), "silence": _write_wav(d / "silence.wav", 0 * speech)}


def _rgb(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24").astype(np.int16) for f in c.decode(video=0)]


def _change(src: list[np.ndarray], out: list[np.ndarray], box, frames) -> np.ndarray:
    """Mean absolute change inside box (x1, y1, x2, y2) per frame of `frames` (0 where None)."""
    vals = []
    for i in frames:
        b = box[i] if isinstance(box, list) else box
        if b is None:
            vals.append(0.0)
            continue
        x1, y1, x2, y2 = b
        vals.append(float(np.abs(src[i][y1:y2, x1:x2] - out[i][y1:y2, x1:x2]).mean()))
    return np.asarray(vals)


def _sync(clip_path: Path, out: Path, ckpt: Path, weights: Path, **kw):
    # 60-frame clips: 2.4 s at 25 fps (longer sounds would play the clip back and forth)
    kw.setdefault("duration", 2.4)
    req = LipSyncRequest(face=str(clip_path), audio=kw.pop("audio", ""), checkpoint=str(ckpt), out=str(out),
                         detector_weights=str(weights), crf=0, cache=False, **kw)
    notes: list[str] = []
    result = run(req, note=notes.append)
    return result, notes


def _centre(box) -> tuple[int, int]:
    x1, y1, x2, y2 = box
    return (x1 + x2) // 2, (y1 + y2) // 2


@pytest.fixture(scope="module")
def weights(blazeface_dir) -> Path:
    return blazeface_dir / "blazeface.pth"


@pytest.fixture(scope="module")
def swap_clip(tmp_path_factory):
    return who_clips.side_by_side_swap(tmp_path_factory.mktemp("swap"), frames=60, cut_at=30)


def test_the_chosen_person_is_synced_on_both_sides_of_a_cut_that_swaps_sides_and_the_other_never(
        swap_clip, tmp_path, loud_checkpoint, weights, sounds):
    clip = swap_clip
    face1, katie = clip.boxes["face1"], clip.boxes["katie"]
    # Point at face1 at time 0 (left); after the cut face1 is on the right.
    res, notes = _sync(clip.path, tmp_path / "out.mp4", loud_checkpoint, weights, audio=str(sounds["speech"]),
                       face_at=_centre(face1[0]))
    src, out = _rgb(clip.path), _rgb(tmp_path / "out.mp4")
    before, after = range(0, clip.cuts[0]), range(clip.cuts[0], clip.n_frames)
    assert _change(src, out, katie, range(clip.n_frames)).max() == 0.0  # never touched
    assert _change(src, out, face1, before).mean() > 0.5
    assert _change(src, out, face1, after).mean() > 0.5  # followed onto the right-hand side
    assert any("1 shot cut" in n for n in notes) and any("by identity" in n for n in notes)
    assert res.frames_with_face == clip.n_frames


def test_face_time_picks_the_person_at_that_time(swap_clip, tmp_path, loud_checkpoint, weights, sounds):
    """The right-hand pixel at 2.0 s (after the cut) is face1: face1 is synced on both sides."""
    clip = swap_clip
    t = (clip.cuts[0] + 10) / who_clips.FPS
    res, _ = _sync(clip.path, tmp_path / "out.mp4", loud_checkpoint, weights, audio=str(sounds["speech"]),
                   face_at=_centre(clip.boxes["face1"][clip.cuts[0] + 10]), face_time=t)
    src, out = _rgb(clip.path), _rgb(tmp_path / "out.mp4")
    assert _change(src, out, clip.boxes["katie"], range(clip.n_frames)).max() == 0.0
    assert _change(src, out, clip.boxes["face1"], range(0, clip.cuts[0])).mean() > 0.5


def test_a_pixel_on_no_face_is_one_line_naming_the_faces_command(swap_clip, tmp_path, loud_checkpoint, weights,
                                                                  sounds):
    with pytest.raises(Wav2LipError, match="no face at .*wav2lip faces VIDEO --time"):
        _sync(swap_clip.path, tmp_path / "out.mp4", loud_checkpoint, weights, audio=str(sounds["speech"]),
              face_at=(3, 250))
    assert not (tmp_path / "out.mp4").exists()


def test_a_person_who_leaves_and_returns_is_found_again_and_the_other_is_never_touched(
        tmp_path, loud_checkpoint, weights, sounds):
    clip = who_clips.leave_and_return(tmp_path, frames=80, gone=(25, 55), slide=0)
    face1, katie = clip.boxes["face1"], clip.boxes["katie"]
    _, notes = _sync(clip.path, tmp_path / "out.mp4", loud_checkpoint, weights, audio=str(sounds["speech"]),
                     face_at=_centre(face1[0]), duration=3.2)
    src, out = _rgb(clip.path), _rgb(tmp_path / "out.mp4")
    assert _change(src, out, katie, range(clip.n_frames)).max() == 0.0
    away = [i for i in range(clip.n_frames) if face1[i] is None]
    assert _change(src, out, (0, 0, 256, 256), away).max() == 0.0  # nobody synced while away
    assert _change(src, out, face1, range(0, 25)).mean() > 0.5
    assert _change(src, out, face1, range(58, 80)).mean() > 0.5  # found again on return


def test_two_speakers_each_driven_by_their_own_audio_and_swapping_the_audios_swaps_who_moves(
        swap_clip, tmp_path, loud_checkpoint, weights, sounds):
    clip = swap_clip
    everything = range(clip.n_frames)
    src = _rgb(clip.path)
    for speaking, silent in (("face1", "katie"), ("katie", "face1")):
        speakers = tuple(Speaker(*_centre(clip.boxes[p][0]), audio=str(sounds["speech" if p == speaking else "silence"]))
                         for p in ("face1", "katie"))
        out_path = tmp_path / f"{speaking}.mp4"
        res, notes = _sync(clip.path, out_path, loud_checkpoint, weights, speakers=speakers)
        out = _rgb(out_path)
        assert _change(src, out, clip.boxes[silent], everything).max() == 0.0, speaking
        assert _change(src, out, clip.boxes[speaking], everything).mean() > 0.5, speaking
        assert any("2 speakers' audios mixed" in n for n in notes)
        # The meter reads each speaker against their own audio: the silent one has no sound.
        readings = [n for n in notes if n.startswith("sync meter, ")]
        assert len(readings) == 2 and "no sound" in readings[("face1", "katie").index(silent)], readings
        assert "no sound" not in readings[("face1", "katie").index(speaking)], readings
        assert res.duration == pytest.approx(2.4, abs=0.05)


def test_speakers_placed_in_time_are_mixed_into_the_output_sound(tmp_path, loud_checkpoint, weights, sounds, swap_clip):
    """A at 0 s, B from 1.5 s: the output lasts to B's end and its sound is both."""
    clip = swap_clip
    a = _write_wav(tmp_path / "a.wav", 0.3 * np.sin(2 * np.pi * 440 * np.arange(16000) / 16000))  # 1 s tone
    b = _write_wav(tmp_path / "b.wav", 0.3 * np.sin(2 * np.pi * 880 * np.arange(8000) / 16000))  # 0.5 s tone
    speakers = (Speaker(*_centre(clip.boxes["face1"][0]), audio=str(a), start=0.0),
                Speaker(*_centre(clip.boxes["katie"][0]), audio=str(b), start=1.5))
    res, _ = _sync(clip.path, tmp_path / "out.mp4", loud_checkpoint, weights, speakers=speakers, duration=None)
    assert res.duration == pytest.approx(2.0, abs=0.05)
    heard = load_audio(tmp_path / "out.mp4")

    def energy(lo, hi, hz):
        seg = heard[int(lo * 16000): int(hi * 16000)]
        spec = np.abs(np.fft.rfft(seg))
        f = np.fft.rfftfreq(len(seg), 1 / 16000)
        return spec[(f > hz - 30) & (f < hz + 30)].sum() / spec.sum()

    assert energy(0.2, 0.8, 440) > 0.5 and energy(0.2, 0.8, 880) < 0.05  # A alone
    assert energy(1.6, 1.9, 880) > 0.5 and energy(1.6, 1.9, 440) < 0.05  # B alone, from 1.5 s
    assert float(np.abs(heard[int(1.1 * 16000): int(1.4 * 16000)]).max()) < 0.01  # between them

    # B heard only from 1.5 to 1.75 s (a trimmed sound strip): silence after, the output as long.
    trimmed = (speakers[0], replace(speakers[1], heard=(1.5, 1.75)))
    res, _ = _sync(clip.path, tmp_path / "trimmed.mp4", loud_checkpoint, weights, speakers=trimmed, duration=2.0)
    heard = load_audio(tmp_path / "trimmed.mp4")
    assert energy(1.55, 1.7, 880) > 0.5
    assert float(np.abs(heard[int(1.8 * 16000): int(1.95 * 16000)]).max()) < 0.01


def test_out_audio_is_the_output_sound_with_speakers(tmp_path, loud_checkpoint, weights, sounds, swap_clip):
    clip = swap_clip
    tone = _write_wav(tmp_path / "music.wav", 0.3 * np.sin(2 * np.pi * 330 * np.arange(40000) / 16000))
    speakers = (Speaker(*_centre(clip.boxes["face1"][0]), audio=str(sounds["speech"])),)
    res, _ = _sync(clip.path, tmp_path / "out.mp4", loud_checkpoint, weights, speakers=speakers, out_audio=str(tone),
                   duration=None)
    assert res.duration == pytest.approx(2.5, abs=0.05)
    heard = load_audio(tmp_path / "out.mp4")
    spec = np.abs(np.fft.rfft(heard[4000:20000]))
    f = np.fft.rfftfreq(16000, 1 / 16000)
    assert spec[(f > 300) & (f < 360)].sum() / spec.sum() > 0.5


def test_cuts_are_found_by_the_tracker_but_flashes_and_a_fast_pan_are_not(tmp_path, weights):
    from wav2lip_core.faces.detectors import DetectorSettings
    from wav2lip_core.faces.tracking import track_faces
    from wav2lip_core.media.decode import read_frames
    from wav2lip_core.media.probe import probe_video

    settings = DetectorSettings(kind="blazeface", weights=str(weights))
    for clip in (who_clips.flashes(tmp_path), who_clips.fast_pan(tmp_path), who_clips.hard_cuts(tmp_path)):
        info = probe_video(str(clip.path))
        track = track_faces(read_frames(info, range(info.frame_count)), info.frame_count, settings)
        assert list(track.shot_starts) == clip.cuts, clip.path.name


def _speaking_pair(path: Path, left_speaks: bool) -> Path:
    """face1 (speaking its own sound, at its own variable frame times) beside Katie (speaking
    something else), on the left or the right."""
    with av.open(str(MEDIA / "vretalk_face1.mp4")) as c:
        a = [(float(f.pts * f.time_base), f.to_ndarray(format="rgb24")) for f in c.decode(video=0)]
    b = who_clips.source_frames("katie", 200)
    t0 = a[0][0]
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=30, options={"crf": "14", "preset": "ultrafast"})
        s.width, s.height, s.pix_fmt = 512, 256, "yuv420p"
        s.codec_context.time_base = Fraction(1, 1000)
        for t, frame in a:
            one = cv2.resize(frame, (256, 256), interpolation=cv2.INTER_AREA)
            other = cv2.resize(b[min(int((t - t0) * 25), 199)], (256, 256), interpolation=cv2.INTER_AREA)
            vf = av.VideoFrame.from_ndarray(np.hstack([one, other] if left_speaks else [other, one]), format="rgb24")
            vf.pts, vf.time_base = int(round((t - t0) * 1000)), Fraction(1, 1000)
            c.mux(s.encode(vf))
        c.mux(s.encode())
    return path


@pytest.mark.parametrize("left_speaks", [True, False])
def test_face_at_auto_picks_the_face_whose_mouth_follows_the_audio(tmp_path, loud_checkpoint, weights, left_speaks):
    clip = _speaking_pair(tmp_path / "pair.mp4", left_speaks)
    sound = _write_wav(tmp_path / "own.wav", load_audio(MEDIA / "vretalk_face1.mp4"))
    _, notes = _sync(clip, tmp_path / "out.mp4", loud_checkpoint, weights, audio=str(sound), face_auto=True,
                     duration=None)
    picked = [n for n in notes if n.startswith("face auto")]
    assert len(picked) == 1, notes
    x = int(picked[0].split("the face at (")[1].split(",")[0])
    assert (x < 256) == left_speaks, picked[0]
    src, out = _rgb(clip), _rgb(tmp_path / "out.mp4")
    other = (256, 0, 512, 256) if left_speaks else (0, 0, 256, 256)
    assert _change(src, out, other, range(len(src))).max() == 0.0


def test_speaker_arguments_parse_and_bad_ones_are_one_line():
    assert parse_speaker(["10", "20", "a.wav"]) == Speaker(10, 20, "a.wav", 0.0, None)
    assert parse_speaker(["10", "20", "a.wav@-1.5", "2.25"]) == Speaker(10, 20, "a.wav", -1.5, 2.25)
    assert parse_speaker(["1", "2", "take@home.wav"]).audio == "take@home.wav"  # not a time: part of the name
    assert parse_speaker(["1", "2", "a.wav@3", "0.5", "3.5", "5"]).heard == (3.5, 5.0)
    for bad in (["10", "a.wav"], ["x", "20", "a.wav"], ["1", "2", "a.wav", "soon"], ["-1", "2", "a.wav"],
                ["1", "2", "a.wav", "0", "3"], ["1", "2", "a.wav", "0", "5", "3"]):
        with pytest.raises(Wav2LipError, match="--speaker takes X Y AUDIO"):
            parse_speaker(bad)


def test_the_cli_refuses_mixed_up_who_options_in_one_line(tmp_path, swap_clip, loud_checkpoint, sounds):
    base = [ENGINE_PYTHON, "-m", "wav2lip_core", "--face", str(swap_clip.path), "--checkpoint", str(loud_checkpoint),
            "--out", str(tmp_path / "o.mp4"), "--progress", "none"]
    cases = {
        ("--speaker", "1", "2", str(sounds["speech"]), "--audio", str(sounds["speech"])): "leave out --audio",
        ("--face-at", "12"): "--face-at takes X Y",
        (): "give the driving audio",
        ("--speaker", "1", "2", str(sounds["speech"]), "--face-at", "3", "4"): "leave out --face-at",
        ("--audio", str(sounds["speech"]), "--out-audio", str(sounds["speech"])): "--out-audio goes with --speaker",
    }
    for extra, message in cases.items():
        p = subprocess.run(base + list(extra), capture_output=True, text=True)
        assert p.returncode != 0 and message in p.stderr, (extra, p.stderr)
        assert "Traceback" not in p.stderr and len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert not (tmp_path / "o.mp4").exists()


def test_the_faces_command_lists_each_face_with_the_pixel_that_picks_it(swap_clip, weights):
    p = subprocess.run([ENGINE_PYTHON, "-m", "wav2lip_core", "faces", str(swap_clip.path), "--time", "1.6",
                        "--detector-weights", str(weights), "--json"], capture_output=True, text=True, check=True)
    found = json.loads(p.stdout)
    assert (found["width"], found["height"], found["frame"]) == (512, 256, 40)
    centres = sorted(((x1 + x2) // 2, (y1 + y2) // 2) for x1, y1, x2, y2 in found["faces"])
    assert len(centres) == 2
    tiles = [swap_clip.boxes["katie"][40], swap_clip.boxes["face1"][40]]  # after the cut: katie left
    for (x, y), (x1, y1, x2, y2) in zip(centres, tiles):
        assert x1 <= x < x2 and y1 <= y < y2
    text = subprocess.run([ENGINE_PYTHON, "-m", "wav2lip_core", "faces", str(swap_clip.path), "--time", "1.6",
                           "--detector-weights", str(weights)], capture_output=True, text=True, check=True).stdout
    assert text.count("--face-at ") == 2 and "--face-time 1.6" in text


def test_a_jobs_line_with_speakers_becomes_repeated_speaker_arguments_and_back():
    from wav2lip_core import batch_format as J

    job = {"face": "f.mp4", "speaker": [[10, 20, "a.wav@0", 1.5], [30, 40, "b.wav@2.5"]], "out": "o.mp4"}
    args = J.job_args(job)
    assert args == ["--face", "f.mp4", "--speaker", "10", "20", "a.wav@0", "1.5", "--speaker", "30", "40", "b.wav@2.5",
                    "--out", "o.mp4"]
    assert J.job_from_args(args) == job
    with pytest.raises(ValueError, match="list of lists"):
        J.job_args({"speaker": [10, 20, "a.wav"]})


def test_without_the_identity_extra_faces_are_followed_by_position_and_a_note_says_so(
        swap_clip, tmp_path, loud_checkpoint, weights, sounds):
    """dlib made unimportable in a fresh engine: the run still works, by position (the pixel's
    face in each shot), and tells the user how to follow one person instead."""
    code = (
        "import sys, json; sys.modules['dlib'] = None\n"
        "from wav2lip_core.sync.pipeline import LipSyncRequest, run\n"
        f"notes = []; run(LipSyncRequest(face={str(swap_clip.path)!r}, audio={str(sounds['speech'])!r}, "
        f"checkpoint={str(loud_checkpoint)!r}, out={str(tmp_path / 'out.mp4')!r}, detector_weights={str(weights)!r}, "
        "crf=0, cache=False, duration=2.4, face_at=(128, 128)), note=notes.append)\n"
        "print(json.dumps(notes))\n")
    p = subprocess.run([ENGINE_PYTHON, "-c", code], capture_output=True, text=True, check=True)
    notes = json.loads(p.stdout.strip().splitlines()[-1])
    assert any("identity is not installed" in n and "position only" in n for n in notes), notes
    src, out = _rgb(swap_clip.path), _rgb(tmp_path / "out.mp4")
    left = (0, 0, 256, 256)
    n = swap_clip.n_frames
    assert _change(src, out, left, range(n)).mean() > 0.5  # the pixel's face in both shots
    assert _change(src, out, (256, 0, 512, 256), range(n)).max() == 0.0


def test_a_jobs_file_resolves_speaker_audio_beside_it_and_resume_sees_it_change(tmp_path):
    import os

    from wav2lip_core.jobs.jobfile import parse_job

    (tmp_path / "a.wav").write_bytes(b"one")
    line = json.dumps({"face": "f.mp4", "speaker": [[10, 20, "a.wav@1.5", 0.5], [30, 40, "sub/b@x.wav"]],
                       "out": "o.mp4"})
    job = parse_job(1, line, tmp_path)
    assert job.error is None
    assert job.options["--speaker"] == [[10, 20, f"{tmp_path / 'a.wav'}@1.5", 0.5], [30, 40, str(tmp_path / "sub/b@x.wav")]]
    before = job.fingerprint
    (tmp_path / "a.wav").write_bytes(b"a longer take")
    os.utime(tmp_path / "a.wav", ns=(1, 1))
    assert parse_job(1, line, tmp_path).fingerprint != before
