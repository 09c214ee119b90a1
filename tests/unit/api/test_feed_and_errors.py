"""Event subscriptions (bounded, closable) and the errors → HTTP mapping, without I/O."""

from __future__ import annotations

import uuid

import msgspec
from litestar.testing import RequestFactory

from fleetpulse.api.errors import EXCEPTION_HANDLERS
from fleetpulse.errors import NotFound, ServiceUnavailable, StoreError
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


def test_domain_errors_map_to_one_error_shape() -> None:
    request = RequestFactory().get("/api/v1/agents")
    cases = [
        (NotFound("no agent x"), 404),
        (ServiceUnavailable("database", "postgresql://db", "refused", "start it"), 503),
        (StoreError("refused"), 500),
        (RuntimeError("boom"), 500),
    ]
    for exc, status in cases:
        handler = next(
            h for t, h in EXCEPTION_HANDLERS.items() if isinstance(t, type) and isinstance(exc, t)
        )
        response = handler(request, exc)  # type: ignore[arg-type, operator]
        assert response.status_code == status
        body = msgspec.to_builtins(response.content)
        assert body["status_code"] == status
        assert body["detail"]
        assert "boom" not in body["detail"]
