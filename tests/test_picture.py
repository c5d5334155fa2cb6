"""Only the face is converted: a Picture keeps the decoder's 4:2:0 planes, converts just the box
to BGR and writes back just what changed, so with a lossless encoder (x264 crf 0) every sample
outside the face box of the output is the source's own, bit for bit.

References are independent of the code under test: planes are read from the files with PyAV
(np.frombuffer on the decoded frame, rotated with np.rot90), BGR comes from the full-frame
path (read_frames without pictures), and the expected YUV of changed pixels from colour.from_bgr
on the full frame (today's writer).
"""

from __future__ import annotations


import av
import cv2
import numpy as np
import pytest

from conftest import MEDIA, write_tagged_clip
from wav2lip_core.sync.blend import crop_face, paste
from wav2lip_core.media.colour import from_bgr
from wav2lip_core.media.decode import read_frames
from wav2lip_core.media.encode import VideoWriter
from wav2lip_core.media.picture import Picture
from wav2lip_core.media.probe import probe_video

REAL = MEDIA / "sadtalker_WDA_KatieHill_000.mp4"  # 512x512 yuv420p
FACE2 = MEDIA / "vretalk_face2.mp4"
N = 4

# name: (coded size (w, h), pix_fmt, (colorspace, range, primaries, trc), display rotation)
CLIPS = {
    "full_range": ((160, 128), "yuvj420p", (2, 2, 2, 2), 0),
    "bt709": ((160, 128), "yuv420p", (1, 1, 1, 1), 0),
    "rotated90": ((160, 96), "yuv420p", (6, 1, 6, 6), 90),
    "rotated270": ((160, 96), "yuv420p", (2, 0, 2, 2), 270),
    "rotated180": ((160, 96), "yuv420p", (2, 0, 2, 2), 180),
    "odd": ((163, 97), "yuv420p", (2, 0, 2, 2), 0),  # VP9: x264 cannot encode odd 4:2:0 sizes
}
FALLBACK = {
    "yuv422p": ((160, 128), "yuv422p", (1, 1, 1, 1), 0),
    "10bit": ((160, 128), "yuv420p10le", (1, 1, 1, 1), 0),
    "rotated_odd": ((163, 97), "yuv420p", (2, 0, 2, 2), 90),
}


def make_clip(path, size, pix, tags, rotation):
    """N frames of a real clip, resized, encoded near-losslessly with these colour tags."""
    odd = size[0] % 2 or size[1] % 2
    with av.open(str(FACE2)) as c:
        pictures = [cv2.resize(frame.to_ndarray(format="bgr24"), size, interpolation=cv2.INTER_AREA)
                    for _, frame in zip(range(N), c.decode(video=0))]
    return write_tagged_clip(
        path, pictures, pix=pix, tags=tags, rotation=rotation, codec="libvpx-vp9" if odd else "libx264",
        options=({"crf": "10", "b": "0", "deadline": "realtime", "cpu-used": "8", "g": "2"} if odd
                 else {"crf": "8", "preset": "ultrafast", "g": "2"}))


def clip(tmp_path, table, name):
    return REAL if name == "real" else make_clip(tmp_path / f"{name}.mp4", *table[name])


def file_planes(path, rotation=0, n=N):
    """Each frame's (Y, U, V) as the file stores them, turned upright."""
    out = []
    with av.open(str(path)) as c:
        for _, frame in zip(range(n), c.decode(video=0)):
            assert frame.format.name in ("yuv420p", "yuvj420p")
            planes = []
            for p in frame.planes:
                data = np.frombuffer(p, np.uint8).reshape(p.height, p.line_size)[:, :p.width]
                planes.append(np.rot90(data, rotation // 90).copy())
            out.append(planes)
    return out


def tags_of(path):
    """(matrix, range, primaries, trc); range unspecified counts as limited, as every reader takes
    it (x264 leaves a limited-range, untagged stream's signal type out, VP9 always writes it)."""
    with av.open(str(path)) as c:
        cc = c.streams.video[0].codec_context
        return (cc.colorspace, cc.color_range or 1, cc.color_primaries, cc.color_trc)


def box_for(info):
    """A box with odd and even edges, well inside the frame."""
    h, w = info.height, info.width
    return (h // 4 + 1, 3 * h // 4, w // 4, 3 * w // 4 + 1)


def prediction(seed=0):
    return np.random.default_rng(seed).integers(0, 256, (96, 96, 3), np.uint8)


def outside(shape, box, scale=1):
    """True where a sample of a plane (subsampled by `scale`) does not touch the box."""
    y1, y2, x1, x2 = box
    mask = np.ones(shape, bool)
    mask[y1 // scale:(y2 - 1) // scale + 1, x1 // scale:(x2 - 1) // scale + 1] = False
    return mask


def sync(info, out, frames, box, blend="hard"):
    """A sync pass without the model: a fixed generated face pasted into every frame, then
    encoded losslessly. Returns what was written."""
    written = []
    with VideoWriter(out, width=info.width, height=info.height, fps=info.fps, crf=0, preset="ultrafast",
                     colour=info.colour) as writer:
        for k, (_, frame) in enumerate(frames):
            paste(frame, prediction(k), box, blend)
            writer.write(frame, k / info.fps)
            written.append(frame)
    return written


# -- the planes outside the face reach the output untouched -----------------------------------


@pytest.mark.parametrize("name", ["real", *sorted(CLIPS)])
def test_output_planes_equal_the_source_outside_the_box(tmp_path, name):
    src = clip(tmp_path, CLIPS, name)
    info = probe_video(src)
    box = box_for(info)
    pictures = sync(info, tmp_path / "out.mp4", read_frames(info, range(N), pictures=True), box)
    assert all(p.planar for p in pictures)
    assert tags_of(tmp_path / "out.mp4") == tags_of(src)
    source = file_planes(src, info.rotation)
    output = file_planes(tmp_path / "out.mp4")
    h, w = info.height, info.width
    for k, (a, b, kept) in enumerate(zip(source, output, pictures)):
        # The encoder pads odd sizes to even; the padding is not picture.
        b[0] = b[0][:h, :w]
        assert [p.shape for p in a] == [p.shape for p in b]
        for plane, scale in zip(range(3), (1, 2, 2)):
            mask = outside(a[plane].shape, box, scale)
            assert np.array_equal(a[plane][mask], b[plane][mask]), f"frame {k} plane {plane} changed outside the box"
            # Lossless really is lossless: inside the box too, the file holds what was written.
            assert np.array_equal(b[plane], kept.arrays[plane]), f"frame {k} plane {plane}: crf 0 was not lossless"
        y1, y2, x1, x2 = box
        assert np.abs(a[0][y1:y2, x1:x2].astype(int) - b[0][y1:y2, x1:x2]).mean() > 20, "the face was not pasted"


# -- the box: same BGR in, same YUV out as the full-frame path --------------------------------


@pytest.mark.parametrize("name", ["real", "full_range", "bt709", "rotated90", "rotated180", "odd"])
def test_region_bgr_is_the_full_frame_conversion_sliced(tmp_path, name):
    src = clip(tmp_path, CLIPS, name)
    info = probe_video(src)
    h, w = info.height, info.width
    boxes = [(0, h, 0, w), box_for(info), (1, 2, 1, 2), (h - 1, h, w - 3, w), (3, h - 1, 0, 5), (0, 7, w - 8, w - 1)]
    for (_, bgr), (_, picture) in zip(read_frames(info, range(2)), read_frames(info, range(2), pictures=True)):
        assert picture.planar and (picture.height, picture.width) == (h, w)
        assert np.array_equal(picture.to_bgr(), bgr)
        for y1, y2, x1, x2 in boxes:
            region = picture.region_bgr(y1, y2, x1, x2)
            assert np.array_equal(region, bgr[y1:y2, x1:x2]), (y1, y2, x1, x2)
        assert np.array_equal(crop_face(picture, box_for(info)), crop_face(bgr, box_for(info)))


@pytest.mark.parametrize("blend", ["hard", "feather"])
@pytest.mark.parametrize("name", ["real", "odd"])
def test_paste_writes_what_the_full_frame_writer_would_where_the_picture_changed(tmp_path, name, blend):
    """Y of each changed pixel and chroma of each 2x2 block with a changed pixel are exactly
    colour.from_bgr's on the frame pasted as an array (odd sizes padded as the writer pads);
    every other sample stays the decoder's."""
    src = clip(tmp_path, CLIPS, name)
    info = probe_video(src)
    h, w = info.height, info.width
    source = file_planes(src, n=1)[0]
    boxes = [box_for(info), (1, h, 0, w - 1), (h // 2, h, w // 2, w), (0, h, 0, w)]
    for k, box in enumerate(boxes):
        (_, bgr), = read_frames(info, [0])
        (_, picture), = read_frames(info, [0], pictures=True)
        before = bgr.copy()
        paste(bgr, prediction(k), box, blend)
        paste(picture, prediction(k), box, blend)
        changed = (bgr != before).any(axis=2)
        padded = cv2.copyMakeBorder(bgr, 0, h % 2, 0, w % 2, cv2.BORDER_REPLICATE)
        ref = from_bgr(padded, info.colour.output())
        ref = [np.frombuffer(p, np.uint8).reshape(p.height, p.line_size)[:p.height, :p.width] for p in ref.planes]
        y, u, v = picture.arrays
        assert np.array_equal(y[changed], ref[0][:h, :w][changed])
        assert np.array_equal(y[~changed], source[0][~changed])
        grown = cv2.copyMakeBorder(changed.astype(np.uint8), 0, h % 2, 0, w % 2, cv2.BORDER_REPLICATE)
        blocks = grown.reshape(grown.shape[0] // 2, 2, grown.shape[1] // 2, 2).any(axis=(1, 3))
        for got, want, src_plane in zip((u, v), ref[1:], source[1:]):
            assert np.array_equal(got[blocks], want[blocks])
            assert np.array_equal(got[~blocks], src_plane[~blocks])
        assert changed.sum() > 100, "the paste must change the picture for this test to mean anything"


def test_put_region_changes_only_what_changed():
    info = probe_video(REAL)
    (_, picture), = read_frames(info, [0], pictures=True)
    before = [a.copy() for a in picture.arrays]
    picture.put_region_bgr(11, 300, 5, 201, picture.region_bgr(11, 300, 5, 201))
    assert all(np.array_equal(a, b) for a, b in zip(before, picture.arrays)), "same pixels must change nothing"
    for channel in range(3):  # a change in any one channel is a change
        (_, bgr), = read_frames(info, [0])
        (_, picture), = read_frames(info, [0], pictures=True)
        bgr[101, 51, channel] ^= 0x80
        picture.put_region_bgr(100, 102, 50, 52, bgr[100:102, 50:52])
        ref = from_bgr(bgr, info.colour.output())
        want = [np.frombuffer(p, np.uint8).reshape(p.height, p.line_size)[:, :p.width] for p in ref.planes]
        y, u, v = picture.arrays
        assert y[101, 51] == want[0][101, 51] != before[0][101, 51]
        assert (u[50, 25], v[50, 25]) == (want[1][50, 25], want[2][50, 25]) != (before[1][50, 25], before[2][50, 25])
        y[101, 51], u[50, 25], v[50, 25] = before[0][101, 51], before[1][50, 25], before[2][50, 25]
        assert all(np.array_equal(a, b) for a, b in zip(before, picture.arrays)), "only that pixel and its block"
    with pytest.raises(ValueError):
        picture.region_bgr(0, 513, 0, 10)


# -- sources that are not 8-bit 4:2:0 hold BGR and are converted as before ---------------------


@pytest.mark.parametrize("name", sorted(FALLBACK))
def test_other_formats_fall_back_to_bgr_and_keep_their_tags(tmp_path, name):
    src = clip(tmp_path, FALLBACK, name)
    info = probe_video(src)
    box = box_for(info)
    bgr_frames = list(read_frames(info, range(N)))
    pictures = list(read_frames(info, range(N), pictures=True))
    assert not any(p.planar for _, p in pictures)
    assert all(np.array_equal(p.to_bgr(), b) for (_, p), (_, b) in zip(pictures, bgr_frames))
    sync(info, tmp_path / "pictures.mp4", pictures, box)
    sync(info, tmp_path / "arrays.mp4", bgr_frames, box)
    assert tags_of(tmp_path / "pictures.mp4") == tags_of(src)
    for a, b in zip(file_planes(tmp_path / "pictures.mp4"), file_planes(tmp_path / "arrays.mp4")):
        assert all(np.array_equal(p, q) for p, q in zip(a, b)), "the fallback must encode as the BGR path does"


def test_writer_in_another_colour_converts_the_planes(tmp_path):
    """A writer without the source's description (BT.601 limited) cannot take full-range planes
    as they are: it gets them converted, as it would the BGR frame."""
    src = clip(tmp_path, CLIPS, "full_range")
    info = probe_video(src)
    (_, picture), = read_frames(info, [0], pictures=True)
    (_, bgr), = read_frames(info, [0])
    for frame, out in ((picture, "pictures.mp4"), (bgr, "arrays.mp4")):
        with VideoWriter(tmp_path / out, width=info.width, height=info.height, fps=25, crf=0) as writer:
            writer.write(frame, 0.0)
    a, b = file_planes(tmp_path / "pictures.mp4", n=1)[0], file_planes(tmp_path / "arrays.mp4", n=1)[0]
    assert all(np.array_equal(p, q) for p, q in zip(a, b))
    assert not np.array_equal(a[0], picture.arrays[0])


# -- schedules: backward runs (in memory and spilled), repeats, images ---------------------------


@pytest.mark.parametrize("spill", [0, 1 << 30])
def test_backward_runs_and_repeats_serve_the_same_pictures(spill):
    info = probe_video(REAL)
    order = [0, 1, 2, 3, 4, 5, 5, 4, 3, 2, 1, 0, 0, 1]
    budget = 3 * 512 * 512 * 3  # three BGR frames: the six-frame backward run cannot stay in memory
    stats = {}
    bgr = dict(read_frames(info, range(6)))
    got = []
    for index, picture in read_frames(info, order, max_buffer_bytes=budget, spill_bytes=spill, stats=stats,
                                      pictures=True):
        assert isinstance(picture, Picture) and picture.planar
        got.append(index)
        assert np.array_equal(picture.to_bgr(), bgr[index]), index
        paste(picture, prediction(), (10, 60, 10, 60), "hard")  # the caller's own: must not leak into a repeat
    assert got == order
    assert (stats["spilled"] > 0) == bool(spill)


def test_image_sources_give_bgr_pictures(tmp_path):
    path = tmp_path / "face.png"
    with av.open(str(REAL)) as c:
        image = next(c.decode(video=0)).to_ndarray(format="bgr24")
    cv2.imwrite(str(path), image)
    info = probe_video(path)
    (_, picture), (_, again) = read_frames(info, [0, 0], pictures=True)
    assert not picture.planar and np.array_equal(picture.to_bgr(), image)
    paste(picture, prediction(), (10, 60, 10, 60), "hard")
    assert np.array_equal(again.to_bgr(), image)


def test_feather_is_a_soft_lower_face_mix_that_leaves_the_rest_alone():
    """Feather = the generated face where the mask is 1 (mouth and jaw), the source where it is 0
    (upper face, box border, outside the box), a mix in between: checked against the blend
    written out in floats here."""
    rng = np.random.default_rng(3)
    src = rng.integers(0, 256, (400, 500, 3), np.uint8)
    pred = rng.integers(0, 256, (96, 96, 3), np.uint8)
    box = (50, 350, 100, 380)  # 300 x 280
    out = src.copy()
    paste(out, pred, box, "feather")
    y1, y2, x1, x2 = box
    face = cv2.resize(pred, (x2 - x1, y2 - y1)).astype(np.float64)
    region = src[y1:y2, x1:x2].astype(np.float64)
    outside = np.ones(src.shape[:2], bool)
    outside[y1:y2, x1:x2] = False
    assert np.array_equal(out[outside], src[outside])
    got = out[y1:y2, x1:x2].astype(np.float64)
    # Per pixel the result lies between the source and the face (within rounding) ...
    assert np.all(got >= np.minimum(face, region) - 1) and np.all(got <= np.maximum(face, region) + 1)
    # ... is the source in the upper fifth (eyes up) and on the border, the face at the mouth.
    fifth = (y2 - y1) // 5
    assert np.array_equal(out[y1:y1 + fifth, x1:x2], src[y1:y1 + fifth, x1:x2])
    assert np.array_equal(out[y2 - 1, x1:x2], src[y2 - 1, x1:x2])
    mouth = (slice(int((y2 - y1) * 0.7), int((y2 - y1) * 0.75)), slice((x2 - x1) // 2 - 5, (x2 - x1) // 2 + 5))
    assert np.abs(got[mouth] - face[mouth]).max() <= 1
