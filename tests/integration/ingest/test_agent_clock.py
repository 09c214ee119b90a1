"""An agent's clock can never freeze, regress or hide its state (issue 11, part 2)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pytest

from fleetpulse.messages import Heartbeat
from tests.fixtures.ingest import (
    FakeClock,
    goodbye,
    heartbeat,
    publish,
    query,
    running_ingest,
    scalar,
    settings_for,
    wait_until,
)

pytestmark = pytest.mark.slow(5)

YEAR = timedelta(days=365)


def beat(agent: uuid.UUID, seq: int, at: datetime, run: uuid.UUID | None, **kw: Any) -> Heartbeat:
    """A heartbeat of run ``run`` (None: an agent too old to send an incarnation)."""
    message = heartbeat(agent, seq, sampled_at=at, **kw)
    return msgspec.structs.replace(message, incarnation=run)


def bounded(db_url: str, amqp_url: str) -> Any:
    return settings_for(
        db_url, amqp_url, sample_max_behind_s=86_400.0, sample_max_ahead_s=300.0,
        clock_skew_event_s=60.0,
    )  # fmt: skip


def registry(db_url: str, agent: uuid.UUID) -> tuple[Any, ...]:
    return query(
        db_url,
        "SELECT last_seq, hostname, status, last_sampled_at, last_heartbeat_at, clock_offset_s"
        " FROM agent_registry WHERE agent_id = %s",
        agent,
    )[0]


async def test_a_heartbeat_a_year_ahead_freezes_nothing(db_url: str, amqp_url: str) -> None:
    """One sample from a clock a year ahead, then correct ones: the registry follows the
    newer samples (by incarnation and seq), its age is never pushed into the future, and
    the goodbye still ends the spell."""
    clock = FakeClock(start=datetime.now(UTC))
    agent, run = uuid.uuid4(), uuid.uuid4()
    async with running_ingest(bounded(db_url, amqp_url), clock=clock) as (_, rec, _d):
        ahead = beat(agent, 1, clock.now() + YEAR, run, hostname="rtc-wrong")
        await publish(amqp_url, [msgspec.structs.replace(ahead, sent_at=clock.now() + YEAR)])
        await wait_until(lambda: rec.heartbeats == 1)
        seq, _host, _status, sampled, heard, offset = registry(db_url, agent)
        assert sampled <= heard  # an age from a clock the agent cannot push
        assert offset == pytest.approx(YEAR.total_seconds(), abs=1)
        clock.advance_nowait(30)
        await publish(amqp_url, [beat(agent, 2, clock.now(), run, hostname="ntp-fixed")])
        await wait_until(lambda: rec.heartbeats == 2)
        seq, host, status, sampled, heard, offset = registry(db_url, agent)
        assert (seq, host, status) == (2, "ntp-fixed", "online")
        assert sampled == clock.now()
        assert offset == pytest.approx(0, abs=1)
        bye = msgspec.structs.replace(goodbye(agent, 3, sent_at=clock.now()), incarnation=run)
        await publish(amqp_url, [bye])
        await wait_until(lambda: registry(db_url, agent)[2] == "offline")
    assert scalar(db_url, "SELECT count(*) FROM agent_samples WHERE agent_id = %s", agent) == 2


async def test_sampled_at_is_bounded_around_the_receive_time(db_url: str, amqp_url: str) -> None:
    """Outside [receive - 24 h, receive + 5 min] a sample is stored at its receive time and
    flagged (no chunk in year 9999); within, at its own time (a spool replay)."""
    clock = FakeClock(start=datetime.now(UTC))
    agent, run = uuid.uuid4(), uuid.uuid4()
    far = datetime(9999, 1, 1, tzinfo=UTC)
    async with running_ingest(bounded(db_url, amqp_url), clock=clock) as (ingest, rec, _d):
        received = []
        for seq, at in enumerate(
            [
                clock.now() - timedelta(hours=2),  # replayed from the spool
                far,
                clock.now() - timedelta(days=3),
                clock.now() + timedelta(minutes=2),
            ],
            start=1,
        ):
            clock.advance_nowait(1)
            received.append(clock.now())
            await publish(amqp_url, [beat(agent, seq, at, run)])
            await wait_until(lambda n=seq: rec.heartbeats == n)
        await wait_until(lambda: rec.heartbeats == 4)
        assert ingest.metrics.clock_skewed._value.get() == 2
    rows = query(
        db_url,
        "SELECT seq, sampled_at, received_at, clock_skewed FROM agent_samples ORDER BY seq",
    )
    start = received[0] - timedelta(seconds=1)
    assert rows == [
        (1, start - timedelta(hours=2), received[0], False),
        (2, received[1], received[1], True),
        (3, received[2], received[2], True),
        (4, start + timedelta(minutes=2), received[3], False),
    ]
    assert scalar(db_url, "SELECT max(sampled_at) FROM gpu_samples") == start + timedelta(minutes=2)
    # the registry's sample time is never later than the receive time
    assert registry(db_url, agent)[3] == received[3]


async def test_a_replay_or_a_redelivery_never_regresses_the_registry(
    db_url: str, amqp_url: str
) -> None:
    clock = FakeClock(start=datetime.now(UTC))
    agent, first, second = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    async with running_ingest(bounded(db_url, amqp_url), clock=clock) as (_, rec, _d):
        await publish(amqp_url, [beat(agent, 5, clock.now(), first, hostname="five")])
        await wait_until(lambda: rec.heartbeats == 1)
        # a redelivery of an older sample of the same run, with a later clock even
        late = beat(agent, 3, clock.now() + timedelta(minutes=4), first, hostname="three")
        await publish(amqp_url, [late])
        await wait_until(lambda: rec.heartbeats == 2)
        assert registry(db_url, agent)[:2] == (5, "five")
        # the agent restarts with its state lost: a new run, seq from 0, an earlier clock
        clock.advance_nowait(10)
        restarted = beat(agent, 0, clock.now() - timedelta(hours=1), second, hostname="new-run")
        await publish(amqp_url, [restarted])
        await wait_until(lambda: rec.heartbeats == 3)
        assert registry(db_url, agent)[:2] == (0, "new-run")


async def test_an_old_agent_without_incarnation_still_works_with_bounded_time(
    db_url: str, amqp_url: str
) -> None:
    """Older agents send no incarnation: their samples order by sampled_at, which ingest
    bounds, so one far-future sample cannot freeze them either."""
    clock = FakeClock(start=datetime.now(UTC))
    agent = uuid.uuid4()
    async with running_ingest(bounded(db_url, amqp_url), clock=clock) as (_, rec, _d):
        await publish(amqp_url, [beat(agent, 1, clock.now() + YEAR, None, hostname="ahead")])
        await wait_until(lambda: rec.heartbeats == 1)
        clock.advance_nowait(30)
        await publish(amqp_url, [beat(agent, 2, clock.now(), None, hostname="fixed")])
        await wait_until(lambda: rec.heartbeats == 2)
    assert registry(db_url, agent)[:2] == (2, "fixed")


async def test_skew_is_visible_as_an_event_and_in_the_row(db_url: str, amqp_url: str) -> None:
    clock = FakeClock(start=datetime.now(UTC))
    agent, run = uuid.uuid4(), uuid.uuid4()
    async with running_ingest(bounded(db_url, amqp_url), clock=clock) as (ingest, rec, _d):
        await publish(amqp_url, [beat(agent, 1, clock.now(), run)])
        await wait_until(lambda: rec.heartbeats == 1)
        ahead = clock.now() + timedelta(minutes=10)
        skewed = msgspec.structs.replace(beat(agent, 2, clock.now(), run), sent_at=ahead)
        await publish(amqp_url, [skewed])
        await wait_until(lambda: rec.heartbeats == 2)
        again = msgspec.structs.replace(beat(agent, 3, clock.now(), run), sent_at=ahead)
        await publish(amqp_url, [again])
        await wait_until(lambda: rec.heartbeats == 3)
        histogram = ingest.metrics.clock_offset_seconds
        assert histogram._sum.get() == pytest.approx(1200, abs=1)
    assert registry(db_url, agent)[5] == pytest.approx(600, abs=1)
    reasons = [r[0] for r in query(db_url, "SELECT reason FROM agent_status_events ORDER BY id")]
    assert reasons == ["first_heartbeat", "clock_skew"]  # once, on crossing
