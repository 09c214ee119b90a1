"""The store's batch write under concurrency: a registration racing another transaction."""

from __future__ import annotations

import asyncio
import uuid

import psycopg

from fleetpulse import store
from fleetpulse.ingest import Decoded, Delivery, plan_batch
from fleetpulse.messages import Message, encode, routing_key
from fleetpulse.store import AgentState, WriteResult
from tests.fixtures.ingest import T0, goodbye, heartbeat, query, scalar, wait_until

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


async def test_a_batch_waits_for_the_open_batch_registering_its_agent(db_url: str) -> None:
    """An agent without a registry row has no row to lock: the batch holding its goodbye
    must still wait for the open batch registering it (its first heartbeat), then plan
    against that row. Planned against "absent", the goodbye did nothing and the agent that
    said goodbye stayed online."""
    agent = uuid.uuid4()
    hello, bye = heartbeat(agent, 1), goodbye(agent, 2)
    registered = asyncio.Event()
    release = asyncio.Event()
    seen: list[dict[uuid.UUID, AgentState]] = []

    async def write(conn: psycopg.AsyncConnection, tag: int, message: Message) -> None:
        items = [
            Decoded(Delivery(tag, encode(message), None, T0, routing_key(None, agent)), message)
        ]
        async with store.locked_batch(conn, [agent]) as batch:
            seen.append(batch.state)
            assert await batch.write(plan_batch(items, batch.state).write) is not None
            if tag == 1:
                registered.set()
                await release.wait()

    first, second = await store.connect(db_url), await store.connect(db_url)
    async with first, second:
        registering = asyncio.create_task(write(first, 1, hello))
        await asyncio.wait_for(registered.wait(), 10)
        leaving = asyncio.create_task(write(second, 2, bye))
        await wait_until(
            lambda: leaving.done() or _lock_waits(db_url) == 1,
            what="the goodbye's batch to wait on the registering one",
        )
        assert not leaving.done()
        release.set()
        await asyncio.wait_for(asyncio.gather(registering, leaving), 10)
    assert seen[0] == {}
    assert seen[1][agent].status == "online"
    assert scalar(db_url, "SELECT status FROM agent_registry") == "offline"
    assert [r[0] for r in query(db_url, "SELECT reason FROM agent_status_events ORDER BY id")] == [
        "first_heartbeat",
        "shutdown",
    ]


def _lock_waits(db_url: str) -> object:
    return scalar(
        db_url,
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE datname = current_database() AND wait_event_type = 'Lock'",
    )
