"""The agent backoff: capped exponential with full jitter."""

from __future__ import annotations

import random

from fleetpulse.agent import (
    Backoff,
)


def test_backoff_is_capped_exponential_with_full_jitter() -> None:
    backoff = Backoff(0.5, 4.0, rng=random.Random(1))
    ceilings = []
    for _ in range(8):
        ceilings.append(backoff.ceiling())
        assert 0.0 <= backoff.next() <= ceilings[-1]
    assert ceilings == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0, 4.0, 4.0]
    backoff.reset()
    assert backoff.ceiling() == 0.5
    delays = {Backoff(1.0, 1.0, rng=random.Random(s)).next() for s in range(20)}
    assert len(delays) == 20  # jittered: no lock-step
