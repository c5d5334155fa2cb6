"""dlib's 68 landmarks from the pipeline's own face boxes, on real shared footage.

References are independent of the code under test: the face boxes come from BlazeFace, the
reference landmarks from dlib's own HOG face detector's rectangle (the box the predictor was
trained with), and tilts from the known angle a clip was turned by.
"""

from __future__ import annotations

import subprocess
import sys

import cv2
import dlib
import numpy as np
import pytest

from landmark_clips import KATIE, faces
from wav2lip_core.faces import landmarks
from wav2lip_core.media.decode import read_frames
from wav2lip_core.media.picture import Picture
from wav2lip_core.media.probe import probe_video

CLIPS = ("katie", "face2", "face1", "portrait")


@pytest.fixture(scope="module")
def predictor():
    return landmarks.load_predictor()


@pytest.mark.parametrize("name", CLIPS)
def test_points_land_on_the_face_in_the_box(predictor, name):
    for frame, box in faces(name):
        y1, y2, x1, x2 = box
        pts = predictor.points(frame, box)
        assert pts is not None, f"{name}: no landmarks for the face in {box}"
        assert pts.shape == (68, 2)
        inner = pts[17:]  # brows, nose, eyes, mouth: always inside a padded face box
        assert (inner[:, 0] >= x1).all() and (inner[:, 0] < x2).all(), f"{name}: points left the box"
        assert (inner[:, 1] >= y1).all() and (inner[:, 1] < y2).all(), f"{name}: points left the box"
        mouth = pts[landmarks.MOUTH]
        assert (mouth[:, 1] > (y1 + y2) / 2).all(), f"{name}: mouth not in the box's lower half"
        eyes = np.vstack([pts[landmarks.RIGHT_EYE], pts[landmarks.LEFT_EYE]])
        assert eyes[:, 1].max() < mouth[:, 1].min()


@pytest.mark.parametrize("name", CLIPS)
def test_points_agree_with_dlibs_own_detector_box(predictor, name):
    hog = dlib.get_frontal_face_detector()
    checked = 0
    for frame, box in faces(name):
        grey = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
        found = hog(grey, 0)
        if not found:
            continue
        shape = dlib.shape_predictor(landmarks.packaged_model(landmarks.MODEL_FILE))(grey, found[0])
        ref = np.array([(p.x, p.y) for p in shape.parts()], np.float64)
        pts = predictor.points(frame, box)
        eye_span = np.hypot(*(ref[42:48].mean(0) - ref[36:42].mean(0)))
        err = np.hypot(*(pts - ref).T)
        assert np.median(err) < 0.05 * eye_span, f"{name}: median {np.median(err):.1f} px off dlib's own"
        assert np.abs(pts[landmarks.MOUTH].mean(0) - ref[landmarks.MOUTH].mean(0)).max() < 0.08 * eye_span
        checked += 1
    assert checked, f"{name}: dlib's detector found no face to compare with"


def test_picture_frames_give_the_same_points(predictor):
    info = probe_video(KATIE)
    (frame, box), = faces("katie", (0,))
    (_, picture), = read_frames(info, [0], pictures=True)
    assert isinstance(picture, Picture) and picture.planar
    assert np.array_equal(predictor.points(picture, box), predictor.points(frame, box))


def test_boxes_without_a_face_give_none(predictor):
    frame, box = faces("katie", (0,))[0]
    y1, y2, x1, x2 = box
    size = y2 - y1
    h, w = frame.shape[:2]
    assert predictor.points(frame, (0, 150, 0, 150)) is None  # background, top left
    assert predictor.points(frame, (h - 150, h, w - 150, w)) is None  # shoulder, bottom right
    assert predictor.points(np.full_like(frame, 128), box) is None  # flat grey
    noise = cv2.GaussianBlur(np.random.default_rng(0).integers(0, 256, frame.shape, np.uint8), (0, 0), 3)
    assert predictor.points(noise, box) is None
    portrait, pbox = faces("portrait", (0,))[0]
    ph = portrait.shape[0]
    assert predictor.points(portrait, (ph - size, ph, 0, size)) is None  # body and background


@pytest.mark.parametrize("angle", [15, 30, -30])
def test_tilted_heads_keep_their_landmarks(predictor, angle):
    """Turned by a known angle about the face centre: the points are still found, their eye line
    turns by that angle, and they are the upright points turned (a few px)."""
    frame, box = faces("katie", (0,))[0]
    upright = predictor.points(frame, box)
    y1, y2, x1, x2 = box
    turn = cv2.getRotationMatrix2D(((x1 + x2 - 1) / 2, (y1 + y2 - 1) / 2), angle, 1.0)
    tilted = cv2.warpAffine(frame, turn, frame.shape[1::-1], borderMode=cv2.BORDER_REPLICATE)
    pts = predictor.points(tilted, box)
    assert pts is not None, f"no landmarks at {angle} degrees"
    eye_line = lambda p: np.degrees(np.arctan2(*(p[42:48].mean(0) - p[36:42].mean(0))[::-1]))  # noqa: E731
    assert abs(eye_line(pts) - (eye_line(upright) - angle)) < 3.0
    expected = upright @ turn[:, :2].T + turn[:, 2]
    eye_span = np.hypot(*(upright[42:48].mean(0) - upright[36:42].mean(0)))
    assert np.abs(pts[landmarks.MOUTH].mean(0) - expected[landmarks.MOUTH].mean(0)).max() < 0.06 * eye_span


def test_missing_extra_is_one_line_with_the_install_hint():
    """Without dlib: --blend mouth fails at request time with one line, --align auto is off."""
    code = ("import sys; sys.modules['dlib'] = None\n"
            "from wav2lip_core.faces import landmarks\n"
            "from wav2lip_core.sync.blend import predictor_for\n"
            "assert not landmarks.available()\n"
            "assert predictor_for('feather', 'auto') is None\n"
            "try:\n    predictor_for('mouth', 'auto')\n"
            "except landmarks.LandmarksUnavailable as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    lines = out.strip().splitlines()
    assert len(lines) == 1 and 'pip install "wav2lip-blender[landmarks]"' in lines[0]
    assert "non-commercial" in lines[0]


def test_predictor_is_loaded_once(predictor):
    assert landmarks.load_predictor() is predictor


def test_which_jobs_get_a_predictor(predictor):
    from wav2lip_core.sync.blend import predictor_for

    assert predictor_for("mouth", "off") is predictor
    assert predictor_for("feather", "auto") is predictor
    assert predictor_for("feather", "off") is None
    assert predictor_for("hard", "auto") is None  # the square paste is never turned
