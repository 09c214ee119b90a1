"""Presence and GPU health through the real broker into TimescaleDB: the registry shows the
offer and why not, a change is a withheld/offered or gpu_health event, and an older agent's
heartbeat (the contract as it was) is stored as offered."""

from __future__ import annotations

import json
import uuid

import msgspec
import pytest

from fleetpulse.messages import Heartbeat, Presence, encode, routing_key
from tests.fixtures import messages_v1_0 as old
from tests.fixtures.ingest import (
    FakeClock,
    heartbeat,
    publish,
    query,
    running_ingest,
    settings_for,
    wait_until,
)

pytestmark = pytest.mark.slow(4)

WITHHELD = Presence(
    user_idle_s=3.5, locked=False, source="logind", offered=False, withheld_reason="user_active"
)
OFFERED = Presence(user_idle_s=1200.0, locked=True, source="logind")


def beat(
    agent: uuid.UUID, seq: int, presence: Presence | None, health: str | None = None
) -> Heartbeat:
    hb = heartbeat(agent, seq)
    if health is not None:
        metrics = hb.resource_metrics
        sick = msgspec.structs.replace(metrics.gpus[0], health=health, health_reasons=["xid:94"])
        metrics = msgspec.structs.replace(metrics, gpus=[sick, *metrics.gpus[1:]])
        hb = msgspec.structs.replace(hb, resource_metrics=metrics)
    return msgspec.structs.replace(hb, presence=presence)


def events(db_url: str, agent: uuid.UUID) -> list[tuple[str, str, str]]:
    rows = query(
        db_url,
        "SELECT from_status, to_status, reason FROM agent_status_events"
        " WHERE agent_id = %s ORDER BY id",
        agent,
    )
    return [(r[0] or "", r[1], r[2]) for r in rows]


async def test_offer_and_health_changes_are_stored_and_recorded(
    db_url: str, amqp_url: str, clock: FakeClock
) -> None:
    agent = uuid.uuid4()
    async with running_ingest(settings_for(db_url, amqp_url), clock=clock) as (_, rec, _d):
        await publish(amqp_url, [beat(agent, 1, WITHHELD)])
        await wait_until(lambda: rec.heartbeats == 1)
        row = query(
            db_url,
            "SELECT offered, withheld_reason, user_idle_s, presence_locked, presence_source,"
            " gpu_health FROM agent_registry WHERE agent_id = %s",
            agent,
        )[0]
        assert row == (False, "user_active", 3.5, False, "logind", None)
        await publish(amqp_url, [beat(agent, 2, WITHHELD)])  # no change: no event
        await publish(amqp_url, [beat(agent, 3, OFFERED, health="degraded")])
        await wait_until(lambda: rec.heartbeats == 3)
        await publish(amqp_url, [beat(agent, 4, OFFERED, health="ok")])
        await wait_until(lambda: rec.heartbeats == 4)
    assert events(db_url, agent) == [
        ("", "online", "first_heartbeat"),
        ("online", "online", "withheld"),
        ("online", "online", "offered"),
        ("online", "online", "gpu_health"),
        ("online", "online", "gpu_health"),
    ]
    row = query(
        db_url,
        "SELECT offered, withheld_reason, presence_locked, gpu_health,"
        " resource_metrics->'gpus'->0->>'health' FROM agent_registry WHERE agent_id = %s",
        agent,
    )[0]
    assert row == (True, None, True, None, "ok")


async def test_an_older_agents_heartbeat_is_offered_and_a_degraded_gpu_is_kept(
    db_url: str, amqp_url: str, clock: FakeClock
) -> None:
    older, newer = uuid.uuid4(), uuid.uuid4()
    body = old.encode(old.decode(encode(heartbeat(older, 1))))  # what an older agent sends
    assert b"presence" not in body
    assert b"health" not in body
    async with running_ingest(settings_for(db_url, amqp_url), clock=clock) as (_, rec, _d):
        await publish(amqp_url, [body], key=routing_key(None, older))
        await publish(amqp_url, [beat(newer, 1, OFFERED, health="degraded")])
        await wait_until(lambda: rec.heartbeats == 2)
    rows = {
        r[0]: r[1:]
        for r in query(
            db_url,
            "SELECT agent_id, offered, presence_source, gpu_health FROM agent_registry",
        )
    }
    assert rows[older] == (True, None, None)
    offered, source, health = rows[newer]
    assert (offered, source) == (True, "logind")
    assert list(json.loads(json.dumps(health)).values()) == ["degraded"]
    assert events(db_url, newer) == [
        ("", "online", "first_heartbeat"),
        ("online", "online", "gpu_health"),
    ]
