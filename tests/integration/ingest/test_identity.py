"""Per-agent broker identities confine an agent (issue 11, part 4), on the real broker with
real users made by ``fleetpulse admin agent-credentials``."""

from __future__ import annotations

import logging
import uuid
from urllib.parse import quote

import aiormq
import pytest

from fleetpulse.ingest.topology import BINDING_KEY
from fleetpulse.messages import EXCHANGE, INGEST_QUEUE, routing_key
from tests.fixtures.ingest import (
    heartbeat,
    publish,
    query,
    resources,
    running_ingest,
    scalar,
    settings_for,
    wait_until,
)
from tests.integration.ingest.conftest import AgentUser, user_of

pytestmark = pytest.mark.slow(6)


async def test_a_squatter_cannot_claim_an_unseen_agent(
    db_url: str, amqp_url: str, agent_user: AgentUser, caplog: pytest.LogCaptureFixture
) -> None:
    """Mallory publishes, on her own routing key, a heartbeat for an agent never seen: it is
    dead-lettered, invents nothing, and the real agent is not locked out afterwards."""
    mallory_agent, victim = uuid.uuid4(), uuid.uuid4()
    mallory = agent_user(mallory_agent)
    victim_url = agent_user(victim)
    caplog.set_level(logging.WARNING, logger="fleetpulse.security")
    async with running_ingest(settings_for(db_url, amqp_url)) as (ingest, rec, _d):
        squat = heartbeat(victim, 1, hostname="squatter", metrics=resources(cores=256, load=0))
        invented = heartbeat(uuid.uuid4(), 1, hostname="invented")
        await publish(
            mallory,
            [squat, invented],
            user_id=user_of(mallory),
            key=routing_key(None, mallory_agent),
        )
        await wait_until(lambda: len(rec.rejected) == 2)
        assert {r.reason for r in rec.rejected} == {"unauthorised"}
        assert scalar(db_url, "SELECT count(*) FROM agent_registry") == 0
        await publish(
            victim_url, [heartbeat(victim, 2, hostname="real")], user_id=user_of(victim_url)
        )
        await wait_until(lambda: rec.heartbeats == 1)
        assert ingest.metrics.messages.labels("unauthorised")._value.get() == 2
    assert query(db_url, "SELECT agent_id, hostname FROM agent_registry") == [(victim, "real")]
    assert any("names agent" in r.getMessage() for r in caplog.records)


async def test_an_agent_first_seen_anonymously_cannot_be_claimed(
    db_url: str, amqp_url: str, agent_user: AgentUser
) -> None:
    """An agent first heard without a user_id is not up for grabs by the next identity."""
    anonymous, mallory_agent = uuid.uuid4(), uuid.uuid4()
    mallory = agent_user(mallory_agent)
    async with running_ingest(settings_for(db_url, amqp_url)) as (_, rec, _d):
        await publish(amqp_url, [heartbeat(anonymous, 1, hostname="anon")])
        await wait_until(lambda: rec.heartbeats == 1)
        forged = heartbeat(anonymous, 2, hostname="forged")
        await publish(
            mallory, [forged], user_id=user_of(mallory), key=routing_key(None, mallory_agent)
        )
        await wait_until(lambda: len(rec.rejected) == 1)
        await publish(amqp_url, [heartbeat(anonymous, 3, hostname="anon")])
        await wait_until(lambda: rec.heartbeats == 2)
    assert query(db_url, "SELECT hostname, last_seq, principal FROM agent_registry") == [
        ("anon", 3, None)
    ]


async def test_the_broker_confines_an_agent_user_to_its_routing_keys(
    db_url: str, amqp_url: str, agent_user: AgentUser
) -> None:
    own = uuid.uuid4()
    url = agent_user(own)
    async with running_ingest(settings_for(db_url, amqp_url)) as (_, rec, _d):
        with pytest.raises(aiormq.exceptions.ChannelAccessRefused):
            await publish(url, [heartbeat(uuid.uuid4(), 1)], user_id=user_of(url))
        await publish(url, [heartbeat(own, 1)], user_id=user_of(url))
        await wait_until(lambda: rec.heartbeats == 1)


async def _as(url: str, action: str) -> None:
    """One configure action of an agent user on the heartbeat exchange."""
    connection = await aiormq.connect(url)
    try:
        channel = await connection.channel()
        if action == "delete":
            await channel.exchange_delete(EXCHANGE)
        elif action == "redeclare":
            await channel.exchange_declare(exchange=EXCHANGE, exchange_type="fanout")
        elif action == "declare_queue":
            await channel.queue_declare("mallory.inbox")
        elif action == "bind":
            await channel.queue_bind(INGEST_QUEUE, EXCHANGE, routing_key="#")
        elif action == "unbind":
            await channel.queue_unbind(INGEST_QUEUE, EXCHANGE, routing_key=BINDING_KEY)
        elif action == "consume":
            await channel.basic_consume(INGEST_QUEUE, lambda m: None)  # type: ignore[arg-type,return-value]
        elif action == "declare_active":
            await channel.exchange_declare(exchange=EXCHANGE, exchange_type="topic", durable=True)
        else:  # pragma: no cover
            raise AssertionError(action)
    finally:
        await connection.close()


REFUSED = ["delete", "redeclare", "declare_active", "declare_queue", "bind", "unbind", "consume"]


@pytest.mark.parametrize("action", REFUSED)
async def test_an_agent_user_may_configure_nothing(
    db_url: str, amqp_url: str, agent_user: AgentUser, rabbit_admin, amqp_vhost: str, action: str
) -> None:
    """No delete or re-declare of the exchange, no queue of its own, no (un)binding, no
    reading: the topology stays as ingest declared it and heartbeats keep flowing."""
    own = uuid.uuid4()
    url = agent_user(own)
    async with running_ingest(settings_for(db_url, amqp_url)) as (_, rec, _d):
        with pytest.raises(aiormq.exceptions.ChannelAccessRefused):
            await _as(url, action)
        exchange = rabbit_admin.client.get(
            f"/api/exchanges/{quote(amqp_vhost, safe='')}/{EXCHANGE}"
        ).json()
        assert (exchange["type"], exchange["durable"]) == ("topic", True)
        await publish(url, [heartbeat(own, 1)], user_id=user_of(url))
        await wait_until(lambda: rec.heartbeats == 1)


async def test_the_agent_checks_the_exchange_passively(
    amqp_url: str, agent_user: AgentUser
) -> None:
    """An agent user's own declare is a passive one (no configure permission needed); with
    no exchange yet it is told so and keeps its samples."""
    own = uuid.uuid4()
    url = agent_user(own)
    with pytest.raises(aiormq.exceptions.ChannelNotFoundEntity):
        await publish(url, [heartbeat(own, 1)], user_id=user_of(url))


async def test_require_user_id_rejects_anonymous_heartbeats(db_url: str, amqp_url: str) -> None:
    settings = settings_for(db_url, amqp_url, require_user_id=True)
    async with running_ingest(settings) as (_, rec, _d):
        await publish(amqp_url, [heartbeat(uuid.uuid4(), 1)])
        await publish(amqp_url, [heartbeat(uuid.uuid4(), 1)], user_id="guest")
        await wait_until(lambda: rec.heartbeats == 1 and len(rec.rejected) == 1)
    assert rec.rejected[0].reason == "unauthorised"
    assert scalar(db_url, "SELECT count(*) FROM agent_registry") == 1
