"""fleetpulse.client against the real API (uvicorn over TCP) over the real database."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import pytest

from fleetpulse.api import create_app
from fleetpulse.client import (
    ApiNotFound,
    AsyncClient,
    BadRequest,
    Client,
    Event,
    Unauthorized,
)
from tests.fixtures.api import (
    GpuSeed,
    api_settings,
    insert_event,
    live_server,
    seed_agent,
    seed_profiles,
)
from tests.fixtures.tcp_proxy import TcpProxy


def _reads(base: str, ids: dict[str, uuid.UUID]) -> dict[str, object]:
    """Every read call of the sync client, run in a worker thread."""
    with Client(base, retry_backoff_s=0) as api:
        first = api.agents(limit=2)
        return {
            "health": api.health().status,
            "ready": api.ready().status,
            "page1": [a.hostname for a in first.items],
            "next_after": first.next_after,
            "all": sorted(a.hostname for a in api.iter_agents(page_size=2)),
            "offline": [a.hostname for a in api.agents(status="offline").items],
            "vram4": api.capacity(min_gpu_vram_gb=4, pool="render"),
            "filtered": [
                c.hostname
                for c in api.capacity(
                    min_cpu_cores=4,
                    min_mem_gb=16,
                    min_gpu_count=1,
                    gpu_type="NVIDIA L4",
                    pool="infer",
                    max_sample_age_s=600,
                    min_reliability=None,
                    limit=5,
                ).items
            ],
            "limit1": api.capacity(limit=1).items,
            "agent": api.agent(ids["agent1"]),
            "agent_capacity": api.agent_capacity(str(ids["agent2"])),
            "history": api.history(ids["agent1"], bucket="1m"),
            "events": api.events(agent_id=ids["down"]),
        }


async def test_sync_client_reads_every_resource(conn, db_url: str) -> None:
    ids = seed_profiles(conn)
    ids["down"] = seed_agent(conn, hostname="down", status="offline", gpus=(GpuSeed(24, 24),))
    seed_agent(
        conn, hostname="l4", pool="infer", cpu_cores=8, gpus=(GpuSeed(24, 20, name="NVIDIA L4"),)
    )
    seed_agent(
        conn,
        hostname="l4-small",
        pool="infer",
        cpu_cores=2,
        gpus=(GpuSeed(24, 20, name="NVIDIA L4"),),
    )
    async with live_server(create_app(api_settings(db_url))) as base:
        got = await asyncio.to_thread(_reads, base, ids)
    assert got["health"] == got["ready"] == "ok"
    assert len(got["page1"]) == 2  # type: ignore[arg-type]
    assert got["next_after"] is not None
    assert got["all"] == ["agent1", "agent2", "agent3", "down", "l4", "l4-small"]
    assert got["offline"] == ["down"]
    vram4 = got["vram4"]
    assert [(c.hostname, c.matching_gpus) for c in vram4.items] == [("agent1", (0,))]  # type: ignore[attr-defined]
    assert got["filtered"] == ["l4"]
    assert [c.hostname for c in got["limit1"]] == ["l4"]  # type: ignore[attr-defined]
    agent = got["agent"]
    assert agent.agent_id == ids["agent1"]  # type: ignore[attr-defined]
    assert agent.gpus[0].vram_free_gb == 8.0  # type: ignore[attr-defined]
    assert agent.last_heartbeat_at.tzinfo is not None  # type: ignore[attr-defined]
    assert got["agent_capacity"].hostname == "agent2"  # type: ignore[attr-defined]
    assert got["agent_capacity"].matching_gpus == (0,)  # type: ignore[attr-defined]
    history = got["history"]
    assert history.bucket_s == 60.0  # type: ignore[attr-defined]
    assert history.count == len(history.points) >= 1  # type: ignore[attr-defined]
    assert [(e.to_status, e.reason) for e in got["events"].items] == [  # type: ignore[attr-defined]
        ("online", "first_heartbeat"),
        ("offline", "silence"),
    ]


async def test_errors_carry_the_servers_message(conn, db_url: str) -> None:
    seed_agent(conn, hostname="guarded")
    app = create_app(api_settings(db_url, auth_tokens=["t0k"]))
    async with live_server(app) as base:
        async with AsyncClient(base) as anonymous:
            with pytest.raises(Unauthorized, match="bearer token"):
                await anonymous.agents()
            assert (await anonymous.health()).status == "ok"  # the probes stay open
        async with AsyncClient(base, token="t0k") as api:
            assert [a.hostname async for a in api.iter_agents()] == ["guarded"]
            with pytest.raises(ApiNotFound, match="no agent"):
                await api.agent(uuid.uuid4())
            with pytest.raises(BadRequest) as caught:
                await api.capacity(min_gpu_vram_gb=-1)
            with pytest.raises(BadRequest, match="bucket"):
                await api.history(uuid.uuid4(), bucket="1x")
    assert caught.value.status_code == 400
    assert "min_gpu_vram_gb" in caught.value.detail


async def test_event_stream_reopens_through_a_cut_and_misses_nothing(conn, db_url: str) -> None:
    agent = seed_agent(conn, hostname="watched", events=False)
    app = create_app(api_settings(db_url, registry_poll_interval_s=30.0))
    now = datetime.now(UTC)

    def event(to: str, back: int, reason: str) -> int:
        before = {"first_heartbeat": None, "silence": "online", "heartbeat": "offline"}[reason]
        return insert_event(
            conn,
            agent,
            at=now - timedelta(seconds=back),
            from_status=before,
            to_status=to,
            reason=reason,
        )

    async with live_server(app) as base:
        target = urlsplit(base)
        async with TcpProxy(target.hostname or "127.0.0.1", target.port or 80) as proxy:
            url = f"http://127.0.0.1:{proxy.port}"
            got: list[Event] = []
            async with AsyncClient(url, retry_backoff_s=0.05, retry_max_s=0.2) as api:
                first = event("online", 9, "first_heartbeat")
                stream = api.stream_events(agent_id=agent, last_event_id=0)
                got.append(await asyncio.wait_for(anext(stream), 5))
                await proxy.cut()
                missed = event("offline", 5, "silence")  # decided while the client is cut off
                await proxy.restore()
                got.append(await asyncio.wait_for(anext(stream), 10))
                later = event("online", 1, "heartbeat")
                got.append(await asyncio.wait_for(anext(stream), 5))
                await stream.aclose()
    assert [e.id for e in got] == [first, missed, later]
    assert [e.to_status for e in got] == ["online", "offline", "online"]
    assert proxy.connections_total >= 2
