"""The sync meter inside a sync (quality/meter_live.py), the done event's sync_* keys, --no-meter,
--sync-offset auto (sync/autooffset.py) and serve's meter jobs.

The conformance checkpoints have random weights: their mouths are not mouths, so no output of
theirs can be expected to read as "in sync" (on the shared clips they read "no sync found", or
now and then a confident but meaningless peak; docs/meter.md). What is tested with them is the
plumbing: the reading is there, in the result, the done event and the CLI's line. The meter's
value inside a sync, and auto's decision, are tested where the truth is known: a stand-in model
that gives back the real face it was shown (the source clip, vretalk_face1, whose mouth follows
its own sound), so the output's mouth is a real mouth in a known relation to the sound.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys

import pytest

from conftest import BLAZEFACE, MEDIA, ROOT
from wav2lip_core import protocol as P
from wav2lip_core.faces.detectors import DetectorSettings
from wav2lip_core.jobs.request import done_event, parse_args, sync_line
from wav2lip_core.quality import meter
from wav2lip_core.sync import autooffset
from wav2lip_core.sync.pipeline import LipSyncRequest, run

FACE1 = MEDIA / "vretalk_face1.mp4"  # its own speech; the meter reads +1.26 frames on it
FACE2 = MEDIA / "vretalk_face2.mp4"
AUDIO1 = MEDIA / "vretalk_audio1.wav"
OTHER = MEDIA / "sadtalker_imagine.wav"  # another speaker
WEIGHTS = str(BLAZEFACE / "blazeface.pth")
DETECTOR = DetectorSettings(kind="blazeface", weights=WEIGHTS)


class SourceFace:
    """A stand-in for the model: the face it was shown (the input's unmasked half), whatever the
    sound. The output's mouth is then the source's real mouth, pasted back as a sync pastes."""

    name, precision, device = "source-face", "fp32", "cpu"

    def forward(self, mel, face, limit=None, stop=None):
        return face[:, 3:6]


def sync_face1(tmp_path, name="out.mp4", **kw):
    notes = []
    req = LipSyncRequest(face=str(FACE1), audio=str(kw.pop("audio", FACE1)), checkpoint="unused.pth",
                         out=str(tmp_path / name), device="cpu", detector="blazeface", detector_weights=WEIGHTS,
                         **kw)
    return run(req, executor=SourceFace(), note=notes.append), notes


def test_the_reading_inside_the_sync_is_what_the_meter_reads_on_the_output(tmp_path):
    result, _ = sync_face1(tmp_path)
    assert result.sync_verdict is not None and result.sync_confidence >= meter.MIN_CONFIDENCE, result
    after = meter.measure(result.out, detector=DETECTOR)  # decoded and detected again
    source = meter.measure(FACE1, detector=DETECTOR)
    assert after.offset_frames is not None and source.offset_frames is not None
    assert abs(result.sync_offset_measured - after.offset_frames) < 0.25, (result.sync_offset_measured, after)
    assert abs(result.sync_offset_measured - source.offset_frames) < 0.25
    assert "meter" in result.stage_seconds
    done = json.loads(done_event(result, 1.0).to_json())
    assert done["sync_offset_measured"] == result.sync_offset_measured
    assert done["sync_confidence"] == result.sync_confidence and done["sync_verdict"] == result.sync_verdict
    assert sync_line(result) == (f"sync: {result.sync_offset_measured:+.2f} frames ({result.sync_verdict}, "
                                 f"confidence {result.sync_confidence:.2f})")


def test_auto_applies_the_correction_when_confident_and_moves_with_a_known_shift(tmp_path):
    """The probe reads L (mouth L frames after its sound) and the job runs with -L. Delaying the
    sound by 2 frames (it starts 2 frames later) makes the mouth 2 frames early against it: the
    correction grows by +2 (a positive --sync-offset moves the mouth later)."""
    fps = 22.131  # vretalk_face1's average rate: --sync-offset frames are of that rate here
    plain, notes = sync_face1(tmp_path, "a.mp4", sync_offset_auto=True)
    assert any("sync offset auto: mouth measured" in n for n in notes), notes
    assert plain.sync_offset != 0 and abs(plain.sync_offset) <= P.SYNC_OFFSET_AUTO_MAX
    assert abs(plain.sync_offset + 1.26) < 0.5, plain.sync_offset  # the source's own lag, undone
    delayed, notes = sync_face1(tmp_path, "b.mp4", sync_offset_auto=True, audio_start=-2 / fps)
    assert any("using --sync-offset" in n for n in notes), notes
    assert abs((delayed.sync_offset - plain.sync_offset) - 2.0) < 0.5, (plain.sync_offset, delayed.sync_offset)


def test_auto_is_not_applied_and_says_so_when_the_sound_is_not_this_mouths(tmp_path):
    result, notes = sync_face1(tmp_path, audio=OTHER, sync_offset_auto=True, duration=5.5)
    assert result.sync_offset == 0.0
    assert any(n.startswith("sync offset auto: not applied") for n in notes), notes


def test_decide_clamps_and_refuses():
    def m(offset, confidence, verdict="x"):
        return meter.SyncMeasure(offset, None, confidence, verdict, "landmarks", 25.0)

    assert autooffset.decide(m(1.5, 0.7), 4.0)[:2] == (-1.5, True)
    offset, applied, note = autooffset.decide(m(-10.4, 0.8), 4.0)
    assert (offset, applied) == (P.SYNC_OFFSET_AUTO_MAX, True) and "clamped" in note
    assert autooffset.decide(m(2.0, 0.3), 4.0)[:2] == (0.0, False)
    assert autooffset.decide(m(None, 0.2, meter.NO_SYNC), 4.0)[:2] == (0.0, False)
    assert autooffset.probe_range(500, 25.0) == (175, 325) and autooffset.probe_range(200, 25.0) == (0, 200)


def test_parsing_sync_offset_auto_and_no_meter():
    base = ["--face", "f.mp4", "--audio", "a.wav", "--checkpoint", "c.pth", "--out", "o.mp4"]
    from wav2lip_core.jobs.request import make_request

    auto = make_request(parse_args(base + ["--sync-offset", "auto", "--no-meter"]))
    assert auto.sync_offset_auto and auto.sync_offset == 0.0 and not auto.meter
    plain = make_request(parse_args(base + ["--sync-offset", "-1.5"]))
    assert not plain.sync_offset_auto and plain.sync_offset == -1.5 and plain.meter
    with pytest.raises(SystemExit):
        parse_args(base + ["--sync-offset", "soon"])


def _cli(args, timeout=400):
    r = subprocess.run([sys.executable, "-m", "wav2lip_core", *args], cwd=ROOT, capture_output=True, text=True,
                       timeout=timeout)
    assert r.returncode == 0, r.stderr[-2000:]
    return r


def test_the_cli_reports_the_reading_and_no_meter_turns_it_off(checkpoint, tmp_path):
    """A real sync with the conformance checkpoint (random weights: no verdict is expected)."""
    common = ["--face", str(FACE2), "--audio", str(AUDIO1), "--checkpoint", str(checkpoint), "--duration", "2.5",
              "--device", "cpu", "--detector", "blazeface", "--detector-weights", WEIGHTS, "--cache-dir",
              str(tmp_path / "cache")]
    r = _cli(common + ["--out", str(tmp_path / "a.mp4"), "--progress", "json"])
    done = [P.parse_event(line) for line in r.stdout.splitlines()][-1]
    assert isinstance(done, P.Done) and done.sync_verdict and done.sync_confidence is not None
    assert done.sync_offset == 0
    r = _cli(common + ["--out", str(tmp_path / "b.mp4"), "--progress", "json", P.OPT_NO_METER])
    done = [P.parse_event(line) for line in r.stdout.splitlines()][-1]
    assert isinstance(done, P.Done) and done.sync_verdict is None and done.sync_confidence is None
    assert "sync_verdict" not in r.stdout.splitlines()[-1]
    r = _cli(common + ["--out", str(tmp_path / "c.mp4"), "--progress", "bar", "--sync-offset", "auto"])
    assert "sync offset auto: " in r.stderr and "\nsync: " in r.stderr


def test_serve_runs_a_meter_job():
    from wav2lip_core.jobs.serve import ServeLoop, _Job

    events = io.StringIO()
    loop = ServeLoop(events)
    loop.run_job(_Job("m1", [str(FACE1), "--detector", "blazeface", "--detector-weights", WEIGHTS], op=P.OP_METER))
    loop.run_job(_Job("m2", [str(FACE1), "--bogus"], op=P.OP_METER))
    got = [P.parse_event(line) for line in events.getvalue().splitlines()]
    done = [e for e in got if isinstance(e, P.Done)]
    assert len(done) == 1 and done[0].job == "m1" and done[0].out == str(FACE1)
    expected = meter.measure(FACE1, detector=DETECTOR)
    assert done[0].sync_offset_measured == expected.offset_frames and done[0].sync_verdict == expected.verdict
    assert any(isinstance(e, P.Progress) and e.stage == P.STAGE_METER and e.job == "m1" for e in got)
    errors = [e for e in got if isinstance(e, P.Error)]
    assert [e.job for e in errors] == ["m2"] and "bad job arguments" in errors[0].message
