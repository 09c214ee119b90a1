"""Memory bounded by bytes, not only by message count (issue 11, part 5)."""

from __future__ import annotations

import re
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiormq
import pytest
import yaml

from fleetpulse.messages import (
    BROKER_MAX_MESSAGE_BYTES,
    DEAD_LETTER_QUEUE,
    MAX_BODY_BYTES,
    routing_key,
)
from tests.fixtures.ingest import (
    heartbeat,
    publish,
    queue_messages,
    running_ingest,
    settings_for,
    wait_until,
)
from tests.integration.ingest.conftest import AgentUser, user_of

pytestmark = pytest.mark.slow(8)

ROOT = Path(__file__).resolve().parents[3]
CONF = ROOT / "scripts" / "rabbitmq-fleetpulse.conf"


def broker_max_message_size() -> int:
    found = re.search(r"^max_message_size = (\d+)$", CONF.read_text(), re.MULTILINE)
    assert found, CONF
    return int(found.group(1))


def test_the_set_up_and_compose_give_the_broker_a_max_message_size() -> None:
    limit = broker_max_message_size()
    assert limit == BROKER_MAX_MESSAGE_BYTES
    assert MAX_BODY_BYTES < limit <= 1024 * 1024
    script = (ROOT / "scripts" / "services.sh").read_text()
    assert "rabbitmq-fleetpulse.conf" in script
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    mounts = compose["services"]["rabbitmq"]["volumes"]
    assert "./scripts/rabbitmq-fleetpulse.conf:/etc/rabbitmq/conf.d/90-fleetpulse.conf:ro" in mounts


async def test_the_broker_refuses_a_message_over_its_max_size(
    amqp_url: str, db_url: str, agent_user: AgentUser
) -> None:
    """A 1 MiB body never reaches ingest: the broker closes the publisher's channel."""
    agent = uuid.uuid4()
    url = agent_user(agent)
    async with running_ingest(settings_for(db_url, amqp_url)):
        with pytest.raises(aiormq.exceptions.ChannelPreconditionFailed, match="max size"):
            await publish(
                url, [b"x" * (1024 * 1024)], user_id=user_of(url), key=routing_key(None, agent)
            )


def _dead(rabbit_admin, vhost: str) -> dict[str, Any]:
    response = rabbit_admin.client.get(f"/api/queues/{quote(vhost, safe='')}/{DEAD_LETTER_QUEUE}")
    response.raise_for_status()
    result: dict[str, Any] = response.json()
    return result


async def test_a_flood_of_max_size_messages_is_held_within_the_byte_limit(
    amqp_url: str, db_url: str, agent_user: AgentUser, rabbit_admin, amqp_vhost: str
) -> None:
    """One agent credential floods ingest with bodies just under the broker's limit (each over
    the 64 KiB body limit, so dead-lettered): ingest never holds more than max_unacked_bytes
    of them and settles every one."""
    agent = uuid.uuid4()
    url = agent_user(agent)
    body = b"x" * (broker_max_message_size() - 1024)
    count = 120
    limit = 2 * 1024 * 1024
    settings = settings_for(db_url, amqp_url, max_unacked_bytes=limit)
    async with running_ingest(settings):
        pass  # the topology, then a backlog waiting for the next start: a flood at once
    await publish(url, [body] * count, user_id=user_of(url), key=routing_key(None, agent))
    async with running_ingest(settings) as (ingest, rec, _d):
        await wait_until(lambda: len(rec.rejected) == count, timeout_s=30)
        await publish(url, [heartbeat(agent, 1)], user_id=user_of(url))
        await wait_until(lambda: rec.heartbeats == 1)
        assert {r.reason for r in rec.rejected} == {"oversize"}
        assert ingest.prefetch_count == limit // BROKER_MAX_MESSAGE_BYTES
        assert limit // 2 < ingest.held_bytes_peak <= limit
        assert ingest.metrics.unacked_bytes._value.get() == 0
    assert await queue_messages(amqp_url, DEAD_LETTER_QUEUE) == count


async def test_the_dead_letter_queue_is_bounded_dropping_the_oldest(
    amqp_url: str, db_url: str, rabbit_admin, amqp_vhost: str
) -> None:
    settings = settings_for(db_url, amqp_url, dead_letter_max_messages=5)
    async with running_ingest(settings) as (_, rec, _d):
        await publish(amqp_url, [f"not json {n}".encode() for n in range(12)])
        await wait_until(lambda: len(rec.rejected) == 12)
    queue = _dead(rabbit_admin, amqp_vhost)
    assert queue["arguments"]["x-overflow"] == "drop-head"
    assert queue["arguments"]["x-max-length-bytes"] == settings.ingest.dead_letter_max_bytes
    assert await queue_messages(amqp_url, DEAD_LETTER_QUEUE) == 5
    vh = quote(amqp_vhost, safe="")
    kept = rabbit_admin.client.post(
        f"/api/queues/{vh}/{DEAD_LETTER_QUEUE}/get",
        json={"count": 10, "ackmode": "ack_requeue_true", "encoding": "auto"},
    ).json()
    assert [m["payload"] for m in kept] == [f"not json {n}" for n in range(7, 12)]


async def test_past_the_byte_limit_the_consumer_pauses_and_resumes(
    amqp_url: str, db_url: str
) -> None:
    """Should bodies be bigger than the byte limit allows (here: any body), ingest cancels
    its consumer while it holds too much and consumes again once it has settled it."""
    agent = uuid.uuid4()
    settings = settings_for(db_url, amqp_url, max_unacked_bytes=100)
    async with running_ingest(settings):
        pass
    await publish(amqp_url, [heartbeat(agent, seq) for seq in range(1, 21)])
    async with running_ingest(settings) as (ingest, rec, _d):
        assert ingest.prefetch_count == 1
        await wait_until(lambda: rec.heartbeats == 20, timeout_s=30)
        assert ingest.metrics.consumer_pauses._value.get() >= 1
        assert ingest.metrics.unacked_bytes._value.get() == 0
