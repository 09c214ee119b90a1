"""Offline detection, back online, goodbyes, capacity views and the single acting detector."""

from __future__ import annotations

import asyncio
import logging
import uuid

import pytest

from fleetpulse.agent import FakeClock
from tests.fixtures.ingest import (
    PROFILES,
    goodbye,
    heartbeat,
    publish,
    query,
    running_ingest,
    scalar,
    settings_for,
    wait_until,
)

pytestmark = pytest.mark.slow(4)

CAPACITY = (
    "SELECT agent_id FROM agent_registry WHERE status = 'online'"
    " AND gpu_vram_available_gb >= %s AND cpu_available_cores >= %s"
    " ORDER BY gpu_vram_available_gb DESC, cpu_available_cores DESC"
)


def status(db_url: str, agent: uuid.UUID) -> str:
    return str(scalar(db_url, "SELECT status FROM agent_registry WHERE agent_id = %s", agent))


def events(db_url: str, agent: uuid.UUID) -> list[tuple[object, ...]]:
    return query(
        db_url,
        "SELECT from_status, to_status, reason FROM agent_status_events WHERE agent_id = %s"
        " ORDER BY id",
        agent,
    )


async def test_agent_offline_after_90s_no_heartbeat(
    db_url: str, amqp_url: str, clock: FakeClock
) -> None:
    agent = uuid.uuid4()
    settings = settings_for(db_url, amqp_url, offline_after_s=90.0)
    async with running_ingest(settings, clock=clock, detector=True) as (_, rec, det):
        await publish(amqp_url, [heartbeat(agent, 1)])
        await wait_until(lambda: rec.heartbeats == 1)
        clock.advance_nowait(90.5)
        await wait_until(lambda: status(db_url, agent) == "offline", what="silence")
        assert det is not None
        # The sweep's commit is visible before the detector counts what it marked.
        await wait_until(lambda: det.transitions == 1, what="the detector's count")
    row = query(db_url, "SELECT status_changed_at FROM agent_registry")[0]
    assert row[0] == clock.now()
    assert events(db_url, agent)[-1] == ("online", "offline", "silence")


async def test_offline_detection_periodic_check(
    db_url: str, amqp_url: str, clock: FakeClock
) -> None:
    """Nothing happens before the threshold however often the detector runs; right after it
    the next tick acts."""
    agent = uuid.uuid4()
    settings = settings_for(db_url, amqp_url, offline_after_s=90.0, offline_check_interval_s=0.02)
    async with running_ingest(settings, clock=clock, detector=True) as (ingest, rec, det):
        assert det is not None
        await publish(amqp_url, [heartbeat(agent, 1)])
        await wait_until(lambda: rec.heartbeats == 1)
        clock.advance_nowait(89)
        runs = det.runs
        await wait_until(lambda: det.runs >= runs + 5, what="five sweeps")
        assert status(db_url, agent) == "online"
        clock.advance_nowait(2)
        await wait_until(lambda: det.transitions == 1, what="silence")
        assert ingest.metrics.detector_runs._value.get() >= runs + 5
        assert ingest.metrics.detector_transitions.labels("offline")._value.get() == 1
        assert ingest.metrics.detector_leader._value.get() == 1
        assert ingest.metrics.detector_sweep_seconds._sum.get() > 0
    assert status(db_url, agent) == "offline"


async def test_offline_agent_excluded_from_capacity_queries(
    db_url: str, amqp_url: str, clock: FakeClock
) -> None:
    quiet, chatty = uuid.uuid4(), uuid.uuid4()
    settings = settings_for(db_url, amqp_url, offline_after_s=60.0)
    async with running_ingest(settings, clock=clock, detector=True) as (_, rec, _d):
        await publish(amqp_url, [heartbeat(quiet, 1), heartbeat(chatty, 1)])
        await wait_until(lambda: rec.heartbeats == 2)
        assert len(query(db_url, CAPACITY, 0, 0)) == 2
        clock.advance_nowait(45)
        await publish(amqp_url, [heartbeat(chatty, 2)])
        await wait_until(lambda: rec.heartbeats == 3)
        clock.advance_nowait(20)  # quiet: 65 s silent, chatty: 20 s
        await wait_until(lambda: status(db_url, quiet) == "offline")
        assert query(db_url, CAPACITY, 0, 0) == [(chatty,)]
    assert status(db_url, chatty) == "online"


async def test_agent_comes_back_online_on_new_heartbeat(
    db_url: str, amqp_url: str, clock: FakeClock
) -> None:
    agent = uuid.uuid4()
    settings = settings_for(db_url, amqp_url, offline_after_s=30.0)
    async with running_ingest(settings, clock=clock, detector=True) as (_, rec, _d):
        await publish(amqp_url, [heartbeat(agent, 1)])
        await wait_until(lambda: rec.heartbeats == 1)
        clock.advance_nowait(31)
        await wait_until(lambda: status(db_url, agent) == "offline")
        clock.advance_nowait(5)
        await publish(amqp_url, [heartbeat(agent, 2)])
        await wait_until(lambda: rec.heartbeats == 2)
        back_at = clock.now()
    assert status(db_url, agent) == "online"
    assert scalar(db_url, "SELECT status_changed_at FROM agent_registry") == back_at
    assert events(db_url, agent) == [
        (None, "online", "first_heartbeat"),
        ("online", "offline", "silence"),
        ("offline", "online", "heartbeat"),
    ]


async def test_offline_status_transition_logged(
    db_url: str, amqp_url: str, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="fleetpulse")
    agents = [uuid.uuid4() for _ in range(3)]
    # sweep_limit 2: a mass silence is swept in bounded statements within one check.
    settings = settings_for(db_url, amqp_url, offline_after_s=10.0, sweep_limit=2)
    async with running_ingest(settings, clock=clock, detector=True) as (_, rec, det):
        await publish(amqp_url, [heartbeat(a, 1) for a in agents])
        await wait_until(lambda: rec.heartbeats == 3)
        clock.advance_nowait(11)
        assert det is not None
        await wait_until(lambda: det.transitions == 3)
    assert any("marked 3 agents offline" in r.getMessage() for r in caplog.records)
    assert scalar(db_url, "SELECT count(*) FROM agent_status_events WHERE reason = 'silence'") == 3


async def test_goodbye_marks_offline_at_once_and_a_stale_goodbye_is_ignored(
    db_url: str, amqp_url: str, clock: FakeClock
) -> None:
    agent = uuid.uuid4()
    async with running_ingest(settings_for(db_url, amqp_url), clock=clock) as (_, rec, _d):
        await publish(amqp_url, [heartbeat(agent, 1), goodbye(agent, 2)])
        await wait_until(lambda: status(db_url, agent) == "offline")
        await publish(amqp_url, [heartbeat(agent, 3)])
        await wait_until(lambda: rec.heartbeats == 2)
        # A goodbye older than the newest sample (a redelivery) must not end the new spell.
        await publish(amqp_url, [goodbye(agent, 2)])
        await wait_until(lambda: rec.messages == 4, what="the stale goodbye settled")
        await publish(amqp_url, [heartbeat(agent, 4)])
        await wait_until(lambda: rec.heartbeats == 3)
    assert status(db_url, agent) == "online"
    assert events(db_url, agent) == [
        (None, "online", "first_heartbeat"),
        ("online", "offline", "shutdown"),
        ("offline", "online", "heartbeat"),
    ]


async def test_capacity_query_with_mixed_capabilities(db_url: str, amqp_url: str) -> None:
    high, low, cpu = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    async with running_ingest(settings_for(db_url, amqp_url)) as (_, rec, _d):
        await publish(
            amqp_url,
            [
                heartbeat(high, 1, metrics=PROFILES["high"]),
                heartbeat(low, 1, metrics=PROFILES["low"]),
                heartbeat(cpu, 1, metrics=PROFILES["cpu"]),
            ],
        )
        await wait_until(lambda: rec.heartbeats == 3)
    assert query(db_url, CAPACITY, 4, 0) == [(high,)]
    assert query(db_url, CAPACITY, 1, 0) == [(high,), (low,)]
    assert query(db_url, CAPACITY, 0, 15) == [(high,)]
    assert {r[0] for r in query(db_url, CAPACITY, 0, 7)} == {high, cpu}
    pools = dict(query(db_url, "SELECT agent_id, pool_name FROM agent_registry"))
    assert pools == {high: "gpu", low: "gpu", cpu: "cpu"}


async def test_orchestrator_tracks_3_agents_simultaneously(db_url: str, amqp_url: str) -> None:
    agents = {name: uuid.uuid4() for name in PROFILES}
    async with running_ingest(settings_for(db_url, amqp_url)) as (_, rec, _d):
        await asyncio.gather(
            *(
                publish(amqp_url, [heartbeat(a, s, metrics=PROFILES[n]) for s in range(1, 6)])
                for n, a in agents.items()
            )
        )
        await wait_until(lambda: rec.heartbeats == 15)
    rows = query(
        db_url, "SELECT agent_id, last_seq, cpu_cores, gpu_vram_available_gb FROM agent_registry"
    )
    by_id = {r[0]: r[1:] for r in rows}
    assert by_id == {
        agents["high"]: (5, 16, 8.0),
        agents["low"]: (5, 4, 2.0),
        agents["cpu"]: (5, 8, 0.0),
    }


async def test_two_ingests_one_detector_acting(
    db_url: str, amqp_url: str, clock: FakeClock
) -> None:
    agents = [uuid.uuid4() for _ in range(20)]
    settings = settings_for(db_url, amqp_url, offline_after_s=5.0, offline_check_interval_s=0.02)
    async with (
        running_ingest(settings, clock=clock, detector=True, name="ingest-a") as (_, rec_a, det_a),
        running_ingest(settings, clock=clock, detector=True, name="ingest-b") as (_, rec_b, det_b),
    ):
        assert det_a is not None
        assert det_b is not None
        await publish(amqp_url, [heartbeat(a, 1) for a in agents])
        await wait_until(lambda: rec_a.heartbeats + rec_b.heartbeats == 20)
        await wait_until(lambda: det_a.runs + det_b.runs >= 3)
        assert [det_a.is_leader, det_b.is_leader].count(True) == 1
        clock.advance_nowait(6)
        await wait_until(lambda: det_a.transitions + det_b.transitions == 20)
        await asyncio.sleep(0)
        follower = det_b if det_a.is_leader else det_a
        assert follower.runs == 0
        assert follower.transitions == 0
    assert scalar(db_url, "SELECT count(*) FROM agent_status_events WHERE reason = 'silence'") == 20
    assert scalar(db_url, "SELECT count(*) FROM agent_samples") == 20
