"""The ingest backoff: capped, jittered, resettable."""

from __future__ import annotations

import random

from fleetpulse.ingest import Backoff


async def test_backoff_is_capped_jittered_and_resettable() -> None:
    slept: list[float] = []

    async def sleep(s: float) -> None:
        slept.append(s)

    backoff = Backoff(0.1, 1.0, sleep=sleep, rng=random.Random(7))
    for _ in range(10):
        await backoff.wait()
    assert all(0 <= s <= 1.0 for s in slept)
    assert max(slept[:1]) <= 0.1
    assert len(set(slept)) == len(slept)  # jittered, not lock-step
    backoff.reset()
    assert backoff.attempt == 0
    assert backoff.next_delay() <= 0.1
