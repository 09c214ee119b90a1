"""Event subscriptions: bounded, batched, closable, without I/O."""

from __future__ import annotations

import uuid

from fleetpulse.store import EventSubscription, StatusEvent
from tests.unit.api.records import NOW


def event(n: int) -> StatusEvent:
    return StatusEvent(
        id=n,
        agent_id=uuid.uuid4(),
        hostname="h",
        pool_name="p",
        at=NOW,
        from_status="online",
        to_status="offline",
        reason="silence",
    )


async def test_subscription_delivers_in_batches_and_times_out_empty() -> None:
    sub = EventSubscription(max_pending=10)
    sub.push([event(1), event(2)])
    assert [e.id for e in await sub.next_batch(1.0) or []] == [1, 2]
    assert await sub.next_batch(0.01) == []
    sub.close()
    assert await sub.next_batch(1.0) is None


async def test_subscription_falling_too_far_behind_is_closed() -> None:
    sub = EventSubscription(max_pending=2)
    sub.push([event(1)])
    sub.push([event(2), event(3)])
    assert sub.overflowed
    assert [e.id for e in await sub.next_batch(1.0) or []] == [1]
    assert await sub.next_batch(1.0) is None
    sub.push([event(4)])  # ignored once closed
    assert await sub.next_batch(0.01) is None
