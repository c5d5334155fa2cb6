"""Shot boundaries, frame by frame: which frames start a new shot, so face tracking and box
smoothing restart there, while flashes and fast camera motion are not taken for cuts.

Each frame is reduced to a 64x64 grey thumbnail (lightly blurred; brightness and contrast are
normalised away by the comparisons) and a 4x4x4 RGB histogram. Two consecutive frames are in the
same shot when most of the first one's 16x16 blocks reappear in the second (normalised
correlation > BLOCK_NCC) moved by one of a few candidate global translations: no motion and the
strongest distinct phase-correlation peaks, each at most MAX_SHIFT (1/4) of the width/height and
compared without wrapping, so a fast pan or a person walking past a still background is followed
while a side-by-side swap (a half-width circular shift, identical colours) is not explained away.
The share of agreeing blocks ("structure") decides: >= MAYBE same shot; >= SIMILAR same shot
unless the colours changed too (histogram distance >= HIST_CUT); below, a suspected cut. A
suspected cut is held for up to `lookahead` frames: if a later frame matches the frame before it
again and every frame between is flash-like (the same structure, or washed out: a white or
black frame), those frames were a flash and no cut is reported; a short insert of another shot
is two cuts.

Measured (64x64 thumbnails of the tracker's 256 px copies; structure / colour distance):
  within a shot: the four shared clips, every consecutive pair: structure >= 0.938 (sadtalker's
  head turns; the others 1.0), colour <= 0.04; fast pans of 8-24 % of the width per frame
  (tests/who_clips.fast_pan): >= 0.889, colour <= 0.27; a person sliding out of / into a
  side-by-side frame at 14 % of the width per frame: >= 0.50 (half the picture moves one way,
  half stays), colour <= 0.09; vanishing at once: >= 0.875.
  across a cut: 5 hard cuts between different people / zooms: 0.0, colour 0.39-0.55; all 192
  ordered pairs of different people from the shared clips at zooms 1-2: <= 0.333, colour >= 0.18
  (<= 0.25 where colour < 0.35); the side-by-side swap: 0.11, colour 0.01.
  same person re-framed (the same clip 30 frames later at another zoom): zoom ratio >= 1.43 always
  a cut; 1.12-1.4 often not (structure up to 0.8: a jump cut that close looks like a camera move).
  flashes (60 % towards white, 2x brighter, 90 % towards white): structure 0.94-1.0 but colour up
  to 0.96; the frame after the flash matches the one before: no cut. The old 32x32 mean-abs-diff
  test (tracking.CUT_THRESHOLD 20) calls each of those flashes a cut (differences ~80-120).
  cost: ~0.7 ms/frame on a 256 px copy (2-core CPU shared with other jobs), most of it the
  thumbnail and the block correlations.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

# Side of the square grey thumbnail compared for structure (any aspect is squeezed into it), and
# the colour histogram's bins per channel.
THUMB = 64
HIST_BINS = 4
# The largest global translation tried between consecutive frames, as a fraction of the width /
# height: fast pans move 8-20 % a frame; a side-by-side swap is a 50 % (circular) shift and must
# not be explained away.
MAX_SHIFT = 0.25
# Frames a suspected cut waits for the picture before it to come back (a flash of up to
# LOOKAHEAD frames, 0.16 s at 25 fps, is rejected; decisions lag by as much).
LOOKAHEAD = 4
# Blocks compared and the normalised correlation at which one counts as the same content.
BLOCK = 16
BLOCK_NCC = 0.7
# Structure (share of agreeing blocks) thresholds, see the measurements above: within a shot
# >= 0.5 (a half-frame sliding away), across cuts between people <= 0.33.
SIMILAR = 0.45
MAYBE = 0.75
# Colour histogram distance (0..1) that, with an ambiguous structure, makes it a cut: within a
# shot <= 0.27 (fast pan), across cuts >= 0.18 (different people) but those have structure <= 0.33.
HIST_CUT = 0.35
# Grey standard deviation (0..255) under which a block or picture counts as flat (no structure).
FLAT_STD = 4.0
# A frame during a flash keeps its structure, or is washed out: its contrast under this share
# of the frame before's and its mean grey this far from it.
FLASH_BRIGHTER = 20.0
FLASH_WASHED = 0.6


@dataclass
class Features:
    """What one frame is compared by."""
    grey: np.ndarray  # (THUMB, THUMB) float32, lightly blurred
    spectrum: np.ndarray  # rfft2 of the windowed, zero-mean grey thumbnail
    hist: np.ndarray  # (HIST_BINS**3,) float32, sums to 1
    mean: float
    std: float


_WINDOW = np.outer(np.hanning(THUMB), np.hanning(THUMB)).astype(np.float32)


def features(rgb_small: np.ndarray) -> Features:
    t = cv2.resize(rgb_small, (THUMB, THUMB), interpolation=cv2.INTER_AREA)
    grey = cv2.GaussianBlur(cv2.cvtColor(t, cv2.COLOR_RGB2GRAY).astype(np.float32), (3, 3), 0)
    mean, std = float(grey.mean()), float(grey.std())
    spectrum = np.fft.rfft2((grey - mean) * _WINDOW)
    q = (t >> (8 - 2)).astype(np.int32)  # HIST_BINS = 4 levels per channel
    hist = np.bincount(((q[..., 0] * HIST_BINS + q[..., 1]) * HIST_BINS + q[..., 2]).ravel(), minlength=HIST_BINS ** 3)
    return Features(grey, spectrum, hist.astype(np.float32) / hist.sum(), mean, std)


_LIMIT = int(MAX_SHIFT * THUMB)
# phase-correlation peaks tried besides no motion
CANDIDATES = 3
_d = np.fft.fftfreq(THUMB, 1.0 / THUMB).astype(np.int64)  # 0, 1, .., -1: signed shift per index
_OUT_OF_RANGE = (np.abs(_d)[:, None] > _LIMIT) | (np.abs(_d)[None, :] > _LIMIT)


def shifts(a: Features, b: Features) -> list[tuple[int, int]]:
    """Candidate translations (dx, dy) from a's picture to b's, each at most MAX_SHIFT of the
    thumbnail: no motion and the strongest phase-correlation peaks within that range (the
    correlation is circular, but a peak beyond the range, e.g. the half-width shift of a
    side-by-side swap, is never tried)."""
    cross = b.spectrum * np.conj(a.spectrum)
    corr = np.fft.irfft2(cross / (np.abs(cross) + 1e-3), s=(THUMB, THUMB))
    corr[_OUT_OF_RANGE] = -np.inf
    out = [(0, 0)]
    # distinct peaks only (none next to one taken): with a still half and a moving half the
    # moving half's peak is found, not the still one's neighbours
    flat = corr.ravel()
    top = np.argpartition(flat, -8 * CANDIDATES)[-8 * CANDIDATES:]
    for k in top[np.argsort(flat[top])[::-1]]:
        d = (int(_d[k % THUMB]), int(_d[k // THUMB]))
        if all(max(abs(d[0] - e[0]), abs(d[1] - e[1])) > 1 for e in out):
            out.append(d)
            if len(out) > CANDIDATES:
                break
    return out


def structure(a: Features, b: Features) -> float:
    """The share (0..1) of a's textured BLOCK x BLOCK blocks that reappear in b, each moved by one
    of the candidate shifts (so two motions, e.g. a person walking past a still background, both
    count), with a normalised correlation above BLOCK_NCC (brightness and contrast do not count;
    nothing wraps around). Near 1 within a shot, low across a cut."""
    moves = shifts(a, b)
    main = max(moves, key=lambda d: _ncc_at(a.grey, b.grey, *d))
    ga = _blocks(a.grey)
    za, sa = ga - ga.mean(axis=1, keepdims=True), ga.std(axis=1)
    pad = np.pad(b.grey, _LIMIT, mode="edge")
    best = np.full(len(ga), -1.0)
    textured = sa >= FLAT_STD
    for dx, dy in moves:
        gb = _blocks(pad[_LIMIT + dy:_LIMIT + dy + THUMB, _LIMIT + dx:_LIMIT + dx + THUMB])
        sb = gb.std(axis=1)
        ncc = (za * (gb - gb.mean(axis=1, keepdims=True))).mean(axis=1) / np.maximum(sa * sb, 1e-6)
        inside = _inside(dx, dy)
        best = np.where(inside, np.maximum(best, ncc), best)
        if (dx, dy) == main:
            textured |= inside & (sb >= FLAT_STD)
    # judged: the blocks the main motion (the best whole-picture match) keeps in the picture
    # (those it carries out cannot be checked), with texture in a or where they land in b
    use = textured & _inside(*main)
    if not use.any():  # both pictures flat: the same if about as bright
        return 1.0 if abs(a.mean - b.mean) < 4 * FLAT_STD else 0.0
    return float((best[use] > BLOCK_NCC).mean())


def _ncc_at(a: np.ndarray, b: np.ndarray, dx: int, dy: int) -> float:
    """Normalised correlation of `a` and `b` over their overlap when b's content is a's moved by
    (dx, dy) pixels: b[y + dy, x + dx] ~ a[y, x]."""
    h, w = a.shape
    pa = a[max(0, -dy):h - max(0, dy), max(0, -dx):w - max(0, dx)]
    pb = b[max(0, dy):h - max(0, -dy), max(0, dx):w - max(0, -dx)]
    pa = pa - pa.mean()
    pb = pb - pb.mean()
    den = float(np.sqrt((pa * pa).sum() * (pb * pb).sum()))
    return float((pa * pb).sum()) / den if den > 1e-6 else 0.0


def _blocks(p: np.ndarray) -> np.ndarray:
    n = THUMB // BLOCK
    return p.reshape(n, BLOCK, n, BLOCK).transpose(0, 2, 1, 3).reshape(n * n, BLOCK * BLOCK)


@lru_cache(maxsize=None)
def _inside(dx: int, dy: int) -> np.ndarray:
    """Which blocks, moved by (dx, dy), stay wholly inside the picture."""
    n = THUMB // BLOCK
    y0 = np.repeat(np.arange(n) * BLOCK, n) + dy
    x0 = np.tile(np.arange(n) * BLOCK, n) + dx
    return (y0 >= 0) & (x0 >= 0) & (y0 + BLOCK <= THUMB) & (x0 + BLOCK <= THUMB)


def colour_change(a: Features, b: Features) -> float:
    """Total variation distance of the colour histograms, 0 (same) .. 1 (disjoint)."""
    return 0.5 * float(np.abs(a.hist - b.hist).sum())


def same_shot(a: Features, b: Features) -> bool:
    s = structure(a, b)
    return s >= MAYBE or (s >= SIMILAR and colour_change(a, b) < HIST_CUT)


def flash_like(ref: Features, f: Features) -> bool:
    """f could be ref's picture during a flash: the same structure (brightness and contrast do
    not count), or washed out (a white or black frame): much less contrast and much brighter or
    darker. A short insert of another shot is neither."""
    if structure(ref, f) >= SIMILAR:
        return True
    return f.std < FLASH_WASHED * ref.std and abs(f.mean - ref.mean) > FLASH_BRIGHTER


class ShotCuts:
    """Streaming cut detection. push() frames in order; decisions come back in order, each frame
    exactly once, at most `lookahead` frames late."""

    def __init__(self, lookahead: int = LOOKAHEAD):
        self.lookahead = lookahead
        self.ref: Features | None = None  # the last frame decided to belong to the current shot
        self.prev_i: int | None = None
        self.pending: deque[tuple[int, Features]] = deque()  # from a suspected cut on

    @property
    def buffered(self) -> int:
        """Frames whose features are held (the pending ones and the reference)."""
        return len(self.pending) + (self.ref is not None)

    def push(self, i: int, rgb_small: np.ndarray) -> list[tuple[int, bool]]:
        """Frame i (RGB uint8, the tracker's downscaled copy, max side ~256). Returns the frames
        whose status is decided now, in order, as (index, starts_a_new_shot). A gap in indices
        is a cut. Decisions may lag by up to `lookahead` frames (flash rejection)."""
        if self.prev_i is not None and i <= self.prev_i:
            raise ValueError(f"frame {i} pushed after frame {self.prev_i}: frames must come in order")
        out: list[tuple[int, bool]] = []
        gap = self.prev_i is not None and i != self.prev_i + 1
        self.prev_i = i
        f = features(rgb_small)
        if gap:
            out += self._settle()
            self.ref = f
            out.append((i, True))
            return out
        self._step(i, f, out)
        return out

    def finish(self) -> list[tuple[int, bool]]:
        """The rest, at the end of the clip."""
        return self._settle()

    def _step(self, i: int, f: Features, out: list[tuple[int, bool]]) -> None:
        if self.ref is None:
            self.ref = f
            out.append((i, False))
            return
        if not self.pending:
            if same_shot(self.ref, f):
                self.ref = f
                out.append((i, False))
            else:
                self.pending.append((i, f))
            return
        if same_shot(self.ref, f) and all(flash_like(self.ref, g) for _, g in self.pending):
            out += [(j, False) for j, _ in self.pending]  # a flash: the shot goes on
            self.pending.clear()
            self.ref = f
            out.append((i, False))
            return
        self.pending.append((i, f))
        if len(self.pending) > self.lookahead:
            out += self._confirm()

    def _confirm(self) -> list[tuple[int, bool]]:
        """The first pending frame starts a new shot; the frames after it are judged again
        against it."""
        out: list[tuple[int, bool]] = []
        j, g = self.pending.popleft()
        rest = list(self.pending)
        self.pending.clear()
        self.ref = g
        out.append((j, True))
        for k, h in rest:
            self._step(k, h, out)
        return out

    def _settle(self) -> list[tuple[int, bool]]:
        out: list[tuple[int, bool]] = []
        while self.pending:
            out += self._confirm()
        return out


def find_cuts(frames: Iterable[np.ndarray], lookahead: int = LOOKAHEAD) -> list[int]:
    """Indices of the frames (RGB, any size up to ~256 px a side) that start a new shot, not 0."""
    det = ShotCuts(lookahead)
    decided: list[tuple[int, bool]] = []
    for i, rgb in enumerate(frames):
        decided += det.push(i, rgb)
    decided += det.finish()
    return [i for i, cut in decided if cut]
