"""The fake clock other tests drive time with."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from fleetpulse.agent import (
    FakeClock,
)


async def test_fake_clock_wakes_sleepers_only_at_their_deadline() -> None:
    clock = FakeClock()
    woke: list[float] = []

    async def sleeper(at: float) -> None:
        await clock.sleep_until(at)
        woke.append(at)

    tasks = [asyncio.create_task(sleeper(1001.0)), asyncio.create_task(sleeper(1002.0))]
    await asyncio.sleep(0)
    assert clock.sleepers == 2
    await clock.advance(1.0)
    await asyncio.sleep(0)
    assert woke == [1001.0]
    await clock.advance(1.0)
    await asyncio.gather(*tasks)
    assert woke == [1001.0, 1002.0]
    assert (clock.now() - FakeClock().now()).total_seconds() == 2.0


def test_the_fake_clock_is_also_the_wall_clock_ingest_takes() -> None:
    start = datetime(2026, 12, 6, 8, 0, tzinfo=UTC)
    clock = FakeClock(start=start)
    assert clock() == clock.now() == start
    clock.advance_nowait(90.5)
    assert clock() == start + timedelta(seconds=90.5)
