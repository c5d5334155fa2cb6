"""Who a face is (dlib's 128-d descriptors) on real shared footage, from BlazeFace's boxes.

The four shared clips show four different people; vretalk_face1 and liveportrait_d13 are the
closest pair for dlib's model (0.52-0.69 apart), so most checks use them.
"""

from __future__ import annotations

import subprocess
import sys
from functools import lru_cache

import cv2
import numpy as np
import pytest

from conftest import BLAZEFACE, MEDIA, ROOT
from wav2lip_core.faces import identity, landmarks
from wav2lip_core.faces.detectors import DetectorSettings, make_detector
from wav2lip_core.media.decode import read_frames
from wav2lip_core.media.probe import probe_video

pytest.importorskip("dlib")
if not identity.available():
    pytest.skip("the identity extra's model files are not installed", allow_module_level=True)

CLIPS = {
    "face1": MEDIA / "vretalk_face1.mp4",
    "portrait": MEDIA / "liveportrait_d13.mp4",
    "face2": MEDIA / "vretalk_face2.mp4",
    "katie": MEDIA / "sadtalker_WDA_KatieHill_000.mp4",
}
GALLERY = (0, 40, 80)
LATER = (100, 120)


@lru_cache(maxsize=1)
def _detector():
    return make_detector(DetectorSettings(kind="blazeface", weights=str(BLAZEFACE / "blazeface.pth")))


def boxes(rgb: np.ndarray) -> np.ndarray:
    """BlazeFace's (K, 4) x1 y1 x2 y2 in `rgb`'s pixels, detected at 256 px as tracking does."""
    s = 256 / max(rgb.shape[:2])
    small = cv2.resize(rgb, (round(rgb.shape[1] * s), round(rgb.shape[0] * s)), interpolation=cv2.INTER_AREA)
    s = small.shape[1] / rgb.shape[1]
    return _detector().detect(small)[:, :4] / s


@lru_cache(maxsize=None)
def _frames(name: str, indices: tuple[int, ...]) -> tuple[np.ndarray, ...]:
    return tuple(cv2.cvtColor(f, cv2.COLOR_BGR2RGB) for _, f in read_frames(probe_video(CLIPS[name]), indices))


def frame_and_box(name: str, index: int) -> tuple[np.ndarray, np.ndarray]:
    rgb = _frames(name, GALLERY + LATER)[(GALLERY + LATER).index(index)]
    found = boxes(rgb)
    assert len(found) == 1, f"{name} frame {index}: BlazeFace found {len(found)} faces"
    return rgb, found[0]


def shrunk(rgb: np.ndarray, box: np.ndarray, face_px: int) -> tuple[np.ndarray, np.ndarray]:
    """The frame scaled so the face box is `face_px` wide, and the face detected again in it."""
    s = face_px / (box[2] - box[0])
    small = cv2.resize(rgb, (round(rgb.shape[1] * s), round(rgb.shape[0] * s)), interpolation=cv2.INTER_AREA)
    found = boxes(small)
    assert len(found) == 1
    return small, found[0]


@pytest.fixture(scope="module")
def embedder():
    e = identity.load_embedder()
    assert e is not None
    return e


@lru_cache(maxsize=None)
def _gallery(name: str) -> np.ndarray:
    e = identity.load_embedder()
    return np.vstack([e.embed(*_one(name, i)) for i in GALLERY])


def _one(name: str, index: int) -> tuple[np.ndarray, np.ndarray]:
    rgb, box = frame_and_box(name, index)
    return rgb, box[None]


def test_descriptors_have_the_documented_shape(embedder):
    rgb, box = frame_and_box("face2", 0)
    out = embedder.embed(rgb, np.stack([box, box]))
    assert out.shape == (2, 128) and out.dtype == np.float32
    assert np.allclose(out[0], out[1])
    empty = embedder.embed(rgb, np.zeros((0, 4)))
    assert empty.shape == (0, 128) and empty.dtype == np.float32
    assert identity.distances(out, empty).shape == (0,)
    assert np.isinf(identity.distances(empty, out)).all()


@pytest.mark.parametrize("name", ["face1", "portrait", "katie"])
def test_the_same_person_later_in_the_clip_matches(embedder, name):
    gallery = _gallery(name)
    for index in LATER:
        rgb, box = frame_and_box(name, index)
        for image, b in ((rgb, box), shrunk(rgb, box, 60)):
            d = identity.distances(gallery, embedder.embed(image, b[None]))[0]
            assert d < identity.MATCH_DISTANCE, f"{name} frame {index} ({b[2] - b[0]:.0f} px face): {d:.3f}"


@pytest.mark.parametrize("gallery_of, probe_of", [("face1", "portrait"), ("portrait", "face1"), ("face2", "katie")])
def test_different_people_do_not_match(embedder, gallery_of, probe_of):
    gallery = _gallery(gallery_of)
    for index in LATER:
        rgb, box = frame_and_box(probe_of, index)
        for image, b in ((rgb, box), shrunk(rgb, box, 60)):
            d = identity.distances(gallery, embedder.embed(image, b[None]))[0]
            assert d > identity.MATCH_DISTANCE, f"{probe_of} matched {gallery_of}: {d:.3f}"


def test_two_faces_side_by_side_each_match_their_own_gallery(embedder):
    # The closest pair of people, each cut square around the face and scaled so the faces are
    # ~90 px, side by side in one picture.
    tiles = []
    for name in ("face1", "portrait"):
        rgb, (x1, y1, x2, y2) = frame_and_box(name, 120)
        side = 2 * (x2 - x1)
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        top, left = int(max(0, cy - side / 2)), int(max(0, cx - side / 2))
        square = rgb[top: top + int(side), left: left + int(side)]
        tiles.append(cv2.resize(square, (180, 180), interpolation=cv2.INTER_AREA))
    picture = np.ascontiguousarray(np.hstack(tiles))
    found = boxes(picture)
    assert len(found) == 2
    found = found[np.argsort(found[:, 0])]
    out = embedder.embed(picture, found)
    for row, (name, other) in enumerate((("face1", "portrait"), ("portrait", "face1"))):
        own = identity.distances(_gallery(name), out[row:row + 1])[0]
        theirs = identity.distances(_gallery(other), out[row:row + 1])[0]
        assert own < identity.MATCH_DISTANCE < theirs, f"{name}: own {own:.3f}, {other} {theirs:.3f}"


def test_a_face_box_on_the_picture_edge_still_matches(embedder):
    # The frame cut through the face's box: the box touches the border and a strip of the face
    # is gone; the fit and the chip see repeated edge pixels there.
    rgb, (x1, y1, x2, y2) = frame_and_box("face1", 120)
    for cut in (x1, x1 + 0.15 * (x2 - x1)):
        part = np.ascontiguousarray(rgb[:, int(cut):])
        found = boxes(part)
        assert len(found) == 1 and found[0, 0] < 2
        d = identity.distances(_gallery("face1"), embedder.embed(part, found))[0]
        assert d < identity.MATCH_DISTANCE


def test_the_embedder_is_one_per_process(embedder):
    assert identity.load_embedder() is embedder


def test_models_are_found_without_importing_face_recognition_models():
    code = ("import sys\nfrom wav2lip_core.faces import identity\n"
            "assert identity.load_embedder() is not None\n"
            "assert 'face_recognition_models' not in sys.modules, 'imported'\n"
            "from wav2lip_core.faces import landmarks\n"
            "assert landmarks.packaged_model('no_such_model.dat') is None\n")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, timeout=120)


def test_without_dlib_there_is_no_embedder_and_a_note():
    # dlib blocked from importing, as when the extra is not installed.
    code = ("import sys\nsys.modules['dlib'] = None\nfrom wav2lip_core.faces import identity\n"
            "assert not identity.available() and identity.load_embedder() is None\n")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, timeout=120)
    assert "wav2lip-blender[identity]" in identity.MISSING_NOTE and "\n" not in identity.MISSING_NOTE
    assert landmarks.packaged_model(identity.SHAPE_FILE) and landmarks.packaged_model(identity.NET_FILE)
