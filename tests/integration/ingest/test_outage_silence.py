"""An ingest or database outage, or a registry lock, longer than offline_after_s does not flap
the fleet offline; the broker being down still does, and agents come back within seconds
(issue 11, part 1).

The detector ticks by hand here, so each judgement falls at a known moment: right after the
outage, while the heartbeats that waited through it are received but not yet committed
(a row lock on the agent's registry row keeps the batch waiting; a silence sweep does not
need that lock). Agent ``alive`` kept publishing through the outage, agent ``gone`` fell
silent when it began.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime
from urllib.parse import urlsplit, urlunsplit

import msgspec
import psycopg
import pytest

from fleetpulse.config import Settings
from fleetpulse.errors import FleetpulseError
from fleetpulse.ingest import Ingest, IngestMetrics, SilenceDetector
from tests.fixtures.ingest import (
    FakeClock,
    heartbeat,
    publish,
    query,
    running_ingest,
    settings_for,
    wait_until,
)
from tests.fixtures.tcp_proxy import TcpProxy

pytestmark = pytest.mark.slow(10)

OUTAGE_S = 300.0  # over three times offline_after_s (90)
STEP_S = 30.0


@contextmanager
def registry_rows_locked(db_url: str, *agents: uuid.UUID) -> Iterator[None]:
    """Hold a KEY SHARE lock on these registry rows: a batch (FOR UPDATE) waits for it, a
    silence sweep (an UPDATE of non-key columns) does not."""
    with psycopg.connect(db_url) as conn:
        conn.execute(
            "SELECT 1 FROM agent_registry WHERE agent_id = ANY(%s) FOR KEY SHARE", (list(agents),)
        )
        yield
        conn.rollback()


def reasons(db_url: str, agent: uuid.UUID) -> list[str]:
    rows = query(
        db_url, "SELECT reason FROM agent_status_events WHERE agent_id = %s ORDER BY id", agent
    )
    return [r[0] for r in rows]


def status(db_url: str, agent: uuid.UUID) -> str:
    return str(query(db_url, "SELECT status FROM agent_registry WHERE agent_id = %s", agent)[0][0])


async def start_fleet(
    db_url: str, amqp_url: str, settings: Settings, clock: FakeClock
) -> tuple[uuid.UUID, uuid.UUID]:
    alive, gone = uuid.uuid4(), uuid.uuid4()
    async with running_ingest(settings, clock=clock) as (ingest, rec, _d):
        await publish(amqp_url, [heartbeat(alive, 1), heartbeat(gone, 1)])
        await wait_until(lambda: rec.heartbeats == 2)
        await wait_until(lambda: reported(db_url, ingest) == clock(), what="a watermark")
    return alive, gone


def reported(db_url: str, ingest: Ingest) -> object:
    """The watermark this worker has reported, as the detector reads it."""
    rows = query(
        db_url, "SELECT seen_through FROM ingest_watermarks WHERE worker = %s", ingest.name
    )
    return rows[0][0] if rows else None


async def publish_through_outage(amqp_url: str, clock: FakeClock, alive: uuid.UUID) -> int:
    seq = 1
    for _ in range(int(OUTAGE_S / STEP_S)):
        clock.advance_nowait(STEP_S)
        seq += 1
        await publish(amqp_url, [heartbeat(alive, seq)])
    return seq - 1


async def tick(detector: SilenceDetector) -> int:
    """One judgement; a connection the outage broke is replaced, as the detector's loop does."""
    for _ in range(5):
        try:
            return await detector.tick()
        except FleetpulseError:
            await detector._disconnect()
    raise AssertionError("the detector could not reach the database")


async def _settle_and_judge(
    db_url: str, ingest: Ingest, detector: SilenceDetector, gone: uuid.UUID, queued: int
) -> float:
    """After the lock went: the batch commits, ingest is in step again, ``gone`` is judged."""
    released = time.monotonic()
    await wait_until(lambda: ingest.unsettled == 0, what="the waiting batch to commit")

    async def judged() -> bool:
        await tick(detector)
        return status(db_url, gone) == "offline"

    await wait_until(judged, what="the silent agent to be marked offline")
    return time.monotonic() - released


def assert_no_flap(db_url: str, alive: uuid.UUID, gone: uuid.UUID) -> None:
    assert reasons(db_url, alive) == ["first_heartbeat"]  # no silence, no heartbeat event
    assert status(db_url, alive) == "online"
    assert reasons(db_url, gone) == ["first_heartbeat", "silence"]


async def test_an_ingest_stop_longer_than_the_threshold_marks_nobody_who_kept_publishing(
    db_url: str,
    amqp_url: str,
) -> None:
    clock = FakeClock(start=datetime.now(UTC))
    settings = settings_for(db_url, amqp_url)
    alive, gone = await start_fleet(db_url, amqp_url, settings, clock)
    queued = await publish_through_outage(amqp_url, clock, alive)  # ingest is down
    detector = SilenceDetector(settings, metrics=IngestMetrics(), clock=clock)
    try:
        with ExitStack() as lock:
            lock.enter_context(registry_rows_locked(db_url, alive))
            async with running_ingest(settings, clock=clock) as (ingest, rec, _d):
                await wait_until(lambda: ingest.unsettled == queued, what="the backlog")
                assert await tick(detector) == 0
                assert detector.holding
                assert status(db_url, alive) == "online"
                assert status(db_url, gone) == "online"  # not judged before ingest caught up
                lock.close()
                seconds = await _settle_and_judge(db_url, ingest, detector, gone, queued)
                assert rec.heartbeats == queued
                assert detector.metrics.detector_lag_seconds._value.get() == 0
    finally:
        await detector.close()
    assert_no_flap(db_url, alive, gone)
    print(f"ingest stop: silent agent offline {seconds:.2f}s after ingest caught up")


async def test_a_registry_lock_longer_than_the_threshold_marks_nobody_who_kept_publishing(
    db_url: str,
    amqp_url: str,
) -> None:
    clock = FakeClock(start=datetime.now(UTC))
    settings = settings_for(db_url, amqp_url)
    alive, gone = await start_fleet(db_url, amqp_url, settings, clock)
    detector = SilenceDetector(settings, metrics=IngestMetrics(), clock=clock)
    try:
        async with running_ingest(settings, clock=clock) as (ingest, rec, _d):
            await wait_until(lambda: reported(db_url, ingest) == clock(), what="a watermark")
            assert await tick(detector) == 0
            with registry_rows_locked(db_url, alive):
                queued = await publish_through_outage(amqp_url, clock, alive)
                await wait_until(lambda: ingest.unsettled == queued, what="the waiting batch")
                assert await tick(detector) == 0
                assert status(db_url, alive) == "online"
                lag = detector.metrics.detector_lag_seconds._value.get()
                assert lag >= OUTAGE_S - STEP_S
            seconds = await _settle_and_judge(db_url, ingest, detector, gone, queued)
            assert rec.heartbeats == queued  # this ingest stored the ones that waited
    finally:
        await detector.close()
    assert_no_flap(db_url, alive, gone)
    print(f"registry lock: silent agent offline {seconds:.2f}s after the lock went")


def _through(proxy: TcpProxy, db_url: str) -> str:
    parts = urlsplit(db_url)
    netloc = parts.netloc.rsplit("@", 1)
    host = f"127.0.0.1:{proxy.port}"
    return urlunsplit(parts._replace(netloc=f"{netloc[0]}@{host}" if len(netloc) == 2 else host))


async def test_a_database_outage_longer_than_the_threshold_marks_nobody_who_kept_publishing(
    db_url: str,
    amqp_url: str,
) -> None:
    clock = FakeClock(start=datetime.now(UTC))
    port = urlsplit(db_url).port or 5432
    async with TcpProxy("127.0.0.1", port) as proxy:
        settings = settings_for(_through(proxy, db_url), amqp_url)
        settings = msgspec.structs.replace(
            settings,
            database=msgspec.structs.replace(
                settings.database, connect_timeout_s=1.0, statement_timeout_s=5.0
            ),
        )
        alive, gone = await start_fleet(db_url, amqp_url, settings, clock)
        detector = SilenceDetector(settings, metrics=IngestMetrics(), clock=clock)
        try:
            async with running_ingest(settings, clock=clock) as (ingest, _rec, _d):
                await wait_until(lambda: reported(db_url, ingest) == clock(), what="a watermark")
                assert await tick(detector) == 0
                await proxy.cut()
                queued = await publish_through_outage(amqp_url, clock, alive)
                await wait_until(lambda: ingest.unsettled == queued, what="the waiting batch")
                with registry_rows_locked(db_url, alive):
                    await proxy.restore()
                    assert await tick(detector) == 0
                    assert status(db_url, alive) == "online"
                seconds = await _settle_and_judge(db_url, ingest, detector, gone, queued)
        finally:
            await detector.close()
    assert_no_flap(db_url, alive, gone)
    print(f"database outage: silent agent offline {seconds:.2f}s after recovery")


async def test_the_broker_down_still_marks_agents_offline_and_back_within_seconds(
    db_url: str, amqp_url: str
) -> None:
    """Agents cannot publish while the broker is down, so silence is judged as before; once
    it is back, an agent's next heartbeat brings it online within seconds."""
    clock = FakeClock(start=datetime.now(UTC))
    settings = settings_for(db_url, amqp_url)
    alive, gone = await start_fleet(db_url, amqp_url, settings, clock)
    parts = urlsplit(amqp_url)
    async with TcpProxy("127.0.0.1", parts.port or 5672) as proxy:
        netloc = f"{parts.netloc.rsplit('@', 1)[0]}@127.0.0.1:{proxy.port}"
        via_proxy = msgspec.structs.replace(
            settings,
            amqp=msgspec.structs.replace(
                settings.amqp, url=urlunsplit(parts._replace(netloc=netloc))
            ),
        )
        detector = SilenceDetector(settings, metrics=IngestMetrics(), clock=clock)
        try:
            async with running_ingest(via_proxy, clock=clock) as (ingest, _rec, _d):
                await wait_until(lambda: reported(db_url, ingest) == clock(), what="a watermark")
                await proxy.cut()  # the broker, as ingest sees it, is gone
                await wait_until(lambda: not ingest.consuming.is_set())
                clock.advance_nowait(120)
                await wait_until(lambda: reported(db_url, ingest) == clock(), what="the present")
                assert await tick(detector) == 2
                await proxy.restore()
                back = time.monotonic()
                await publish(amqp_url, [heartbeat(alive, 2)])
                await wait_until(lambda: status(db_url, alive) == "online", timeout_s=15)
                seconds = time.monotonic() - back
        finally:
            await detector.close()
    assert reasons(db_url, alive) == ["first_heartbeat", "silence", "heartbeat"]
    assert reasons(db_url, gone) == ["first_heartbeat", "silence"]
    assert seconds < 6
    print(f"broker down: agent back online {seconds:.2f}s after the broker returned")
