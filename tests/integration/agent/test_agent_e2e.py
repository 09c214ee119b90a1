"""The desktop agent against the real broker: lifecycle, schedule, metrics, config.

The seed's Task 1 scenarios, mapped: lifecycle (start/connect, first heartbeat,
periodic heartbeats on a fake clock, graceful shutdown), metrics errors, three agents
with distinct ids and metrics, config-driven interval and environment overrides.
What ingest and the API do with them is tested on their side.
"""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from datetime import timedelta
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

import aio_pika
import msgspec
import pytest

from fleetpulse.agent import (
    Agent,
    FailingCollector,
    FakeClock,
    FakeGpuCollector,
    FakeHostCollector,
    build_fleet,
)
from fleetpulse.config import load_settings
from fleetpulse.errors import ConfigError
from fleetpulse.messages import EXCHANGE, GpuMetrics, Heartbeat
from tests.conftest import RabbitAdmin
from tests.fixtures.agent import Inbox, agent_settings, eventually, running

pytestmark = pytest.mark.timeout(30)


def fake_agent(amqp_url: str, state_dir: Path, clock: FakeClock, **settings: object) -> Agent:
    gpu = GpuMetrics(
        index=0,
        uuid="GPU-0",
        name="NVIDIA GeForce RTX 4090",
        vram_total_gb=24.0,
        vram_free_gb=20.5,
        util_pct=3.0,
        temp_c=41.0,
        power_w=31.5,
    )
    return Agent(
        agent_settings(amqp_url, state_dir, **settings),
        collectors=[FakeHostCollector(cores=16, load_1m=1.2), FakeGpuCollector((gpu,))],
        clock=clock,
    )


async def test_agent_never_declares_the_exchange_and_waits_for_it(
    amqp_url: str, tmp_path: Path
) -> None:
    """The agent only checks, passively, that the exchange is there (its broker user may
    configure nothing); until ingest has declared it, samples stay in the spool."""
    clock = FakeClock()
    # a long backoff after the first refusal: the stop finds the publisher waiting, not
    # halfway through a connect
    slow = {"reconnect_initial_s": 60.0, "reconnect_max_s": 60.0, "goodbye_timeout_s": 0.2}
    async with running(fake_agent(amqp_url, tmp_path, clock, **slow)) as agent:
        assert agent.publisher is not None
        publisher = agent.publisher
        await eventually(lambda: "does not exist" in (publisher.last_error or ""))
        assert not publisher.connected.is_set()
        assert agent.spool.depth >= 1
        connection = await aio_pika.connect(amqp_url)
        async with connection:
            channel = await connection.channel()
            with pytest.raises(aio_pika.exceptions.ChannelNotFoundEntity):
                await channel.declare_exchange(EXCHANGE, passive=True)


async def test_first_heartbeat_carries_the_whole_contract(
    amqp_url: str, tmp_path: Path, inbox: Inbox
) -> None:
    clock = FakeClock()
    async with running(fake_agent(amqp_url, tmp_path, clock, pool="render")) as agent:
        [heartbeat] = await inbox.wait_heartbeats(1)
        received = inbox.received[0]
    assert agent.identity is not None
    assert heartbeat.agent_id == agent.identity.agent_id
    assert received.routing_key == f"heartbeat.render.{agent.identity.agent_id}"
    assert received.properties.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
    assert received.properties.content_type == "application/json"
    assert received.properties.user_id == "guest"
    assert heartbeat.seq == 0
    assert heartbeat.sampled_at == clock.now() or heartbeat.sampled_at <= clock.now()
    assert heartbeat.sampled_at.utcoffset() == timedelta(0)
    metrics = heartbeat.resource_metrics
    assert metrics.cpu_cores == 16
    assert metrics.cpu_load_1m == 1.2
    assert metrics.cpu_available_cores == 14
    assert metrics.gpu_type == "NVIDIA GeForce RTX 4090"
    assert metrics.gpu_vram_available_gb == 20.5
    assert metrics.errors == []
    assert heartbeat.agent_stats is not None
    assert heartbeat.agent_stats.spool_depth == 0


async def test_periodic_heartbeats_on_a_fake_clock(
    amqp_url: str, tmp_path: Path, inbox: Inbox
) -> None:
    clock = FakeClock()
    async with running(fake_agent(amqp_url, tmp_path, clock)):
        await inbox.wait_heartbeats(1)
        for n in range(2, 6):
            await eventually(lambda: clock.sleepers > 0, what="agent asleep")
            await clock.advance(1.0)
            await inbox.wait_heartbeats(n)
    beats = inbox.heartbeats
    assert [b.seq for b in beats] == [0, 1, 2, 3, 4]
    gaps = {(b.sampled_at - a.sampled_at).total_seconds() for a, b in itertools.pairwise(beats)}
    assert gaps == {1.0}


async def test_schedule_does_not_drift_with_slow_collection(
    amqp_url: str, tmp_path: Path, inbox: Inbox
) -> None:
    clock = FakeClock()
    slow = {"s": 0.4}
    host = FakeHostCollector(on_collect=lambda: clock.advance_nowait(slow["s"]))
    agent = Agent(agent_settings(amqp_url, tmp_path), collectors=[host], clock=clock)
    start = clock.now()
    async with running(agent):
        await inbox.wait_heartbeats(1)
        await eventually(lambda: clock.sleepers > 0)
        await clock.advance(0.6)  # the 0.4 s collection already used the rest of the interval
        await inbox.wait_heartbeats(2)
        slow["s"] = 2.5  # overruns two ticks: they are skipped, the grid is kept
        await eventually(lambda: clock.sleepers > 0)
        await clock.advance(0.6)
        await inbox.wait_heartbeats(3)
        await eventually(lambda: clock.sleepers > 0)
        assert clock.monotonic() == 1004.5
        await clock.advance(0.5)
        await inbox.wait_heartbeats(4)
    offsets = [(b.sampled_at - start).total_seconds() for b in inbox.heartbeats]
    assert offsets == [0.0, 1.0, 2.0, 5.0]


async def test_graceful_shutdown_says_goodbye_last_and_returns_quickly(
    amqp_url: str, tmp_path: Path, inbox: Inbox
) -> None:
    clock = FakeClock()
    agent = fake_agent(amqp_url, tmp_path, clock)
    async with agent:
        task = asyncio.create_task(agent.run())
        await inbox.wait_heartbeats(1)
        started = time.monotonic()
        agent.request_stop()
        await asyncio.wait_for(task, 5)
        assert time.monotonic() - started < 3.0
        assert agent.goodbye_sent
    [goodbye] = await inbox.wait_goodbyes(1)
    assert goodbye.agent_id == agent.identity.agent_id  # type: ignore[union-attr]
    assert goodbye.seq == 1
    assert isinstance(inbox.received[-1].message, type(goodbye))


async def test_heartbeat_survives_a_metrics_error(
    amqp_url: str, tmp_path: Path, inbox: Inbox
) -> None:
    agent = Agent(
        agent_settings(amqp_url, tmp_path),
        collectors=[FakeHostCollector(cores=8), FailingCollector(RuntimeError("sensor gone"))],
        clock=FakeClock(),
    )
    async with running(agent):
        [heartbeat] = await inbox.wait_heartbeats(1)
    metrics = heartbeat.resource_metrics
    assert metrics.cpu_cores == 8
    assert metrics.gpu_type == "none"
    assert metrics.errors == ["FailingCollector: RuntimeError: sensor gone"]


async def test_host_metrics_failing_still_sends_a_heartbeat(
    amqp_url: str, tmp_path: Path, inbox: Inbox
) -> None:
    gpu = GpuMetrics(index=0, name="Tesla T4", vram_total_gb=16.0, vram_free_gb=15.0)
    agent = Agent(
        agent_settings(amqp_url, tmp_path),
        collectors=[FailingCollector(OSError("no /proc")), FakeGpuCollector((gpu,))],
        clock=FakeClock(),
    )
    async with running(agent):
        [heartbeat] = await inbox.wait_heartbeats(1)
    metrics = heartbeat.resource_metrics
    assert metrics.cpu_cores == 0
    assert metrics.gpu_vram_available_gb == 15.0
    assert metrics.errors[0] == "FailingCollector: OSError: no /proc"
    assert "host: no host metrics" in metrics.errors


async def test_three_agents_with_distinct_ids_and_metrics(
    amqp_url: str, tmp_path: Path, inbox: Inbox
) -> None:
    clock = FakeClock()
    fleet = build_fleet("seed", 3)
    agents = [
        Agent(agent_settings(amqp_url, tmp_path / f"a{i}"), collectors=[m], clock=clock)
        for i, m in enumerate(fleet)
    ]
    async with running(agents[0]), running(agents[1]), running(agents[2]):
        await inbox.wait_heartbeats(3)
        await eventually(lambda: clock.sleepers >= 3)
        await clock.advance(1.0)
        await inbox.wait_heartbeats(6)
    by_agent: dict[uuid.UUID, list[Heartbeat]] = {}
    for beat in inbox.heartbeats:
        by_agent.setdefault(beat.agent_id, []).append(beat)
    assert len(by_agent) == 3
    assert all(len(b) == 2 for b in by_agent.values())
    seen = {
        (
            b[0].resource_metrics.gpu_vram_available_gb,
            b[0].resource_metrics.cpu_available_cores,
            b[0].resource_metrics.gpu_type,
        )
        for b in by_agent.values()
    }
    assert seen == {
        (8.0, 16, "NVIDIA GeForce RTX 3060"),
        (2.0, 4, "NVIDIA GeForce GTX 1650"),
        (0.0, 8, "none"),
    }
    # the seed's capacity filters: min VRAM 4 GB → agent 1 only; min 16 cores → agent 1
    assert sum(v >= 4.0 for v, _, _ in seen) == 1
    assert sum(c >= 16 for _, c, _ in seen) == 1


async def test_config_file_sets_the_heartbeat_interval(
    amqp_url: str, tmp_path: Path, inbox: Inbox
) -> None:
    file = tmp_path / "fleetpulse.toml"
    file.write_text(
        f'[amqp]\nurl = "{amqp_url}"\n[agent]\nheartbeat_interval_s = 2.5\n'
        f'state_dir = "{tmp_path / "state"}"\nreconnect_initial_s = 0.02\n'
    )
    settings = load_settings(file, environ={})
    assert settings.agent.heartbeat_interval_s == 2.5
    clock = FakeClock()
    agent = Agent(settings, collectors=[FakeHostCollector()], clock=clock)
    async with running(agent):
        await inbox.wait_heartbeats(1)
        await eventually(lambda: clock.sleepers > 0)
        await clock.advance(2.4)
        await clock.advance(0.0)
        assert len(inbox.heartbeats) == 1
        await clock.advance(0.1)
        await inbox.wait_heartbeats(2)
    beats = inbox.heartbeats
    assert (beats[1].sampled_at - beats[0].sampled_at).total_seconds() == 2.5


async def test_environment_overrides_the_config_file(
    amqp_url: str, tmp_path: Path, inbox: Inbox
) -> None:
    file = tmp_path / "fleetpulse.toml"
    file.write_text('[agent]\nheartbeat_interval_s = 30\npool = "render"\n')
    agent_id = uuid.uuid4()
    settings = load_settings(
        file,
        environ={
            "FLEETPULSE_AMQP_URL": amqp_url,
            "FLEETPULSE_AGENT_HEARTBEAT_INTERVAL_S": "0.5",
            "FLEETPULSE_AGENT_POOL": "train",
            "FLEETPULSE_AGENT_ID": str(agent_id),
            "FLEETPULSE_AGENT_HOSTNAME": "ws-17",
            "FLEETPULSE_AGENT_STATE_DIR": str(tmp_path / "state"),
        },
    )
    clock = FakeClock()
    async with running(Agent(settings, collectors=[FakeHostCollector()], clock=clock)):
        await inbox.wait_heartbeats(1)
        await eventually(lambda: clock.sleepers > 0)
        await clock.advance(0.5)
        await inbox.wait_heartbeats(2)
    first, second = inbox.heartbeats
    assert first.agent_id == agent_id
    assert first.hostname == "ws-17"
    assert first.pool == "train"
    assert inbox.received[0].routing_key == f"heartbeat.train.{agent_id}"
    assert (second.sampled_at - first.sampled_at).total_seconds() == 0.5


async def test_agent_id_and_seq_survive_a_restart(
    amqp_url: str, tmp_path: Path, inbox: Inbox
) -> None:
    clock = FakeClock()
    async with running(fake_agent(amqp_url, tmp_path, clock)) as first:
        await inbox.wait_heartbeats(1)
    async with running(fake_agent(amqp_url, tmp_path, clock)) as second:
        await inbox.wait_heartbeats(2)
    assert first.identity is not None
    assert second.identity is not None
    # the same agent, in a new run: only the incarnation is drawn again at start
    assert second.identity.incarnation != first.identity.incarnation
    same_run = msgspec.structs.replace(first.identity, incarnation=second.identity.incarnation)
    assert same_run == second.identity
    assert (tmp_path / "agent_id").read_text().strip() == str(first.identity.agent_id)
    # seq 1 went to the first run's goodbye
    assert [b.seq for b in inbox.heartbeats] == [0, 2]
    assert [b.incarnation for b in inbox.heartbeats] == [
        first.identity.incarnation,
        second.identity.incarnation,
    ]


async def test_two_agents_cannot_share_a_state_dir(amqp_url: str, tmp_path: Path) -> None:
    clock = FakeClock()
    async with fake_agent(amqp_url, tmp_path, clock):
        with pytest.raises(ConfigError, match="another agent is using it"):
            async with fake_agent(amqp_url, tmp_path, clock):
                pass  # pragma: no cover


async def test_invalid_pool_stops_the_agent_at_start(amqp_url: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"agent\.pool"):
        async with fake_agent(amqp_url, tmp_path, FakeClock(), pool="Not A Pool"):
            pass  # pragma: no cover


async def test_an_agent_with_publish_only_credentials_is_enough(
    amqp_url: str, amqp_vhost: str, rabbit_admin: RabbitAdmin, tmp_path: Path, inbox: Inbox
) -> None:
    """The least a broker user needs: write on the heartbeat exchange (no configure at all),
    its own routing keys; ``user_id`` on every message is that user, as the broker
    validates."""
    user = f"agent-{uuid.uuid4().hex[:8]}"
    agent_id = uuid.uuid4()
    vhost = quote(amqp_vhost, safe="")
    client = rabbit_admin.client
    client.put(f"/api/users/{user}", json={"password": "s3cret", "tags": ""}).raise_for_status()
    try:
        client.put(
            f"/api/permissions/{vhost}/{user}",
            json={"configure": "^$", "write": "^fleetpulse\\.heartbeats$", "read": "^$"},
        ).raise_for_status()  # fmt: skip
        client.put(
            f"/api/topic-permissions/{vhost}/{user}",
            json={"exchange": EXCHANGE, "write": f"^heartbeat\\.[^.]+\\.{agent_id}$", "read": "^$"},
        ).raise_for_status()
        parts = urlsplit(amqp_url)
        url = urlunsplit(parts._replace(netloc=f"{user}:s3cret@{parts.hostname}:{parts.port}"))
        agent = Agent(
            agent_settings(url, tmp_path, id=str(agent_id), pool="render"),
            collectors=[FakeHostCollector()],
            clock=FakeClock(),
        )
        async with running(agent):
            [beat] = await inbox.wait_heartbeats(1)
        await inbox.wait_goodbyes(1)
    finally:
        client.delete(f"/api/users/{user}")
    assert beat.agent_id == agent_id
    assert {r.properties.user_id for r in inbox.received} == {user}
    assert agent.goodbye_sent
