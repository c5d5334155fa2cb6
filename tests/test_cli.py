"""The command line as a user runs it: `python -m wav2lip_core ...` in a subprocess.

Exit codes: 0 success, 1 a problem with the inputs (exactly one stderr line `error: ...`, no
traceback), 2 bad arguments (argparse usage). `--progress json` prints one JSON object per line.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import wave
from pathlib import Path

import av
import numpy as np
import pytest

import wav2lip_core
from conftest import CONFORMANCE, MEDIA, ROOT, heavy_imports
from wav2lip_core import batch_format, protocol

FACE2 = MEDIA / "vretalk_face2.mp4"
SPEECH16K = CONFORMANCE / "speech_16k.wav"  # 16 kHz: no resampling in the short runs
BOX = ["225", "608", "192", "565"]  # the conformance face box in vretalk_face2


def wav2lip(*args, timeout: float = 180, env: dict | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, **(env or {}),
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    return subprocess.run([sys.executable, "-m", "wav2lip_core", *map(str, args)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def count_frames(path: Path) -> int:
    with av.open(str(path)) as c:
        return sum(1 for _ in c.decode(video=0))


def test_json_progress_and_success(checkpoint, tmp_path):
    out = tmp_path / "out.mp4"
    r = wav2lip("--face", FACE2, "--audio", SPEECH16K, "--checkpoint", checkpoint, "--out", out,
                "--box", *BOX, "--duration", "0.2", "--cache-dir", tmp_path / "cache", "--device", "cpu",
                "--progress", "json", "--protocol", str(protocol.PROTOCOL_VERSION))
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    lines = [json.loads(line) for line in r.stdout.splitlines()]  # every stdout line is JSON
    hello, *steps, final = lines
    assert hello == {"event": "hello", "protocol": protocol.PROTOCOL_VERSION, "version": wav2lip_core.__version__}
    assert steps, "no progress lines"
    for s in steps:
        assert set(s) == {"event", "stage", "done", "total"} and s["event"] == "progress", s
        assert all(isinstance(s[k], int) for k in ("done", "total")) and 0 <= s["done"] <= s["total"], s
    stages = [s["stage"] for s in steps]
    assert [st for i, st in enumerate(stages) if st not in stages[:i]] == ["audio", "load", "detect", "sync"]
    sync = [s for s in steps if s["stage"] == "sync"]
    assert sync[-1]["done"] == sync[-1]["total"] == 5  # ceil(0.2 s * 25 fps)
    assert [s["done"] for s in sync] == sorted(s["done"] for s in sync)
    assert final["event"] == "done" and final["frames"] == 5 and final["detector"] == "box"
    assert Path(final["out"]) == out and out.is_file()
    assert count_frames(out) == 5


def test_auto_detector_without_weights_says_which_it_used(checkpoint, tmp_path):
    """No BlazeFace weights anywhere (empty torch hub dir): auto runs Haar and a note says how to
    get the better detector."""
    out = tmp_path / "out.mp4"
    r = wav2lip("--face", FACE2, "--audio", SPEECH16K, "--checkpoint", checkpoint, "--out", out,
                "--duration", "0.2", "--cache-dir", tmp_path / "cache", "--device", "cpu", "--progress", "json",
                env={"TORCH_HOME": str(tmp_path / "torch-home")})
    assert r.returncode == 0, r.stderr
    events = [json.loads(line) for line in r.stdout.splitlines()]
    notes = [e["message"] for e in events if e["event"] == "note"]
    assert len(notes) == 1 and notes[0].startswith("face detector: Haar"), notes
    assert "install.py --detector-weights" in notes[0] and str(tmp_path / "torch-home") in notes[0]
    assert events[-1]["detector"] == "haar"


def test_another_protocol_version_is_refused_with_exit_3(tmp_path):
    r = wav2lip("--face", FACE2, "--audio", SPEECH16K, "--checkpoint", tmp_path / "c.pth", "--out", tmp_path / "o.mp4",
                "--progress", "json", "--protocol", str(protocol.PROTOCOL_VERSION + 1))
    assert r.returncode == protocol.EXIT_PROTOCOL == 3
    assert r.stdout == "" and r.stderr.count("\n") == 1 and "re-run install.py" in r.stderr


def test_help_and_argument_errors_do_not_import_torch():
    """`--help` answers at once: building the parser imports none of the heavy libraries."""
    assert heavy_imports("from wav2lip_core.jobs import cli, request; request.build_parser()") == []


def test_sigterm_cancels_cleanly(checkpoint, tmp_path):
    """What the add-on's Cancel does: SIGTERM mid-run -> exit 130, one line, no output, no temp file."""
    out = tmp_path / "out.mp4"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-m", "wav2lip_core", "--face", str(FACE2), "--audio", str(SPEECH16K),
                             "--checkpoint", str(checkpoint), "--out", str(out), "--box", *BOX, "--device", "cpu",
                             "--cache-dir", str(tmp_path / "cache"), "--progress", "json", "--batch-size", "2"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    for line in proc.stdout:  # wait until frames are being written
        e = json.loads(line)
        if e.get("stage") == "sync" and e["done"] >= 4:
            break
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert err.strip().splitlines() == ["error: cancelled; no output was written"]
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name != "cache"] == []  # no hidden temp file left


def _empty_wav(path: Path) -> Path:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(b"")
    return path


@pytest.mark.parametrize("case", ["missing-face", "corrupt-video", "empty-audio", "out-is-input",
                                  "no-detector-weights", "bad-batch-size"])
def test_input_errors_exit_1_with_one_line(checkpoint, tmp_path, case):
    face, audio, out = FACE2, SPEECH16K, tmp_path / "out.mp4"
    extra: list = ["--box", *BOX]
    named: Path | None = None  # the file the message must name
    if case == "missing-face":
        face = named = tmp_path / "missing.mp4"
    elif case == "corrupt-video":
        face = named = tmp_path / "corrupt.mp4"
        face.write_bytes(np.random.default_rng(5).integers(0, 256, 40_000, np.uint8).tobytes())
    elif case == "empty-audio":
        audio = named = _empty_wav(tmp_path / "empty.wav")
    elif case == "out-is-input":
        face = named = tmp_path / "face.mp4"
        face.write_bytes(FACE2.read_bytes())
        out = face
    elif case == "no-detector-weights":
        named = tmp_path / "nowhere" / "blazeface.pth"
        extra = ["--detector-weights", named]
    elif case == "bad-batch-size":
        extra += ["--batch-size", "0"]
    before = face.read_bytes() if face.exists() else None

    r = wav2lip("--face", face, "--audio", audio, "--checkpoint", checkpoint, "--out", out, "--duration", "0.2",
                "--cache-dir", tmp_path / "cache", "--device", "cpu", "--progress", "none", *extra)
    assert r.returncode == 1, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    assert r.stdout == ""
    if named is not None:
        assert str(named) in lines[0]
    if case == "out-is-input":
        assert face.read_bytes() == before
    else:
        assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.mp4")]  # no temp file left


@pytest.mark.parametrize("args", [
    ["--face", "f.mp4", "--audio", "a.wav", "--checkpoint", "c.pth"],  # --out missing
    ["--face", "f.mp4", "--audio", "a.wav", "--checkpoint", "c.pth", "--out", "o.mp4", "--blend", "bogus"],
    ["--face", "f.mp4", "--audio", "a.wav", "--checkpoint", "c.pth", "--out", "o.mp4", "--fps", "fast"],
    ["--face", "f.mp4", "--audio", "a.wav", "--checkpoint", "c.pth", "--out", "o.mp4", "--box", "1", "2", "3"],
], ids=["missing-out", "bad-choice", "not-a-number", "box-needs-4"])
def test_bad_arguments_exit_2(tmp_path, args):
    r = wav2lip(*args)
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert "usage:" in r.stderr and "Traceback" not in r.stderr
    assert r.stdout == ""


@pytest.mark.parametrize("option, value, words", [
    (protocol.OPT_ENCODER, "hevc", ["argument --encoder: invalid choice: 'hevc'", "libx264", "h264_nvenc"]),
    (protocol.OPT_PRESET, "placebo", ["argument --preset: invalid choice: 'placebo'", "veryfast"]),
    ("--crf", "60", ["argument --crf: 60 is out of range: use 0 (lossless) to 51"]),
])
def test_unknown_encoder_preset_or_crf_is_refused_with_one_line(tmp_path, option, value, words):
    r = wav2lip("--face", FACE2, "--audio", SPEECH16K, "--checkpoint", tmp_path / "c.pth", "--out",
                tmp_path / "o.mp4", option, value)
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr and r.stdout == ""
    errors = [line for line in r.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1, r.stderr
    for w in words:
        assert w in errors[0]
    assert not list(tmp_path.iterdir())


def test_preset_and_crf_reach_the_written_file(checkpoint, tmp_path):
    """--encoder libx264 --preset ultrafast --crf 30 end to end: x264's option string in the
    output (an SEI message in the first frame) shows ultrafast's settings and crf 30."""
    out = tmp_path / "out.mp4"
    r = wav2lip("--face", FACE2, "--audio", SPEECH16K, "--checkpoint", checkpoint, "--out", out, "--box", *BOX,
                "--duration", "0.2", "--cache-dir", tmp_path / "cache", "--device", "cpu", "--progress", "none",
                "--encoder", "libx264", "--preset", "ultrafast", "--crf", "30")
    assert r.returncode == 0, r.stderr
    with av.open(str(out)) as c:
        assert c.streams.video[0].codec_context.name == "h264"
    options = out.read_bytes().split(b" options: ", 1)[1].split(b"\x00", 1)[0].decode().split()
    assert {"cabac=0", "subme=0", "ref=1", "rc=crf", "crf=30.0"} <= set(options), options


@pytest.mark.parametrize("option, value", [("--audio-start", "-3.3e-05"), ("--audio-start", "-.5e1"),
                                           ("--duration", "-1e-3"), ("--fps", "-2E1"),
                                           ("--enhance-fidelity", "-1e-2"), ("--sync-offset", "-1e0")])
def test_a_negative_number_with_an_exponent_is_a_value_for_every_number_option(option, value):
    """argparse takes `-3.3e-05` for an option; the CLI (and serve, batch) read it as the value.
    (Range checks come later: here only that the value arrives.)"""
    from wav2lip_core.jobs.request import parse_args

    args = parse_args(["--face", "f.mp4", "--audio", "a.wav", "--checkpoint", "c.pth", "--out", "o.mp4",
                       option, value, "--progress", "json"])
    assert getattr(args, option[2:].replace("-", "_")) == float(value) and args.progress == "json"


def test_job_args_write_numbers_without_an_exponent():
    """What `wav2lip batch` passes for a JOBS file's numbers is plain decimal, read back exactly."""
    args = batch_format.job_args({"audio-start": -3.3e-05, "audible": [1e-05, 2.5], "duration": 1e16, "fps": 29.97})
    assert args == ["--audio-start", "-0.000033", "--audible", "0.00001", "2.5", "--duration", "10000000000000000",
                    "--fps", "29.97"]
    assert batch_format.job_from_args(args) == {"audio-start": -3.3e-05, "audible": [1e-05, 2.5], "duration": 1e16,
                                            "fps": 29.97}
