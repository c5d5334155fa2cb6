"""Colours kept: the output carries the source's YUV (matrix, range, tags), so OpenCV (which
ignores the matrix tag) and PyAV (which follows it) each see the output outside the face as they
see the source.

Sources are made here with PyAV from a shared clip, with a band of flat saturated bars on top:
on skin tones alone BT.601 and BT.709 differ by ~1 level, on saturated colours by 5-20, so a
wrong matrix cannot hide in the encoding noise.
"""

from __future__ import annotations

import math

import av
import cv2
import numpy as np
import pytest
from av.video.reformatter import Interpolation

from conftest import CONFORMANCE, MEDIA, SWS_MATRIX, write_tagged_clip
from wav2lip_core.media.colour import Colour, from_bgr, to_bgr
from wav2lip_core.media.decode import read_frames
from wav2lip_core.media.probe import probe_video
from wav2lip_core.sync.pipeline import LipSyncRequest, run

FACE2 = MEDIA / "vretalk_face2.mp4"
SIZE, N_SRC = 192, 6
BOX = (60, 150, 50, 140)  # y1 y2 x1 x2: the pasted square, away from the bars
BARS = [(40, 40, 200), (40, 200, 40), (200, 60, 40), (30, 200, 220), (210, 50, 200), (230, 220, 60)]  # BGR

# (colorspace, color_range, color_primaries, color_trc) as FFmpeg codes, and the pixel format.
SOURCES = {
    "untagged": ((2, 0, 2, 2), "yuv420p"),
    "bt601": ((6, 1, 6, 6), "yuv420p"),
    "bt709": ((1, 1, 1, 1), "yuv420p"),
    "full_range": ((2, 2, 2, 2), "yuvj420p"),
}


def source_pictures() -> list[np.ndarray]:
    pictures = []
    with av.open(str(FACE2)) as c:
        for frame in c.decode(video=0):
            bgr = cv2.resize(frame.to_ndarray(format="bgr24"), (SIZE, SIZE), interpolation=cv2.INTER_AREA)
            for k, colour in enumerate(BARS):
                bgr[:40, k * SIZE // len(BARS):(k + 1) * SIZE // len(BARS)] = colour
            pictures.append(bgr)
            if len(pictures) == N_SRC:
                return pictures
    raise AssertionError("source clip too short")


def make_source(path, kind: str):
    tags, pix = SOURCES[kind]
    return write_tagged_clip(path, source_pictures(), pix=pix, tags=tags, options={"crf": "10", "preset": "ultrafast"})


def read_opencv(path, n):
    cap = cv2.VideoCapture(str(path))
    frames = []
    while len(frames) < n:
        ok, bgr = cap.read()
        assert ok, f"OpenCV read only {len(frames)} frames of {path}"
        frames.append(bgr)
    cap.release()
    return frames


def read_pyav(path, n):
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="bgr24") for _, f in zip(range(n), c.decode(video=0))]


def outside_box() -> np.ndarray:
    mask = np.ones((SIZE, SIZE), bool)
    y1, y2, x1, x2 = BOX
    mask[y1:y2, x1:x2] = False
    return mask


def difference(a, b, mask) -> tuple[float, float]:
    """(mean absolute difference in levels, PSNR in dB) over the masked pixels."""
    d = a.astype(np.float64)[mask] - b.astype(np.float64)[mask]
    return float(np.abs(d).mean()), 10 * math.log10(255.0 ** 2 / float(np.mean(d * d)))


def tags_of(path):
    with av.open(str(path)) as c:
        cc = c.streams.video[0].codec_context
        return (cc.colorspace, cc.color_range, cc.color_primaries, cc.color_trc)


@pytest.mark.parametrize("kind", sorted(SOURCES))
def test_decode_then_encode_gives_back_the_source_yuv(tmp_path, kind):
    """The conversion pair on its own: to_bgr with the probed description, then from_bgr with the
    output description, returns the source's Y, U and V samples (no encoder in between)."""
    path = make_source(tmp_path / f"{kind}.mp4", kind)
    info = probe_video(path)
    (cs, rng, pri, trc), pix = SOURCES[kind]
    assert (info.colour.matrix, info.colour.primaries, info.colour.trc) == (cs, pri, trc)
    assert info.colour.full_range == (rng == 2)
    with av.open(str(path)) as c:
        frames = [f for _, f in zip(range(3), c.decode(video=0))]
    for frame, (_, bgr) in zip(frames, read_frames(info, range(3))):
        again = from_bgr(bgr, info.colour.output())
        for k in range(3):
            src = np.frombuffer(frame.planes[k], np.uint8).reshape(frame.planes[k].height, -1)[:, :frame.planes[k].width]
            got = np.frombuffer(again.planes[k], np.uint8).reshape(again.planes[k].height, -1)[:, :again.planes[k].width]
            err = np.abs(src.astype(int) - got)
            assert err.mean() < 0.1 and np.percentile(err, 99.9) <= 1, f"plane {k}: {err.mean():.3f} mean"


@pytest.mark.parametrize("kind", sorted(SOURCES))
def test_decoder_uses_the_tagged_matrix_and_range(tmp_path, kind):
    """On the flat bars (where chroma interpolation does not matter) our BGR equals FFmpeg's own
    conversion with the tagged matrix and range, and differs clearly from the other matrix."""
    path = make_source(tmp_path / f"{kind}.mp4", kind)
    (cs, rng, _, _), _ = SOURCES[kind]
    with av.open(str(path)) as c:
        frame = next(c.decode(video=0))
    width = SIZE // len(BARS)
    flat = np.zeros((SIZE, SIZE), bool)  # bar centres, away from their edges
    for k in range(len(BARS)):
        flat[8:32, k * width + 6:(k + 1) * width - 6] = True
    ours = to_bgr(frame, probe_video(path).colour)[flat]
    # Accurate rounding and full chroma interpolation: swscale's defaults round down by ~1 level.
    kw = dict(format="bgr24", src_color_range="JPEG" if rng == 2 else "MPEG",
              interpolation=Interpolation.BILINEAR | Interpolation.ACCURATE_RND | Interpolation.FULL_CHR_H_INT)
    right = frame.to_ndarray(src_colorspace=SWS_MATRIX[cs], **kw)[flat]
    wrong = frame.to_ndarray(src_colorspace="ITU709" if SWS_MATRIX[cs] == "ITU601" else "ITU601", **kw)[flat]
    assert np.abs(ours.astype(int) - right).max() <= 1
    assert np.abs(ours.astype(int) - wrong).mean() > 4.0


def test_rgb_and_image_sources_get_tagged_bt601():
    described = Colour(primaries=1, trc=13, rgb=True).output()
    assert (described.matrix, described.range, described.primaries, described.trc) == (6, 1, 1, 13)
    # A matrix swscale does not know (YCgCo) is decoded and re-encoded as BT.601, and tagged so.
    assert Colour(matrix=8, range=1).output().matrix == 6


@pytest.fixture
def request_for(checkpoint, tmp_path):
    def make(face, out) -> LipSyncRequest:
        return LipSyncRequest(face=str(face), audio=str(CONFORMANCE / "speech_16k.wav"), checkpoint=str(checkpoint),
                              out=str(out), box=BOX, blend="hard", smooth=False, device="cpu", precision="fp32",
                              duration=0.2, cache=False)
    return make


@pytest.mark.parametrize("kind", sorted(SOURCES))
def test_output_outside_the_face_matches_the_source_in_opencv_and_pyav(request_for, tmp_path, kind):
    src = make_source(tmp_path / f"{kind}.mp4", kind)
    res = run(request_for(src, tmp_path / "out.mp4"))
    assert res.frames == 5
    assert tags_of(res.out) == tags_of(src), "the output must carry the source's colour description"
    mask = outside_box()
    bars = np.zeros_like(mask)
    bars[4:36] = True
    for reader in (read_opencv, read_pyav):
        source, output = reader(src, res.frames), reader(res.out, res.frames)
        for k, (a, b) in enumerate(zip(source, output)):
            mad, psnr = difference(a, b, mask)
            assert mad <= 2.0 and psnr >= 38, f"{reader.__name__} frame {k}: {mad:.2f} levels, {psnr:.1f} dB"
            bar_mad, _ = difference(a, b, bars)
            assert bar_mad <= 1.5, f"{reader.__name__} frame {k}: saturated bars off by {bar_mad:.2f} levels"
            y1, y2, x1, x2 = BOX
            assert np.abs(a[y1:y2, x1:x2].astype(int) - b[y1:y2, x1:x2]).mean() > 3, "the face box was not replaced"
