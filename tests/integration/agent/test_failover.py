"""Several broker URLs (the nodes of a cluster): the agent and ingest start on one and move
to the next when their connection is lost. Played on the one test broker through two
proxies, each standing for a node; scripts/cluster.sh and tests/cluster play it on three
real nodes."""

from __future__ import annotations

import random
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import msgspec
import pytest

from fleetpulse.agent import Agent, FakeClock, FakeHostCollector
from fleetpulse.broker import BrokerUrls
from fleetpulse.config import AmqpSettings
from tests.fixtures.agent import Inbox, agent_settings, eventually, running, via_port
from tests.fixtures.ingest import heartbeat, publish, running_ingest, scalar, settings_for
from tests.fixtures.tcp_proxy import TcpProxy

pytestmark = [pytest.mark.timeout(40)]


def test_broker_urls_start_at_random_and_go_round() -> None:
    urls = ["amqp://a/", "amqp://b/", "amqp://c/"]
    starts = {BrokerUrls(urls, rng=random.Random(seed)).current for seed in range(30)}
    assert starts == set(urls)
    ring = BrokerUrls(urls, rng=random.Random(1))
    first = ring.current
    visited = [ring.advance() for _ in range(3)]
    assert visited[-1] == first
    assert set(visited) == set(urls)
    assert ring.moves == 3
    single = BrokerUrls("amqp://only/")
    assert single.advance() == "amqp://only/"
    assert single.moves == 0
    with pytest.raises(ValueError, match="at least one"):
        BrokerUrls([])


async def test_the_agent_moves_to_the_next_node_and_loses_nothing(
    amqp_url: str, tmp_path: Path, inbox: Inbox
) -> None:
    broker = urlsplit(amqp_url)
    host, port = broker.hostname or "127.0.0.1", broker.port or 5672
    async with TcpProxy(host, port) as node_a, TcpProxy(host, port) as node_b:
        nodes = {via_port(amqp_url, p.port): p for p in (node_a, node_b)}
        settings = agent_settings(amqp_url, tmp_path)
        settings = msgspec.structs.replace(settings, amqp=AmqpSettings(urls=list(nodes)))
        clock = FakeClock()
        agent = Agent(settings, collectors=[FakeHostCollector()], clock=clock)
        async with running(agent):
            assert agent.publisher is not None
            await inbox.wait_heartbeats(1)
            await eventually(lambda: agent.spool.depth == 0, what="first confirm")
            first = agent.publisher.url
            await nodes[first].cut()  # that node dies and stays dead
            for n in range(2, 5):
                await eventually(lambda: clock.sleepers > 0)
                await clock.advance(1.0)
                await inbox.wait_heartbeats(n)
            await eventually(lambda: agent.spool.depth == 0, what="all confirmed")
            assert agent.publisher.url != first
            assert agent.publisher.brokers.moves >= 1
        beats = inbox.heartbeats
        assert [b.seq for b in beats] == [0, 1, 2, 3]
        assert all(p.connections_total >= 1 for p in nodes.values())


async def test_ingest_moves_to_the_next_node_and_stores_everything_once(
    db_url: str, amqp_url: str
) -> None:
    broker = urlsplit(amqp_url)
    host, port = broker.hostname or "127.0.0.1", broker.port or 5672
    agent = uuid.uuid4()
    async with TcpProxy(host, port) as node_a, TcpProxy(host, port) as node_b:
        nodes = {via_port(amqp_url, p.port): p for p in (node_a, node_b)}
        settings = settings_for(db_url, amqp_url)
        settings = msgspec.structs.replace(settings, amqp=AmqpSettings(urls=list(nodes)))
        async with running_ingest(settings) as (ingest, rec, _d):
            await publish(amqp_url, [heartbeat(agent, s) for s in range(1, 11)])
            await eventually(lambda: rec.heartbeats == 10, what="first ten stored")
            first = ingest.brokers.current
            await nodes[first].cut()
            await publish(amqp_url, [heartbeat(agent, s) for s in range(11, 21)])
            await eventually(lambda: rec.heartbeats >= 20, what="ten more after the move")
            assert ingest.brokers.current != first
            assert ingest.sessions_started >= 2
    assert scalar(db_url, "SELECT count(*) FROM agent_samples WHERE agent_id = %s", agent) == 20
