"""`--blend mouth`: the mask from the landmarks, and the paste through it, on real frames.

What the mask must be is read off the landmarks and the box (lip centre, eye centres, box
border), not off the mask code; what the paste may change is compared with the source frame.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from landmark_clips import KATIE, faces
from wav2lip_core.faces import landmarks
from wav2lip_core.sync.blend import PLAIN, crop_face, face_edit, paste
from wav2lip_core.media.decode import read_frames
from wav2lip_core.faces.mouth_mask import mouth_mask
from wav2lip_core.media.picture import Picture
from wav2lip_core.media.probe import probe_video


@pytest.fixture(scope="module")
def predictor():
    return landmarks.load_predictor()


def at(mask, box, xy) -> float:
    y1, _, x1, _ = box
    return float(mask[int(round(xy[1])) - y1, int(round(xy[0])) - x1])


def fake_model_face(frame, box) -> np.ndarray:
    """A 96x96 'generated face' that differs from the source everywhere (colours inverted)."""
    return 255 - crop_face(frame, box)


@pytest.mark.parametrize("name", ["katie", "face2", "portrait"])
def test_mask_covers_the_mouth_only(predictor, name):
    for frame, box in faces(name):
        y1, y2, x1, x2 = box
        pts = predictor.points(frame, box)
        mask = mouth_mask(pts, box)
        assert mask.shape == (y2 - y1, x2 - x1) and mask.dtype == np.float32
        assert mask.min() >= 0.0 and mask.max() <= 1.0
        assert at(mask, box, pts[landmarks.INNER_LIPS].mean(0)) > 0.99, "not 1 on the lips"
        assert min(at(mask, box, p) for p in pts[landmarks.OUTER_LIPS]) > 0.9, "a lip point is left out"
        for eye in (pts[landmarks.RIGHT_EYE].mean(0), pts[landmarks.LEFT_EYE].mean(0)):
            assert at(mask, box, eye) == 0.0, "the mask reaches the eyes"
        assert mask[: (y2 - y1) // 4].max() == 0.0, "the mask reaches the forehead"
        assert mask[:, 0].max() == mask[:, -1].max() == mask[0].max() == mask[-1].max() == 0.0, "box border"
        # The cheeks keep the source: the jaw outline's middle points get (almost) none of the face.
        assert at(mask, box, pts[3]) < 0.05 and at(mask, box, pts[13]) < 0.05


def test_mask_scales_with_the_face(predictor):
    """The same face at half the size gets the same mask at half the size."""
    frame, box = faces("katie", (0,))[0]
    pts = predictor.points(frame, box)
    mask = mouth_mask(pts, box)
    y1, y2, x1, x2 = box
    half_box = (y1 // 2, y1 // 2 + (y2 - y1) // 2, x1 // 2, x1 // 2 + (x2 - x1) // 2)
    half = mouth_mask((pts + 0.5) / 2 - 0.5, half_box)
    shrunk = cv2.resize(mask, half.shape[::-1], interpolation=cv2.INTER_AREA)
    assert np.abs(shrunk - half).mean() < 0.02


@pytest.mark.parametrize("as_picture", [False, True])
def test_paste_changes_only_pixels_under_the_mask(predictor, as_picture):
    frame, box = faces("katie", (0,))[0]
    y1, y2, x1, x2 = box
    edit = face_edit(predictor, frame, box, "mouth", "off")
    assert edit.mask is not None and edit.rotation is None
    face = fake_model_face(frame, box)
    if as_picture:
        (_, target), = read_frames(probe_video(KATIE), [0], pictures=True)
        assert isinstance(target, Picture) and target.planar
        source = target.to_bgr()
    else:
        target, source = frame.copy(), frame
    paste(target, face, box, "mouth", mask=edit.mask)
    out = target.to_bgr() if as_picture else target
    changed = (out != source).any(axis=2)
    outside = np.ones(changed.shape, bool)
    under = edit.mask > 0
    if as_picture:  # 4:2:0: a changed pixel's chroma is shared with its 2x2 block
        under = cv2.dilate(under.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    outside[y1:y2, x1:x2] = ~under
    assert not changed[outside].any(), "pixels outside the mouth mask changed"
    assert changed[y1:y2, x1:x2][edit.mask > 0.99].mean() > 0.95, "the mouth was not replaced"
    pts = predictor.points(frame, box)
    cx, cy = np.round(pts[landmarks.INNER_LIPS].mean(0)).astype(int)
    expected = cv2.resize(face, (x2 - x1, y2 - y1))[cy - y1, cx - x1].astype(int)
    assert np.abs(out[cy, cx].astype(int) - expected).max() <= 3


def test_mouth_without_landmarks_is_feather(predictor):
    """A box on a non-face region: no landmarks, so the frame gets exactly the feather paste."""
    frame, _ = faces("katie", (0,))[0]
    box = (0, 200, 0, 200)
    edit = face_edit(predictor, frame, box, "mouth", "auto")
    assert edit is PLAIN
    face = fake_model_face(frame, box)
    mouth, feather = frame.copy(), frame.copy()
    paste(mouth, face, box, "mouth", mask=edit.mask, rotation=edit.rotation)
    paste(feather, face, box, "feather")
    assert np.array_equal(mouth, feather)
    assert not np.array_equal(feather, frame)


def test_no_predictor_means_plain(predictor):
    frame, box = faces("katie", (0,))[0]
    assert face_edit(None, frame, box, "mouth", "auto") is PLAIN
    assert face_edit(predictor, frame, box, "feather", "off") is PLAIN
    assert face_edit(predictor, frame, box, "hard", "auto") is PLAIN


def test_hard_paste_refuses_a_mask(predictor):
    frame, box = faces("katie", (0,))[0]
    edit = face_edit(predictor, frame, box, "mouth", "off")
    with pytest.raises(ValueError):
        paste(frame.copy(), fake_model_face(frame, box), box, "hard", mask=edit.mask)
