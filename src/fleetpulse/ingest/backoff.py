"""Capped exponential backoff with full jitter, instant in tests through an injected sleep."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable

__all__ = ["Backoff"]


class Backoff:
    """``delay(n) = uniform(0, min(max_s, initial_s * 2**n))``: a fleet of workers retrying
    after one outage spreads out instead of stampeding in lock-step."""

    def __init__(
        self,
        initial_s: float,
        max_s: float,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self.initial_s = initial_s
        self.max_s = max_s
        self.attempt = 0
        self._sleep = sleep
        self._rng = rng or random.Random()

    def next_delay(self) -> float:
        ceiling = min(self.max_s, self.initial_s * 2 ** min(self.attempt, 62))
        self.attempt += 1
        return self._rng.uniform(0.0, ceiling)

    async def wait(self) -> float:
        delay = self.next_delay()
        await self._sleep(delay)
        return delay

    def reset(self) -> None:
        self.attempt = 0
