"""The store's batch write under concurrency: a registration racing another transaction."""

from __future__ import annotations

import asyncio
import uuid

import psycopg

from fleetpulse import store
from fleetpulse.ingest import Decoded, Delivery, plan_batch
from fleetpulse.messages import encode, routing_key
from fleetpulse.store import AgentState, WriteResult
from tests.fixtures.ingest import T0, heartbeat, query, scalar, wait_until

RAW_REGISTER = (
    "INSERT INTO agent_registry (agent_id, hostname, pool_name, status, status_changed_at,"
    " first_seen_at, last_heartbeat_at, agent_version, principal)"
    " VALUES (%s, 'first', 'gpu', 'online', %s, %s, %s, '0.1.0', 'alice')"
)


async def test_concurrent_registration_replans_instead_of_doubling(db_url: str) -> None:
    agent = uuid.uuid4()
    message = heartbeat(agent, 1)
    items = [
        Decoded(Delivery(1, encode(message), "mallory", T0, routing_key(None, agent)), message)
    ]
    states: list[dict[uuid.UUID, AgentState]] = []
    rejected: list[str] = []

    async def lock_plan_write(conn: psycopg.AsyncConnection) -> WriteResult:
        for _ in range(store.REPLAN_ATTEMPTS):
            async with store.locked_batch(conn, [agent]) as batch:
                states.append(batch.state)
                made = plan_batch(items, batch.state)
                rejected[:] = [r.reason for r in made.rejected]
                result = await batch.write(made.write)
            if result is not None:
                return result
        raise AssertionError("never written")

    other = await psycopg.AsyncConnection.connect(db_url)
    conn = await store.connect(db_url)
    async with other, conn:
        await other.execute(RAW_REGISTER, (agent, T0, T0, T0))  # uncommitted registration
        writer = asyncio.create_task(lock_plan_write(conn))
        await wait_until(
            lambda: (
                scalar(
                    db_url,
                    "SELECT count(*) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND wait_event_type = 'Lock'",
                )
                == 1
            ),
            what="the writer to wait on the uncommitted registration",
        )
        assert not writer.done()
        await other.commit()
        result = await asyncio.wait_for(writer, 10)
    assert len(states) == 2
    assert states[0] == {}
    assert states[1][agent].principal == "alice"
    # Re-planned against the committed row: mallory is not alice, nothing of hers stored.
    assert rejected == ["unauthorised"]
    assert result.samples_stored == 0
    assert scalar(db_url, "SELECT count(*) FROM agent_status_events") == 0
    assert query(db_url, "SELECT hostname, principal FROM agent_registry") == [("first", "alice")]
