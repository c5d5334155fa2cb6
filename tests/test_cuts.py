"""Shot cut detection (faces/cuts.py) on clips built from the shared footage (who_clips): every
hard cut at its exact frame, the side-by-side swap found, and no cut on flashes, fast pans, a
person leaving and coming back, or the talking-head motion of each shared clip."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

import who_clips
from wav2lip_core.faces.cuts import LOOKAHEAD, ShotCuts, find_cuts


@pytest.fixture(scope="module")
def clips(tmp_path_factory, media):
    d = tmp_path_factory.mktemp("who_clips")
    return {
        "swap": who_clips.side_by_side_swap(d),
        "leave": who_clips.leave_and_return(d),
        "flashes": who_clips.flashes(d),
        "pan": who_clips.fast_pan(d),
        "hard": who_clips.hard_cuts(d),
    }


def small(clip):
    return list(who_clips.read_small(clip.path))


def stream(frames, indices=None, lookahead=LOOKAHEAD):
    """All decisions of a ShotCuts fed `frames` (at `indices`), and the most frames it held."""
    det = ShotCuts(lookahead)
    decided, most = [], 0
    for i, f in zip(indices if indices is not None else range(len(frames)), frames):
        decided += det.push(i, f)
        most = max(most, det.buffered)
    decided += det.finish()
    return decided, most


def test_hard_cuts_found_at_their_exact_frames(clips):
    clip = clips["hard"]
    assert find_cuts(small(clip)) == clip.cuts == [14, 28, 42, 56, 70]


def test_side_by_side_swap_is_a_cut(clips):
    clip = clips["swap"]
    frames = small(clip)
    assert find_cuts(frames) == clip.cuts == [30]
    # the colours do not change at all, and half the width rolled round gives the new frame back
    a, b = frames[29].astype(float), frames[30].astype(float)
    hist = [cv2.calcHist([f], [0, 1, 2], None, [4, 4, 4], [0, 256] * 3).ravel() / f[..., 0].size for f in (frames[29], frames[30])]
    assert 0.5 * np.abs(hist[0] - hist[1]).sum() < 0.03
    rolled = np.roll(a, a.shape[1] // 2, axis=1)
    assert np.abs(rolled - b).mean() < 0.25 * np.abs(a - b).mean()
    assert clip.boxes["face1"][29][0] == 0 and clip.boxes["face1"][30][0] == 256


def test_no_cut_on_flashes(clips):
    clip = clips["flashes"]
    assert clip.flashes == [12, 27, 28, 44, 45, 46]
    assert find_cuts(small(clip)) == []


def test_old_thumbnail_test_calls_flashes_cuts(clips):
    """tracking.py's first cut test (32x32 grey mean-abs-diff > 20) takes every flash for a cut
    (and the return from it for another), which is why the tracker needs this detector."""
    threshold, thumb = 20.0, 32

    def th(f):
        return cv2.resize(cv2.cvtColor(f, cv2.COLOR_RGB2GRAY), (thumb, thumb), interpolation=cv2.INTER_AREA).astype(np.float32)

    frames = small(clips["flashes"])
    old = [i for i in range(1, len(frames)) if np.abs(th(frames[i]) - th(frames[i - 1])).mean() > threshold]
    assert old == [12, 13, 27, 29, 44, 47]


@pytest.mark.parametrize("step", [0.08, 0.15, 0.2])
def test_no_cut_on_a_fast_pan(tmp_path, media, step):
    clip = who_clips.fast_pan(tmp_path, frames=40, step=step)
    moves = [abs(b[0] - a[0]) for a, b in zip(clip.window, clip.window[1:])]
    assert min(moves) >= round(step * 256) - 1  # it really moves that fast, every frame
    assert find_cuts(small(clip)) == []


@pytest.mark.parametrize("slide", [6, 0])
def test_no_cut_when_a_person_leaves_and_returns(tmp_path, media, slide):
    clip = who_clips.leave_and_return(tmp_path, slide=slide)
    assert clip.boxes["face1"][30] is None and clip.boxes["face1"][0] == (0, 0, 256, 256)
    assert find_cuts(small(clip)) == []


@pytest.mark.parametrize("name", sorted(who_clips.SOURCES))
def test_no_cut_in_the_shared_clips(media, name):
    assert find_cuts(who_clips.read_small(who_clips.SOURCES[name])) == []


def test_decisions_in_order_once_each_and_memory_bounded(clips):
    frames = small(clips["flashes"]) + small(clips["hard"])
    for lookahead in (1, LOOKAHEAD):
        decided, most = stream(frames, lookahead=lookahead)
        assert [i for i, _ in decided] == list(range(len(frames)))
        assert most <= lookahead + 1
    det = ShotCuts()
    for i, f in enumerate(frames):
        late = [j for j, _ in det.push(i, f)]
        assert all(i - j <= LOOKAHEAD for j in late)


def test_a_gap_in_indices_is_a_cut(clips):
    frames = small(clips["flashes"])[:20]
    indices = list(range(10)) + list(range(15, 25))
    decided, _ = stream(frames, indices)
    assert [i for i, cut in decided if cut] == [15]
    assert [i for i, _ in decided] == indices
    with pytest.raises(ValueError):
        det = ShotCuts()
        det.push(3, frames[0])
        det.push(3, frames[1])


def test_a_cut_back_within_the_lookahead_is_two_cuts(clips):
    """A short insert of another shot (not brighter, not washed out) is no flash."""
    a = small(clips["flashes"])[:10]
    b = small(clips["hard"])[30:32]  # face2's shot: another person
    frames = a[:5] + b + a[5:]
    assert find_cuts(frames) == [5, 7]
