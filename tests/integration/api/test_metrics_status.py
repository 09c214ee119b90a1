"""/metrics from the background snapshot, and `fleetpulse status` against a live API."""

from __future__ import annotations

import asyncio
import io
import socket

from fleetpulse.api import create_app
from fleetpulse.config import ApiSettings, Settings
from fleetpulse.console import run_status
from tests.fixtures.api import GpuSeed, api_settings, live_server, seed_agent, seed_profiles

GIB = 1024**3


def sample(text: str, name: str, **labels: str) -> float:
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    prefix = f"{name}{{{want}}} " if labels else f"{name} "
    for line in text.splitlines():
        if line.startswith(prefix):
            return float(line[len(prefix) :])
    raise AssertionError(f"no sample {prefix!r}")


async def test_fleet_gauges_capacity_totals_and_per_agent(conn, client_for) -> None:
    ids = seed_profiles(conn)
    seed_agent(conn, hostname="down", pool="render", status="offline", gpus=(GpuSeed(24, 24),))
    seed_agent(
        conn,
        hostname="l4",
        pool="infer",
        cpu_cores=8,
        gpus=(GpuSeed(24, 20, name="NVIDIA L4"), GpuSeed(24, 1, name="NVIDIA L4", error="Xid 48")),
        agent_stats={"gpu_probe_failures_total": 3, "dropped_total": 7},
    )
    async with client_for() as client:
        await client.get("/api/v1/agents/available-capacity", params={"min_gpu_vram_gb": 1})
        await client.get(f"/api/v1/agents/{ids['agent1']}")
        text = (await client.get("/metrics")).text
    assert sample(text, "fleetpulse_agents", pool="render", status="online") == 3
    assert sample(text, "fleetpulse_agents", pool="render", status="offline") == 1
    assert sample(text, "fleetpulse_agents", pool="infer", status="online") == 1
    rtx = "NVIDIA GeForce RTX 4090"
    assert (
        sample(text, "fleetpulse_capacity_gpu_vram_free_bytes", pool="render", gpu_type=rtx)
        == 10 * GIB
    )
    assert sample(text, "fleetpulse_capacity_gpus", pool="render", gpu_type=rtx) == 2
    assert sample(text, "fleetpulse_capacity_gpus", pool="infer", gpu_type="NVIDIA L4") == 1
    assert sample(text, "fleetpulse_capacity_cpu_available_cores", pool="render") == 28
    assert sample(text, "fleetpulse_capacity_mem_available_bytes", pool="render") == 96 * GIB
    agent1 = {"agent_id": str(ids["agent1"]), "hostname": "agent1", "pool": "render"}
    assert sample(text, "fleetpulse_agent_up", **agent1) == 1
    assert sample(text, "fleetpulse_agent_gpu_vram_available_bytes", **agent1) == 8 * GIB
    assert sample(text, "fleetpulse_agent_cpu_available_cores", **agent1) == 16
    assert 0 <= sample(text, "fleetpulse_agent_heartbeat_age_seconds", **agent1) < 60
    assert "# TYPE fleetpulse_agent_gpu_probe_failures_total counter" in text
    l4_lines = [line for line in text.splitlines() if 'hostname="l4"' in line]
    assert any(
        line.startswith("fleetpulse_agent_gpu_probe_failures_total{") and line.endswith(" 3")
        for line in l4_lines
    )
    assert any(
        line.startswith("fleetpulse_agent_spool_dropped_total{") and line.endswith(" 7")
        for line in l4_lines
    )
    assert sample(text, "fleetpulse_metrics_snapshot_age_seconds") < 60
    assert (
        sample(
            text,
            "fleetpulse_api_requests_total",
            method="GET",
            path="/api/v1/agents/{agent_id}",
            status="200",
        )
        == 1
    )
    assert 'path="/api/v1/agents/available-capacity"' in text
    assert str(ids["agent1"]) not in text.split("fleetpulse_api_requests_total")[1]


async def test_per_agent_series_are_capped(conn, client_for) -> None:
    for n in range(5):
        seed_agent(conn, hostname=f"h{n}")
    async with client_for(metrics_per_agent_limit=2) as client:
        text = (await client.get("/metrics")).text
    ups = [line for line in text.splitlines() if line.startswith("fleetpulse_agent_up{")]
    assert len(ups) == 2
    assert sample(text, "fleetpulse_metrics_agents_omitted") == 3
    assert sample(text, "fleetpulse_agents", pool="render", status="online") == 5


async def test_snapshot_refreshes_in_the_background(conn, client_for) -> None:
    async with client_for(metrics_refresh_interval_s=0.05) as client:
        before = (await client.get("/metrics")).text
        seed_agent(conn, hostname="late")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 5
        after = before
        while 'hostname="late"' not in after and loop.time() < deadline:
            await asyncio.sleep(0.05)
            after = (await client.get("/metrics")).text
    assert 'hostname="late"' not in before
    assert 'hostname="late"' in after


async def test_status_prints_the_fleet_online_first_with_pool_summary(conn, db_url) -> None:
    seed_agent(conn, hostname="zz-offline", pool="cpu", status="offline")
    seed_profiles(conn)
    app = create_app(api_settings(db_url))
    out = io.StringIO()
    async with live_server(app) as base:
        code = await asyncio.to_thread(run_status, Settings(), api_url=base, token=None, out=out)
    text = out.getvalue()
    assert code == 0
    order = [text.index(h) for h in ("agent1", "agent2", "agent3", "zz-offline")]
    assert order == sorted(order)
    assert "pools: cpu 0/1 online, render 3/3 online" in text


async def test_status_without_api_names_the_url(capsys) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    settings = Settings(api=ApiSettings(host="127.0.0.1", port=port))
    code = await asyncio.to_thread(run_status, settings, api_url=None, token=None)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert len(err) == 1
    assert f"http://127.0.0.1:{port}" in err[0]
    assert "fleetpulse api" in err[0]


async def test_status_with_auth_needs_the_token(conn, db_url, capsys) -> None:
    seed_agent(conn, hostname="guarded")
    app = create_app(api_settings(db_url, auth_tokens=["t0k"]))
    out = io.StringIO()
    async with live_server(app) as base:
        denied = await asyncio.to_thread(run_status, Settings(), api_url=base, token=None)
        allowed = await asyncio.to_thread(
            run_status, Settings(), api_url=base, token="t0k", out=out
        )
    assert denied == 1
    assert "401" in capsys.readouterr().err
    assert allowed == 0
    assert "guarded" in out.getvalue()
