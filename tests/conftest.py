"""Shared test fixtures. Test data lives in ../shared (never committed into the project)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
CONFORMANCE = SHARED / "conformance"
MEDIA = SHARED / "media"
BLAZEFACE = SHARED / "weights" / "blazeface"
# The interpreter that has the core and torch: this one, unless the suite runs under another
# Python (tools/test.sh runs tests/addon under a bpy 4.5 venv without torch and points here).
ENGINE_PYTHON = os.environ.get("WAV2LIP_TEST_ENGINE_PYTHON") or sys.executable
# One folder of OpenVINO-converted models for the whole session (engines run as subprocesses
# inherit it): a checkpoint is converted once per session (~15-25 s), not once per test, and the
# session's checkpoints never land in the user's cache folder.
_MODEL_CACHE = None
if not os.environ.get("WAV2LIP_MODEL_CACHE"):
    _MODEL_CACHE = tempfile.mkdtemp(prefix="wav2lip-test-models-")
    os.environ["WAV2LIP_MODEL_CACHE"] = _MODEL_CACHE


def pytest_sessionfinish(session, exitstatus):
    if _MODEL_CACHE is not None:
        shutil.rmtree(_MODEL_CACHE, ignore_errors=True)


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.fail(f"test data missing: {path} (the project's tests expect ../shared beside the clone)")
    return path


@pytest.fixture(scope="session")
def shared() -> Path:
    return _need(SHARED)


@pytest.fixture(scope="session")
def media() -> Path:
    return _need(MEDIA)


@pytest.fixture(scope="session")
def blazeface_dir() -> Path:
    return _need(BLAZEFACE)


def make_checkpoint(out: Path, *extra: str) -> Path:
    """Write a checkpoint with ../shared/conformance/make_checkpoint.py (the released layout)."""
    subprocess.run([ENGINE_PYTHON, str(_need(CONFORMANCE / "make_checkpoint.py")), str(out), *extra], check=True)
    return out


@pytest.fixture(scope="session")
def engine_python() -> str:
    """`<python> -m wav2lip_core` runs the real engine (env WAV2LIP_TEST_ENGINE_PYTHON, else this one)."""
    return ENGINE_PYTHON


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory) -> Path:
    """The conformance checkpoint, released layout with the `module.` prefix."""
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "wav2lip_conformance.pth", "--prefix", "module.")


@pytest.fixture(scope="session")
def loud_checkpoint(tmp_path_factory) -> Path:
    """A conformance checkpoint whose output follows the audio strongly (timing tests)."""
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "wav2lip_loud.pth", "--audio-gain", "8")


# FFmpeg colour-matrix codes -> swscale's names, for writing tagged test clips.
SWS_MATRIX = {1: "ITU709", 2: "ITU601", 5: "ITU601", 6: "ITU601"}


def write_tagged_clip(path, pictures, *, pix: str, tags: tuple, options: dict, codec: str = "libx264",
                      rotation: int = 0):
    """Encode BGR `pictures` (25 fps) as `pix` converted with, and tagged as, `tags` =
    (colorspace, range, primaries, trc) in FFmpeg's codes; `rotation`: display-matrix degrees."""
    import av
    from fractions import Fraction

    cs, rng, pri, trc = tags
    with av.open(str(path), "w") as out:
        first = pictures[0]
        s = out.add_stream(codec, rate=25)
        s.width, s.height = first.shape[1], first.shape[0]
        s.pix_fmt = pix
        cc = s.codec_context
        cc.colorspace, cc.color_range, cc.color_primaries, cc.color_trc = cs, rng, pri, trc
        s.options = options
        if rotation:
            s.set_display_rotation(rotation)
        for i, bgr in enumerate(pictures):
            vf = av.VideoFrame.from_ndarray(bgr, format="bgr24").reformat(
                format=pix, dst_colorspace=SWS_MATRIX[cs], dst_color_range="JPEG" if rng == 2 else "MPEG")
            vf.pts, vf.time_base = i, Fraction(1, 25)
            for packet in s.encode(vf):
                out.mux(packet)
        for packet in s.encode():
            out.mux(packet)
    return path


HEAVY_MODULES = ("torch", "numpy", "cv2", "av", "openvino", "face_alignment")


def heavy_imports(statement: str) -> list[str]:
    """The heavy libraries (HEAVY_MODULES) that running `statement` loads in a fresh interpreter
    in the checkout: what a fast start must not pay for."""
    code = f"import sys; {statement}; print(','.join(sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY_MODULES!r}))))"
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return [m for m in r.stdout.strip().split(",") if m]
