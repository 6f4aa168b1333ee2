"""Temporal box smoothing, streaming: each smoother takes the boxes of one shot (no scene cut, no
missing face inside) one at a time and returns the boxes that became final, with bounded look-ahead.
"""
from __future__ import annotations

import numpy as np

from ..constants import SMOOTH_MODES

# The reference's window length (spec section 5).
MEAN5_WINDOW = 5


class Mean5:
    """The reference's in-place 5-box mean on integer boxes (spec section 5), streamed.

    Box i becomes trunc(mean(boxes[i:i+5])) using boxes not yet overwritten; in the last rows the
    window is the final 5 rows, which by then include overwritten ones; with n < 5 the window start
    is n - 5 taken as a Python negative index. Needs 4 boxes of look-ahead and the end of the shot.
    """

    def __init__(self) -> None:
        self.rows: list[np.ndarray] = []
        self.first = 0
        self.next = 0

    def push(self, box: np.ndarray) -> list[np.ndarray]:
        self.rows.append(np.asarray(box, dtype=np.int64).copy())
        out = []
        while self.next + MEAN5_WINDOW <= self.first + len(self.rows):
            out.append(self._overwrite(self.next, self.next))
            self.next += 1
        # Keep the rows a tail window may still read: the last 5 of the shot reach back to next - 1.
        drop = max(0, self.next - 1 - self.first)
        del self.rows[:drop]
        self.first += drop
        return out

    def finish(self) -> list[np.ndarray]:
        n = self.first + len(self.rows)
        start = n - MEAN5_WINDOW
        if start < 0:
            start = max(0, n + start)
        out = []
        while self.next < n:
            out.append(self._overwrite(self.next, start))
            self.next += 1
        self.rows, self.first, self.next = [], 0, 0
        return out

    def _overwrite(self, i: int, start: int) -> np.ndarray:
        window = self.rows[start - self.first : start - self.first + MEAN5_WINDOW]
        self.rows[i - self.first] = np.mean(window, axis=0).astype(np.int64)
        return self.rows[i - self.first]


class Centered:
    """Symmetric triangular-weighted window of `radius` boxes on each side: no lag.

    A symmetric window reproduces constant-velocity motion exactly, so fast head moves are not
    trailed the way a causal mean trails them; at the shot's ends the window shrinks symmetrically.
    """

    def __init__(self, radius: int = 2) -> None:
        self.radius = radius
        self.rows: list[np.ndarray] = []
        self.first = 0
        self.next = 0

    def push(self, box: np.ndarray) -> list[np.ndarray]:
        self.rows.append(np.asarray(box, dtype=np.float64))
        out = []
        while self.next + self.radius < self.first + len(self.rows):
            out.append(self._smooth(self.next, self.first + len(self.rows)))
            self.next += 1
        drop = max(0, self.next - self.radius - self.first)
        del self.rows[:drop]
        self.first += drop
        return out

    def finish(self) -> list[np.ndarray]:
        n = self.first + len(self.rows)
        out = [self._smooth(i, n) for i in range(self.next, n)]
        self.rows, self.first, self.next = [], 0, 0
        return out

    def _smooth(self, i: int, n: int) -> np.ndarray:
        r = min(self.radius, i, n - 1 - i)
        weights = np.concatenate([np.arange(1, r + 2), np.arange(r, 0, -1)]).astype(np.float64)
        window = np.stack(self.rows[i - r - self.first : i + r + 1 - self.first])
        return weights @ window / weights.sum()


class NoSmoothing:
    """Boxes as detected."""

    def push(self, box: np.ndarray) -> list[np.ndarray]:
        return [np.asarray(box)]

    def finish(self) -> list[np.ndarray]:
        return []


def make_smoother(mode: str, radius: int = 2) -> Mean5 | Centered | NoSmoothing:
    """A fresh smoother for one of SMOOTH_MODES."""
    if mode == "centered":
        return Centered(radius)
    if mode == "mean5":
        return Mean5()
    if mode == "none":
        return NoSmoothing()
    raise ValueError(f"unknown smoothing {mode!r}: choose from {', '.join(SMOOTH_MODES)}")
