"""Exactly-once storage under redelivery, late samples, outages, poison, spoofing, shutdown."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from urllib.parse import quote, urlsplit

import aiormq
import psycopg
import pytest
from psycopg import sql

from fleetpulse.agent import FakeClock
from fleetpulse.ingest import (
    IngestMetrics,
    SilenceDetector,
    declare_topology,
)
from fleetpulse.messages import DEAD_LETTER_QUEUE, INGEST_QUEUE
from tests.fixtures.ingest import (
    T0,
    heartbeat,
    publish,
    query,
    queue_messages,
    resources,
    running_ingest,
    scalar,
    settings_for,
    wait_until,
    with_database,
)

pytestmark = pytest.mark.slow(8)


async def test_duplicates_stored_once(db_url: str, amqp_url: str) -> None:
    agent = uuid.uuid4()
    same = heartbeat(agent, 1)
    async with running_ingest(settings_for(db_url, amqp_url)) as (ingest, rec, _d):
        await publish(amqp_url, [same, same, same])
        await wait_until(lambda: rec.heartbeats == 3)
        await publish(amqp_url, [same])  # a later redelivery, another batch
        await wait_until(lambda: rec.heartbeats == 4)
        assert ingest.metrics.messages.labels("stored")._value.get() == 1
        assert ingest.metrics.messages.labels("duplicate")._value.get() == 3
    assert scalar(db_url, "SELECT count(*) FROM agent_samples") == 1
    assert scalar(db_url, "SELECT count(*) FROM gpu_samples") == 1
    assert scalar(db_url, "SELECT count(*) FROM agent_status_events") == 1


async def test_replayed_spool_is_stored_once(db_url: str, amqp_url: str) -> None:
    agent = uuid.uuid4()
    samples = [heartbeat(agent, s) for s in range(1, 11)]
    async with running_ingest(settings_for(db_url, amqp_url)) as (_, rec, _d):
        await publish(amqp_url, samples)
        await wait_until(lambda: rec.heartbeats == 10)
        await publish(amqp_url, samples[3:])
        await wait_until(lambda: rec.heartbeats == 17)
    assert scalar(db_url, "SELECT count(*) FROM agent_samples") == 10
    assert scalar(db_url, "SELECT last_seq FROM agent_registry") == 10


async def test_late_sample_does_not_regress_registry(
    db_url: str, amqp_url: str, clock: FakeClock
) -> None:
    agent = uuid.uuid4()
    newest = heartbeat(agent, 10, metrics=resources(mem_free=10.0), hostname="new-name")
    late = heartbeat(agent, 3, metrics=resources(mem_free=50.0), hostname="old-name")
    async with running_ingest(settings_for(db_url, amqp_url), clock=clock) as (_, rec, _d):
        await publish(amqp_url, [newest])
        await wait_until(lambda: rec.heartbeats == 1)
        clock.advance_nowait(5)
        await publish(amqp_url, [late])
        await wait_until(lambda: rec.heartbeats == 2)
    row = query(
        db_url,
        "SELECT last_seq, last_sampled_at, hostname, mem_available_gb,"
        " resource_metrics->>'mem_available_gb', last_heartbeat_at FROM agent_registry",
    )[0]
    assert row[:5] == (10, T0 + timedelta(seconds=10), "new-name", 10.0, "10.0")
    assert row[5] == clock.now()  # it was still received: liveness moves on
    assert scalar(db_url, "SELECT count(*) FROM agent_samples") == 2


def _set_connections(admin_url: str, db_url: str, allowed: bool) -> None:
    name = urlsplit(db_url).path.lstrip("/")
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS {}").format(
                sql.Identifier(name), sql.SQL("true" if allowed else "false")
            )
        )
        if not allowed:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = %s AND pid <> pg_backend_pid()",
                (name,),
            )


@pytest.fixture
def outage(db_admin_url: str, db_url: str) -> Iterator[object]:
    class Outage:
        def begin(self) -> None:
            _set_connections(db_admin_url, db_url, False)

        def end(self) -> None:
            _set_connections(db_admin_url, db_url, True)

    o = Outage()
    try:
        yield o
    finally:
        o.end()


async def test_database_outage_loses_and_doubles_nothing(
    db_url: str, amqp_url: str, outage: object, caplog: pytest.LogCaptureFixture
) -> None:
    agent = uuid.uuid4()
    # A short pool wait, so each retry against the absent database takes 0.5 s, not 2 s.
    settings = with_database(
        settings_for(db_url, amqp_url, prefetch=5, batch_max_messages=5), connect_timeout_s=0.5
    )
    async with running_ingest(settings) as (ingest, rec, _d):
        await publish(amqp_url, [heartbeat(agent, 1)])
        await wait_until(lambda: rec.heartbeats == 1)
        outage.begin()  # type: ignore[attr-defined]
        await publish(amqp_url, [heartbeat(agent, s) for s in range(2, 22)])
        retries = ingest.metrics.db_retries
        await wait_until(lambda: retries._value.get() >= 2, what="retries")
        # Nothing acked while the database is away: prefetch holds 5, the rest wait.
        await wait_until(lambda: ingest.metrics.queue_depth._value.get() == 15, what="depth")
        assert ingest.state == "running"
        assert rec.heartbeats == 1
        outage.end()  # type: ignore[attr-defined]
        await wait_until(lambda: rec.heartbeats == 21, timeout_s=20, what="recovery")
    assert scalar(db_url, "SELECT count(*), count(DISTINCT seq) FROM agent_samples") == 21
    assert query(db_url, "SELECT count(*), count(DISTINCT seq) FROM agent_samples") == [(21, 21)]
    assert scalar(db_url, "SELECT last_seq FROM agent_registry") == 21
    assert await queue_messages(amqp_url, INGEST_QUEUE) == 0
    assert any("retrying" in r.getMessage() for r in caplog.records)


async def _connection_names(rabbit_admin, vhost: str, name: str) -> list[str]:
    response = rabbit_admin.client.get(f"/api/vhosts/{quote(vhost, safe='')}/connections")
    response.raise_for_status()
    return [
        c["name"]
        for c in response.json()
        if c.get("client_properties", {}).get("connection_name") == name
    ]


async def test_broker_connection_killed_reconnects_and_resumes(
    db_url: str, amqp_url: str, rabbit_admin, amqp_vhost: str
) -> None:
    agent = uuid.uuid4()
    async with running_ingest(settings_for(db_url, amqp_url), name=f"ingest-{agent}") as (
        ingest,
        rec,
        _d,
    ):
        await publish(amqp_url, [heartbeat(agent, s) for s in range(1, 11)])
        await wait_until(lambda: rec.heartbeats == 10)
        names: list[str] = []

        async def found() -> bool:
            names[:] = await _connection_names(rabbit_admin, amqp_vhost, ingest.name)
            return bool(names)

        await wait_until(found, timeout_s=15, interval_s=0.2, what="connection listed")
        rabbit_admin.client.delete(
            f"/api/connections/{quote(names[0], safe='')}",
            headers={"X-Reason": "test: broker restart"},
        ).raise_for_status()
        await wait_until(lambda: ingest.sessions_started == 2, what="reconnect")
        await publish(amqp_url, [heartbeat(agent, s) for s in range(11, 21)])
        await wait_until(
            lambda: scalar(db_url, "SELECT count(*) FROM agent_samples") == 20, what="resume"
        )
    assert scalar(db_url, "SELECT last_seq FROM agent_registry") == 20
    assert await queue_messages(amqp_url, INGEST_QUEUE) == 0


async def test_poison_batch_is_split_good_messages_commit(
    db_url: str, amqp_url: str, rabbit_admin, amqp_vhost: str
) -> None:
    good = [heartbeat(uuid.uuid4(), 1) for _ in range(9)]
    poison = heartbeat(uuid.uuid4(), 1, hostname="ws-\x00-17")  # valid JSON, refused by PostgreSQL
    # The batch flushes when it holds all ten, however slowly a loaded box publishes them.
    settings = settings_for(db_url, amqp_url, batch_max_age_s=30.0, batch_max_messages=10)
    async with running_ingest(settings) as (ingest, rec, _d):
        await publish(amqp_url, [*good[:4], poison, *good[4:]])
        await wait_until(lambda: rec.heartbeats == 9 and len(rec.rejected) == 1)
        assert len(rec.reports) == 1  # one batch, split inside
        assert ingest.metrics.dead_letters.labels("refused_by_database")._value.get() == 1
    assert scalar(db_url, "SELECT count(*) FROM agent_samples") == 9
    assert scalar(db_url, "SELECT count(*) FROM agent_registry") == 9
    response = rabbit_admin.client.post(
        f"/api/queues/{quote(amqp_vhost, safe='')}/{DEAD_LETTER_QUEUE}/get",
        json={"count": 5, "ackmode": "ack_requeue_true", "encoding": "auto"},
    )
    (dead,) = response.json()
    assert dead["properties"]["headers"]["x-fleetpulse-reason"] == "refused_by_database"
    assert str(poison.agent_id) in dead["payload"]


async def test_graceful_stop_drains_the_buffered_batch(db_url: str, amqp_url: str) -> None:
    """A batch still gathering (max age 30 s) is committed and acked on stop, not dropped."""
    agent = uuid.uuid4()
    settings = settings_for(db_url, amqp_url, batch_max_age_s=30.0, batch_max_messages=1000)
    async with running_ingest(settings) as (ingest, rec, _d):
        await publish(amqp_url, [heartbeat(agent, s) for s in range(1, 26)])
        await wait_until(lambda: len(ingest._buffer) == 25)
        assert rec.heartbeats == 0
        await asyncio.wait_for(ingest.stop(), 10)
    assert rec.heartbeats == 25
    assert scalar(db_url, "SELECT count(*) FROM agent_samples") == 25
    assert await queue_messages(amqp_url, INGEST_QUEUE) == 0


async def test_topology_quorum_queue_with_dead_letter_exchange(
    amqp_url: str, rabbit_admin, amqp_vhost: str
) -> None:
    connection = await aiormq.connect(amqp_url)
    try:
        assert await declare_topology(connection) == "quorum"
        assert await declare_topology(connection) == "quorum"  # idempotent
    finally:
        await connection.close()
    queue = rabbit_admin.queue(amqp_vhost, INGEST_QUEUE)
    assert queue["type"] == "quorum"
    assert queue["arguments"]["x-dead-letter-exchange"] == "fleetpulse.dead"
    dead = rabbit_admin.queue(amqp_vhost, DEAD_LETTER_QUEUE)
    assert dead["durable"] is True
    assert dead["type"] == "quorum"  # on a cluster, replicated like the ingest queue
    vh = quote(amqp_vhost, safe="")
    bindings = rabbit_admin.client.get(f"/api/queues/{vh}/{INGEST_QUEUE}/bindings").json()
    assert any(
        b["source"] == "fleetpulse.heartbeats" and b["routing_key"] == "heartbeat.#"
        for b in bindings
    )


async def test_topology_falls_back_to_an_existing_classic_queue(
    amqp_url: str, rabbit_admin, amqp_vhost: str
) -> None:
    connection = await aiormq.connect(amqp_url)
    try:
        channel = await connection.channel()
        await channel.queue_declare(INGEST_QUEUE, durable=True)
        await channel.queue_declare(DEAD_LETTER_QUEUE, durable=True)  # as older ingests made it
        assert await declare_topology(connection) == "classic"
    finally:
        await connection.close()
    assert rabbit_admin.queue(amqp_vhost, INGEST_QUEUE)["type"] == "classic"
    assert rabbit_admin.queue(amqp_vhost, DEAD_LETTER_QUEUE)["type"] == "classic"


async def test_retention_drops_old_chunks_from_the_detector(db_url: str, amqp_url: str) -> None:

    old = T0 - timedelta(days=400)
    with psycopg.connect(db_url, autocommit=True) as conn:
        for at in (old, T0):
            conn.execute(
                "INSERT INTO agent_samples (agent_id, sampled_at, received_at, seq, hostname,"
                " pool_name, work_state, cpu_load_1m, cpu_load_5m, cpu_load_15m, cpu_cores,"
                " cpu_available_cores, mem_total_gb, mem_available_gb, gpu_type, gpu_count,"
                " gpu_vram_total_gb, gpu_vram_available_gb) VALUES (gen_random_uuid(), %s, %s,"
                " 1, 'h', 'p', 'idle', 0, 0, 0, 1, 1, 1, 1, 'none', 0, 0, 0)",
                (at, at),
            )
    keep_days = (datetime.now(UTC) - old).days - 7
    settings = settings_for(db_url, amqp_url, retention_days=float(keep_days))
    detector = SilenceDetector(
        settings, metrics=IngestMetrics(), clock=FakeClock(start=datetime.now(UTC))
    )
    try:
        assert await detector.tick() == 0
        assert detector.is_leader
    finally:
        await detector.close()
    assert [r[0] for r in query(db_url, "SELECT sampled_at FROM agent_samples")] == [T0]
    assert detector.state == "closed"


async def test_retired_unnest_write_method_still_loads_and_keeps_the_guarantees(
    db_url: str, amqp_url: str, clock: FakeClock
) -> None:
    """A config still naming the retired ``unnest`` write method works (COPY is used)."""
    agent, other = uuid.uuid4(), uuid.uuid4()
    settings = settings_for(db_url, amqp_url, write_method="unnest")
    async with running_ingest(settings, clock=clock) as (ingest, rec, _d):
        await publish(amqp_url, [heartbeat(agent, 5), heartbeat(agent, 5), heartbeat(other, 1)])
        await wait_until(lambda: rec.heartbeats == 3)
        await publish(amqp_url, [heartbeat(agent, 2, hostname="late"), heartbeat(agent, 6)])
        await wait_until(lambda: rec.heartbeats == 5)
        assert ingest.metrics.messages.labels("duplicate")._value.get() == 1
    assert scalar(db_url, "SELECT count(*) FROM agent_samples") == 4
    assert query(
        db_url, "SELECT last_seq, hostname FROM agent_registry WHERE agent_id = %s", agent
    ) == [(6, "ws-17")]
    assert scalar(db_url, "SELECT count(*) FROM gpu_samples") == 4


async def test_rejects_when_the_dead_letter_exchange_is_gone(
    db_url: str, amqp_url: str, rabbit_admin, amqp_vhost: str
) -> None:
    """Republishing fails (exchange deleted by an operator): fall back to reject, keep going."""
    agent = uuid.uuid4()
    async with running_ingest(settings_for(db_url, amqp_url)) as (ingest, rec, _d):
        vh = quote(amqp_vhost, safe="")
        rabbit_admin.client.delete(f"/api/exchanges/{vh}/fleetpulse.dead").raise_for_status()
        await publish(amqp_url, [b"not json", heartbeat(agent, 1)])
        await wait_until(lambda: rec.messages == 2)
        await publish(amqp_url, [b"{}"])
        await wait_until(lambda: rec.messages == 3)
        assert ingest.state == "running"
        assert ingest.metrics.messages.labels("invalid")._value.get() == 2
    assert scalar(db_url, "SELECT count(*) FROM agent_samples") == 1
    assert await queue_messages(amqp_url, INGEST_QUEUE) == 0  # rejected, not requeued


async def test_batch_stuck_behind_a_lock_times_out_and_is_retried(
    db_url: str, amqp_url: str
) -> None:
    """A database that holds a batch without failing it: the statement timeout turns the
    wait into a retry, nothing is acked meanwhile, and the batch commits once after."""
    agent = uuid.uuid4()
    settings = with_database(
        settings_for(db_url, amqp_url, prefetch=5, batch_max_messages=5), statement_timeout_s=0.2
    )
    async with running_ingest(settings) as (ingest, rec, _d):
        await publish(amqp_url, [heartbeat(agent, 1)])
        await wait_until(lambda: rec.heartbeats == 1)
        holder = await psycopg.AsyncConnection.connect(db_url)
        async with holder, holder.transaction():
            await holder.execute("LOCK TABLE agent_samples IN ACCESS EXCLUSIVE MODE")
            await publish(amqp_url, [heartbeat(agent, s) for s in range(2, 7)])
            retries = ingest.metrics.db_retries
            await wait_until(lambda: retries._value.get() >= 2, what="timed-out retries")
            assert rec.heartbeats == 1
            assert ingest.state == "running"
        await wait_until(lambda: rec.heartbeats == 6, what="commit after the lock")
    assert query(db_url, "SELECT count(*), count(DISTINCT seq) FROM agent_samples") == [(6, 6)]
    assert scalar(db_url, "SELECT last_seq FROM agent_registry") == 6
    assert await queue_messages(amqp_url, INGEST_QUEUE) == 0


async def test_a_sweep_deadlocked_with_a_writer_keeps_the_lead_and_retries_its_rows(
    db_url: str, amqp_url: str
) -> None:
    """The sweep waits for rows a batch holds (it no longer skips them); when that crosses
    with the batch's own order, PostgreSQL rolls the sweep back: the detector keeps acting
    and the next tick marks the agents.

    PostgreSQL rolls back the session whose deadlock check runs first once the cycle is
    closed (each waiter checks once, deadlock_timeout after it began to wait). So the
    writer never checks (its deadlock_timeout is long) and the sweep is the one that
    closes the cycle: it waits on a third session first, then, once the writer waits on
    it, moves on to the row the writer holds. Which side is the victim does not depend on
    how loaded the machine is."""
    clock = FakeClock(start=datetime.now(UTC))
    heard = clock.now() - timedelta(seconds=100)
    agents = [uuid.uuid4() for _ in range(3)]
    first, second, third = agents
    with psycopg.connect(db_url, autocommit=True) as conn:
        for n, agent in enumerate(agents):  # in this physical order
            conn.execute(
                "INSERT INTO agent_registry (agent_id, hostname, pool_name, status,"
                " status_changed_at, first_seen_at, last_heartbeat_at, agent_version)"
                " VALUES (%s, %s, 'cpu', 'online', %s, %s, %s, '0.1.0')",
                (agent, f"crossed-{n}", heard, heard, heard),
            )
    detector = SilenceDetector(settings_for(db_url, amqp_url), metrics=IngestMetrics(), clock=clock)
    update = "UPDATE agent_registry SET cpu_load_1m = 1 WHERE agent_id = %s"
    waiting = (
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE wait_event_type = 'Lock' AND datname = current_database()"
    )
    holder = psycopg.connect(db_url)
    writer = psycopg.connect(db_url)
    try:
        holder.execute(update, (second,))
        writer.execute("SET deadlock_timeout = '10min'")
        writer.execute(update, (third,))
        sweep = asyncio.create_task(detector.tick())  # takes `first`, waits for `second`
        await wait_until(lambda: scalar(db_url, waiting) == 1, what="the sweep waiting")

        def cross() -> None:  # waits for `first`, held by the sweep
            writer.execute(update, (first,))
            writer.commit()

        crossing = asyncio.create_task(asyncio.to_thread(cross))
        await wait_until(lambda: scalar(db_url, waiting) == 2, what="the writer waiting")
        holder.commit()  # the sweep takes `second`, then waits for `third`: a deadlock
        assert await sweep == 0  # the sweep was the one rolled back
        await crossing  # and the writer went on
        assert detector.is_leader
        assert query(
            db_url,
            "SELECT count(*) FROM agent_status_events WHERE agent_id = ANY(%s)",
            agents,
        ) == [(0,)]
        assert await detector.tick() >= 3
    finally:
        holder.close()
        writer.close()
        await detector.close()
    rows = query(
        db_url,
        "SELECT hostname, status, cpu_load_1m FROM agent_registry WHERE agent_id = ANY(%s)"
        " ORDER BY hostname",
        agents,
    )
    assert rows == [(f"crossed-{n}", "offline", 1.0) for n in range(3)]
