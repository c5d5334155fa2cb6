"""Tilted heads: a shared clip turned by 15 and 30 degrees (written with PyAV, so it has been
through an encoder), levelled for the model and turned back.

The references are the known turn the clip was made with and landmarks found afresh on the
levelled crop and on the pasted result, never the rotation code's own numbers.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from landmark_clips import boxes_for, faces, write_rotated_clip
from wav2lip_core.faces import align, landmarks
from wav2lip_core.sync.blend import crop_face, face_edit, paste
from wav2lip_core.media.decode import read_frames
from wav2lip_core.model.checkpoint import IMG_SIZE
from wav2lip_core.media.probe import probe_video

COUNT = 4


@pytest.fixture(scope="module")
def predictor():
    return landmarks.load_predictor()


def eye_line(pts) -> float:
    d = pts[landmarks.LEFT_EYE].mean(0) - pts[landmarks.RIGHT_EYE].mean(0)
    return float(np.degrees(np.arctan2(d[1], d[0])))


def turned_points(pts, deg: float):
    """The landmarks `pts` turned about their centre so that their eye line is at `deg` degrees."""
    turn = cv2.getRotationMatrix2D(tuple(pts.mean(0)), eye_line(pts) - deg, 1.0)
    return pts @ turn[:, :2].T + turn[:, 2]


def levelled_eye_line(predictor, crop96) -> float:
    """The eye line found afresh on the model's crop (scaled up 4x for the predictor)."""
    big = cv2.resize(crop96, (4 * IMG_SIZE, 4 * IMG_SIZE), interpolation=cv2.INTER_CUBIC)
    pts = predictor.points(big, (0, 4 * IMG_SIZE, 0, 4 * IMG_SIZE))
    assert pts is not None, "no landmarks on the levelled crop"
    return eye_line(pts)


@pytest.fixture(scope="module", params=[15, 30])
def tilted(request, tmp_path_factory):
    """(angle, [(tilted frame, BlazeFace box)], source->tilted matrix)."""
    angle = request.param
    path, turns = write_rotated_clip(tmp_path_factory.mktemp("tilt") / f"tilt{angle}.mp4", angle, COUNT)
    frames = [f for _, f in read_frames(probe_video(path), range(COUNT))]
    return angle, list(zip(frames, boxes_for(frames))), turns[0]


def test_the_crop_is_levelled(predictor, tilted):
    angle, items, _ = tilted
    upright = eye_line(predictor.points(*faces("katie", (0,))[0]))
    for frame, box in items:
        pts = predictor.points(frame, box)
        rot = align.rotation_for(pts, box)
        assert rot is not None
        # The landmarks' tilt is the clip's (the source face itself leans by `upright`).
        assert abs(rot.angle - (upright - angle)) < 3.0
        plain = levelled_eye_line(predictor, crop_face(frame, box))
        level = levelled_eye_line(predictor, crop_face(frame, box, rot))
        assert abs(plain - (upright - angle)) < 3.0, "the plain crop should show the clip's tilt"
        assert abs(level) < 3.0, f"levelled crop still tilted by {level:.1f} degrees"


def test_the_mouth_lands_where_it_was(predictor, tilted):
    """With the model standing in as identity (its output = its input), the face turned back and
    pasted has its mouth where the tilted source had it; turning back the wrong way misses."""
    angle, items, turn = tilted
    src_pts = predictor.points(*faces("katie", (0,))[0])
    for k, (frame, box) in enumerate(items):
        pts = predictor.points(frame, box)
        rot = align.rotation_for(pts, box)
        face = crop_face(frame, box, rot)
        wrong = frame.copy()
        paste(wrong, face, box, "feather", rotation=align.Rotation(rot.box, -rot.angle))
        out = frame.copy()
        paste(out, face, box, "feather", rotation=rot)
        found = predictor.points(out, box)
        assert found is not None
        eye_span = np.hypot(*(pts[landmarks.LEFT_EYE].mean(0) - pts[landmarks.RIGHT_EYE].mean(0)))
        mouth = landmarks.mouth_centre(found)
        assert np.hypot(*(mouth - landmarks.mouth_centre(pts))) < max(3.0, 0.03 * eye_span)
        if k == 0:  # the first frame is the upright source turned by the known matrix
            truth = landmarks.mouth_centre(src_pts) @ turn[:, :2].T + turn[:, 2]
            assert np.hypot(*(mouth - truth)) < max(4.0, 0.04 * eye_span)
        # The pixels tell the same: the mouth area matches the source much better than the
        # wrongly turned paste does.
        cx, cy = np.round(landmarks.mouth_centre(pts)).astype(int)
        r = int(0.25 * eye_span)
        area = (slice(cy - r, cy + r), slice(cx - r, cx + r))
        err = np.abs(out[area].astype(int) - frame[area]).mean()
        bad = np.abs(wrong[area].astype(int) - frame[area]).mean()
        assert err < 12 and bad > 2 * err, f"mouth area error {err:.1f} (wrong turn: {bad:.1f})"


def test_turned_paste_stays_inside_the_box(predictor, tilted):
    _, items, _ = tilted
    frame, box = items[0]
    y1, y2, x1, x2 = box
    rot = align.rotation_for(predictor.points(frame, box), box)
    out = frame.copy()
    paste(out, 255 - crop_face(frame, box, rot), box, "feather", rotation=rot)
    changed = (out != frame).any(axis=2)
    inside = np.zeros_like(changed)
    inside[y1 + 1: y2 - 1, x1 + 1: x2 - 1] = True
    assert changed.any() and not changed[~inside].any(), "pixels outside the box (or on its border) changed"


def test_mouth_mask_with_a_turn(predictor, tilted):
    """--blend mouth with --align auto: both from one set of landmarks; only the mouth changes,
    and with the model as identity the mouth comes back as it was, also where the turned crop's
    corner cuts through the mask (no black wedge: 99th percentile error 118-201 without the
    crop's footprint in the mask, 28-43 with it)."""
    _, items, _ = tilted
    for frame, box in items:
        edit = face_edit(predictor, frame, box, "mouth", "auto")
        assert edit.mask is not None and edit.rotation is not None
        y1, y2, x1, x2 = box
        out = frame.copy()
        paste(out, 255 - crop_face(frame, box, edit.rotation), box, "mouth", mask=edit.mask, rotation=edit.rotation)
        changed = (out != frame).any(axis=2)
        allowed = np.zeros_like(changed)
        allowed[y1:y2, x1:x2] = edit.mask > 0
        assert changed.any() and not changed[~allowed].any()
        same = frame.copy()
        paste(same, crop_face(frame, box, edit.rotation), box, "mouth", mask=edit.mask, rotation=edit.rotation)
        err = np.abs(same[y1:y2, x1:x2].astype(int) - frame[y1:y2, x1:x2]).max(axis=2)[edit.mask > 0.1]
        assert np.percentile(err, 99) < 60, f"mouth round trip: 99th percentile error {np.percentile(err, 99):.0f}"


def test_small_tilts_and_hard_are_not_turned(predictor):
    frame, box = faces("katie", (0,))[0]
    pts = predictor.points(frame, box)
    assert align.rotation_for(turned_points(pts, 1.0), box) is None
    assert abs(align.rotation_for(turned_points(pts, 10.0), box).angle - 10.0) < 1e-6
    assert align.rotation_for(turned_points(pts, 70.0), box) is None
    assert align.rotation_for(None, box) is None
    assert not align.applies("auto", "hard") and not align.applies("off", "feather")
    assert align.applies("auto", "feather") and align.applies("auto", "mouth")
    assert face_edit(predictor, frame, box, "hard", "auto").rotation is None
    with pytest.raises(ValueError):
        paste(frame.copy(), crop_face(frame, box), box, "hard", rotation=align.Rotation(box, 10.0))


def test_zero_turn_crop_is_the_plain_crop():
    """The affine crop uses cv2.resize's pixel centres: unturned, it is the plain crop up to the
    two functions' interpolation rounding."""
    for name in ("katie", "portrait"):
        frame, box = faces(name, (0,))[0]
        turned = crop_face(frame, box, align.Rotation(box, 0.0)).astype(int)
        plain = crop_face(frame, box).astype(int)
        assert np.abs(turned - plain).mean() < 0.6 and np.abs(turned - plain).max() <= 12


def test_picture_and_array_crops_agree(predictor):
    from landmark_clips import KATIE
    from wav2lip_core.media.picture import Picture

    frame, box = faces("katie", (0,))[0]
    rot = align.Rotation(box, 20.0)
    (_, picture), = read_frames(probe_video(KATIE), [0], pictures=True)
    assert isinstance(picture, Picture)
    assert np.array_equal(crop_face(picture, box, rot), crop_face(frame, box, rot))


# --- the Leveller: the angle over time ---------------------------------------------------------

class Counting:
    """The real predictor, counting its `points` calls."""

    def __init__(self, predictor):
        self.predictor, self.calls = predictor, 0

    def points(self, frame, box):
        self.calls += 1
        return self.predictor.points(frame, box)


def test_the_leveller_measures_every_few_frames_and_holds_the_angle(predictor, tmp_path):
    n = 2 * align.LEVEL_EVERY + 2
    path, _ = write_rotated_clip(tmp_path / "tilt20.mp4", 20, n)
    frames = [f for _, f in read_frames(probe_video(path), range(n))]
    box = boxes_for(frames[:1])[0]
    counting = Counting(predictor)
    leveller = align.Leveller(counting)
    rotations = [leveller.rotation(f, box) for f in frames]
    # Measured on frames 0, LEVEL_EVERY and 2 * LEVEL_EVERY only (a fixed box).
    assert counting.calls == leveller.measured == 3
    for frame, rot in zip(frames, rotations):
        exact = align.rotation_for(predictor.points(frame, box), box)
        assert rot is not None and exact is not None
        assert rot.box == box and abs(rot.angle - exact.angle) < 2.0
    # Levelling alone goes through the leveller; the mouth mask measures every frame.
    counting.calls = 0
    alone = align.Leveller(counting)
    edits = [face_edit(counting, f, box, "feather", "auto", alone) for f in frames[:3]]
    assert counting.calls == 1 and all(e.rotation is not None and e.mask is None for e in edits)
    mouth = align.Leveller(counting)
    edits = [face_edit(counting, f, box, "mouth", "auto", mouth) for f in frames[:3]]
    assert counting.calls == 4 and all(e.rotation is not None and e.mask is not None for e in edits)


def test_a_moved_box_is_measured_at_once(predictor):
    (frame, box), = faces("katie", (0,))
    counting = Counting(predictor)
    leveller = align.Leveller(counting)
    y1, y2, x1, x2 = box
    size = y2 - y1
    leveller.rotation(frame, box)
    leveller.rotation(frame, (y1 + 2, y2 + 2, x1, x2))  # a couple of pixels: held
    assert counting.calls == 1
    step = int(0.2 * size)
    leveller.rotation(frame, (y1, y2, x1 + step, x2 + step))  # a fifth of the box: measured
    assert counting.calls == 2
    leveller.rotation(frame, (y1, y2 + step, x1, x2 + step))  # resized: measured
    assert counting.calls == 3


def test_a_tilt_near_the_threshold_does_not_flicker(predictor):
    """Once turning, a face keeps turning until its tilt is HYSTERESIS below MIN_ANGLE."""
    (frame, box), = faces("katie", (0,))
    pts = predictor.points(frame, box)
    low = align.MIN_ANGLE - align.HYSTERESIS
    tilts = [align.MIN_ANGLE - 0.3, align.MIN_ANGLE + 0.5, align.MIN_ANGLE - 0.5, low + 0.2, low - 0.2,
             align.MIN_ANGLE - 0.2, align.MIN_ANGLE + 0.2]
    leveller = align.Leveller(predictor)
    turned = [leveller.from_points(turned_points(pts, t), box) is not None for t in tilts]
    assert turned == [False, True, True, True, False, False, True]
    # Frame by frame without a leveller, the same tilts switch on every crossing.
    assert [align.rotation_for(turned_points(pts, t), box) is not None for t in tilts] == \
        [False, True, False, False, False, False, True]
    assert leveller.from_points(None, box) is None  # landmarks lost: not turned
