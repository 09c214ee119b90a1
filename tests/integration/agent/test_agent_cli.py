"""``fleetpulse agent`` and ``fleetpulse simulate`` as an operator runs them: real
processes, real signals, exit codes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sqlite3
import sys
import time
from pathlib import Path

import msgspec
import pytest

from fleetpulse.agent import FakeClock, Simulator
from fleetpulse.messages import Goodbye
from tests.fixtures.agent import Inbox, agent_settings, eventually
from tests.fixtures.logs import json_log_lines

pytestmark = [pytest.mark.timeout(40), pytest.mark.slow(6)]


async def _spawn(*args: str, env: dict[str, str]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "fleetpulse",
        *args,
        env={**os.environ, **env},
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
async def test_agent_process_stops_cleanly_on_a_signal(
    amqp_url: str, tmp_path: Path, inbox: Inbox, sig: signal.Signals
) -> None:
    env = {
        "FLEETPULSE_AMQP_URL": amqp_url,
        "FLEETPULSE_AGENT_STATE_DIR": str(tmp_path),
        "FLEETPULSE_AGENT_HEARTBEAT_INTERVAL_S": "0.2",
        "FLEETPULSE_AGENT_POOL": "render",
        "FLEETPULSE_LOG_FORMAT": "json",
    }
    proc = await _spawn("agent", env=env)
    try:
        beats = await inbox.wait_heartbeats(2, timeout_s=20)
    finally:
        proc.send_signal(sig)
        started = time.monotonic()
        _, stderr = await asyncio.wait_for(proc.communicate(), 10)
    assert proc.returncode == 0, stderr.decode()
    assert time.monotonic() - started < 5.0
    [goodbye] = await inbox.wait_goodbyes(1)
    assert isinstance(inbox.received[-1].message, Goodbye)
    agent_id = (tmp_path / "agent_id").read_text().strip()
    assert {str(b.agent_id) for b in beats} == {agent_id}
    assert str(goodbye.agent_id) == agent_id
    assert beats[0].pool == "render"
    assert beats[0].resource_metrics.cpu_cores == os.cpu_count()
    assert beats[1].seq == beats[0].seq + 1
    logged = json_log_lines(stderr)
    started_line = next(r for r in logged if r["message"].startswith("agent "))
    assert started_line["logger"] == "fleetpulse.agent.runner"
    assert started_line["level"] == "INFO"
    assert (started_line["agent_id"], started_line["pool"]) == (agent_id, "render")
    assert any(r.get("goodbye_sent") is True for r in logged)


async def test_agent_process_with_the_broker_down_spools_and_stops_at_once(
    tmp_path: Path,
) -> None:
    env = {
        "FLEETPULSE_AMQP_URL": "amqp://guest:guest@127.0.0.1:1/",
        "FLEETPULSE_AGENT_STATE_DIR": str(tmp_path),
        "FLEETPULSE_AGENT_HEARTBEAT_INTERVAL_S": "0.1",
    }
    proc = await _spawn("--log-format", "json", "agent", env=env)

    def spooled() -> int:
        if not (tmp_path / "spool.sqlite3").exists():
            return 0
        with contextlib.closing(sqlite3.connect(tmp_path / "spool.sqlite3")) as db:
            try:
                return int(db.execute("SELECT COUNT(*) FROM spool").fetchone()[0])
            except sqlite3.OperationalError:
                return 0

    try:
        await eventually(lambda: spooled() >= 3, timeout_s=20, what="3 samples spooled")
    finally:
        proc.send_signal(signal.SIGTERM)
        started = time.monotonic()
        _, stderr = await asyncio.wait_for(proc.communicate(), 10)
    assert proc.returncode == 0, stderr.decode()
    assert time.monotonic() - started < 3.0
    assert spooled() >= 3
    [down] = [r for r in json_log_lines(stderr) if "unreachable" in r["message"]]
    assert down["level"] == "WARNING"
    assert down["reason"]
    assert down["url"] == "amqp://guest:***@127.0.0.1:1/"


async def test_simulate_process_runs_for_its_duration(amqp_url: str, inbox: Inbox) -> None:
    proc = await _spawn(
        "simulate",
        "--agents", "5", "--profile", "mixed", "--interval", "0.3", "--duration", "1.0",
        env={"FLEETPULSE_AMQP_URL": amqp_url},
    )  # fmt: skip
    _, stderr = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 0, stderr.decode()
    await inbox.wait_goodbyes(5)
    ids = {b.agent_id for b in inbox.heartbeats}
    assert len(ids) == 5
    assert {g.agent_id for g in inbox.goodbyes} == ids
    assert len(inbox.heartbeats) >= 10  # about 1.0 / 0.3 rounds of 5


async def test_simulate_rejects_a_bad_agent_count(amqp_url: str) -> None:
    proc = await _spawn("simulate", "--agents", "0", env={"FLEETPULSE_AMQP_URL": amqp_url})
    _, stderr = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode != 0
    assert b"agents must be at least 1" in stderr


async def test_simulated_seed_fleet_is_spread_over_the_interval(
    amqp_url: str, tmp_path: Path, inbox: Inbox
) -> None:
    clock = FakeClock()
    settings = agent_settings(amqp_url, tmp_path)
    settings = msgspec.structs.replace(
        settings, agent=msgspec.structs.replace(settings.agent, pool="workstation")
    )
    simulator = Simulator(settings, agents=4, profile="seed", interval_s=1.0, clock=clock)
    start = clock.now()
    async with simulator:
        task = asyncio.create_task(simulator.run())
        await inbox.wait_heartbeats(1)
        for _ in range(7):  # to the end of the first round: 4 agents, 0.25 s apart
            await eventually(lambda: clock.sleepers > 0)
            await clock.advance(0.25)
        await inbox.wait_heartbeats(8)
        simulator.request_stop()
        await asyncio.wait_for(task, 10)
    await inbox.wait_goodbyes(4)
    beats = inbox.heartbeats
    offsets = sorted((b.sampled_at - start).total_seconds() for b in beats[:8])
    assert offsets == [0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75]
    first_round = {b.hostname: b.resource_metrics for b in beats[:4]}
    assert first_round["sim-seed-00000"].gpu_vram_available_gb == 8.0
    assert first_round["sim-seed-00000"].cpu_available_cores == 16
    assert first_round["sim-seed-00001"].gpu_vram_available_gb == 2.0
    assert first_round["sim-seed-00001"].cpu_available_cores == 4
    assert first_round["sim-seed-00002"].gpu_type == "none"
    assert first_round["sim-seed-00002"].cpu_available_cores == 8
    assert first_round["sim-seed-00003"].gpu_vram_available_gb == 8.0  # cycles
    assert {b.pool for b in beats} == {None}  # agent.pool is the real agent's, not theirs
    seqs = {}
    for beat in beats:
        seqs.setdefault(beat.agent_id, []).append(beat.seq)
    assert all(s[1] == s[0] + 1 for s in seqs.values())
