"""Capped exponential backoff with full jitter, so a fleet never reconnects in lock-step."""

from __future__ import annotations

import random

__all__ = ["Backoff"]


class Backoff:
    """``next()`` is uniform in [0, min(max_s, initial_s·2^n)]; ``reset()`` after a success."""

    def __init__(self, initial_s: float, max_s: float, *, rng: random.Random | None = None) -> None:
        self.initial_s = initial_s
        self.max_s = max_s
        self.attempts = 0
        self._rng = rng or random.Random()

    def ceiling(self) -> float:
        return min(self.max_s, self.initial_s * 2.0 ** min(self.attempts, 62))

    def next(self) -> float:
        delay = self._rng.uniform(0.0, self.ceiling())
        self.attempts += 1
        return delay

    def reset(self) -> None:
        self.attempts = 0
