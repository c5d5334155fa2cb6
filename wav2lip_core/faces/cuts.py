"""PLACEHOLDER until the cuts helper's detector lands: the old thumbnail test behind the
streaming ShotCuts interface."""

from __future__ import annotations

import cv2
import numpy as np

LOOKAHEAD = 0
CUT_THRESHOLD = 20.0


class ShotCuts:
    def __init__(self, lookahead: int = LOOKAHEAD):
        self.prev_i, self.prev = -1, None

    def push(self, i: int, rgb_small: np.ndarray) -> list[tuple[int, bool]]:
        g = cv2.resize(cv2.cvtColor(rgb_small, cv2.COLOR_RGB2GRAY), (32, 32), interpolation=cv2.INTER_AREA).astype(np.float32)
        cut = self.prev is not None and (i != self.prev_i + 1 or float(np.abs(g - self.prev).mean()) > CUT_THRESHOLD)
        self.prev_i, self.prev = i, g
        return [(i, bool(cut))]

    def finish(self) -> list[tuple[int, bool]]:
        return []
