"""Two machines with one agent_id are detected, not merged (issue 11, part 3)."""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime
from typing import Any

import msgspec
import pytest

from fleetpulse.messages import Heartbeat
from tests.fixtures.ingest import (
    FakeClock,
    heartbeat,
    publish,
    query,
    running_ingest,
    scalar,
    settings_for,
    wait_until,
)

pytestmark = pytest.mark.slow(5)


def beat(agent: uuid.UUID, seq: int, at: datetime, run: uuid.UUID, host: str) -> Heartbeat:
    return msgspec.structs.replace(
        heartbeat(agent, seq, sampled_at=at, hostname=host), incarnation=run
    )


def reasons(db_url: str, agent: uuid.UUID) -> list[str]:
    rows = query(
        db_url, "SELECT reason FROM agent_status_events WHERE agent_id = %s ORDER BY id", agent
    )
    return [r[0] for r in rows]


def clash_since(db_url: str, agent: uuid.UUID) -> Any:
    return scalar(
        db_url, "SELECT identity_clash_since FROM agent_registry WHERE agent_id = %s", agent
    )


async def test_two_machines_with_one_agent_id_are_flagged_and_both_kept(
    db_url: str, amqp_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A cloned disk: two machines, one agent_id, the same seq and clock, each its own run.
    Their heartbeats interleave: detected once, logged once, an event, the row flagged, and
    every sample of both kept. Once one machine is quiet for offline_after_s, the flag goes."""
    caplog.set_level(logging.WARNING, logger="fleetpulse.security")
    clock = FakeClock(start=datetime.now(UTC))
    agent, left, right = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    async with running_ingest(settings_for(db_url, amqp_url), clock=clock) as (ingest, rec, _d):
        for seq in range(1, 5):
            at = clock.now()
            await publish(
                amqp_url, [beat(agent, seq, at, left, "ws-a"), beat(agent, seq, at, right, "ws-b")]
            )
            await wait_until(lambda n=seq: rec.heartbeats == 2 * n)
            clock.advance_nowait(30)
        assert clash_since(db_url, agent) is not None
        assert ingest.metrics.identity_clashes._value.get() == 1
        # the other machine goes away; the flag stays until it has been quiet long enough
        await publish(amqp_url, [beat(agent, 5, clock.now(), left, "ws-a")])
        await wait_until(lambda: rec.heartbeats == 9)
        assert clash_since(db_url, agent) is not None
        clock.advance_nowait(120)
        await publish(amqp_url, [beat(agent, 6, clock.now(), left, "ws-a")])
        await wait_until(lambda: rec.heartbeats == 10)
        assert clash_since(db_url, agent) is None
    assert scalar(db_url, "SELECT count(*) FROM agent_samples WHERE agent_id = %s", agent) == 10
    hosts = query(
        db_url, "SELECT hostname, count(*) FROM agent_samples GROUP BY hostname ORDER BY 1"
    )
    assert hosts == [("ws-a", 6), ("ws-b", 4)]
    assert scalar(db_url, "SELECT count(*) FROM gpu_samples WHERE agent_id = %s", agent) == 10
    assert reasons(db_url, agent) == ["first_heartbeat", "identity_clash"]
    clash_lines = [r for r in caplog.records if "identity clash" in r.getMessage()]
    assert len(clash_lines) == 1
    assert str(agent) in clash_lines[0].getMessage()


async def test_a_restart_is_not_a_clash(db_url: str, amqp_url: str) -> None:
    """A new run taking over (a restart), with the old run's spool replayed before it, and
    a late copy of the old run's last heartbeat: no clash."""
    clock = FakeClock(start=datetime.now(UTC))
    agent, before, after = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    async with running_ingest(settings_for(db_url, amqp_url), clock=clock) as (_, rec, _d):
        await publish(amqp_url, [beat(agent, n, clock.now(), before, "ws") for n in (1, 2, 3)])
        await wait_until(lambda: rec.heartbeats == 3)
        clock.advance_nowait(30)
        await publish(amqp_url, [beat(agent, 4, clock.now(), after, "ws")])
        await wait_until(lambda: rec.heartbeats == 4)
        await publish(amqp_url, [beat(agent, 3, clock.now(), before, "ws")])  # redelivered
        await wait_until(lambda: rec.heartbeats == 5)
    assert clash_since(db_url, agent) is None
    assert reasons(db_url, agent) == ["first_heartbeat"]
    assert scalar(db_url, "SELECT last_seq FROM agent_registry WHERE agent_id = %s", agent) == 4
