"""`fleetpulse up` end to end: real processes, real RabbitMQ and TimescaleDB.

A new user's first minute: the whole system comes up, the API and `fleetpulse status` show
the fleet (three simulated agents with the seed's profiles plus the real local agent),
capacity filters answer, an agent killed without a goodbye is marked offline by silence and
back online when it returns, and Ctrl-C stops everything cleanly.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

pytestmark = [pytest.mark.timeout(120), pytest.mark.slow(15)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_for(condition: Callable[[], Any], timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = condition()
        except httpx.HTTPError:
            last = None
        if last:
            return last
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


class Up:
    """A running `fleetpulse up` whose output is collected line by line."""

    def __init__(self, env: dict[str, str], args: list[str]) -> None:
        self.lines: list[str] = []
        self.process = subprocess.Popen(
            [sys.executable, "-m", "fleetpulse", "up", *args],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    def close(self) -> None:
        self._reader.join(10)
        if self.process.stdout is not None:
            self.process.stdout.close()

    def output(self) -> str:
        return "\n".join(self.lines)

    def pid_of(self, name: str) -> int:
        match = re.search(rf"started {name} \(pid (\d+)\)", self.output())
        assert match, self.output()
        return int(match.group(1))


@pytest.fixture
def up_env(db_url: str, amqp_url: str, tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        FLEETPULSE_DATABASE_URL=db_url,
        FLEETPULSE_AMQP_URL=amqp_url,
        FLEETPULSE_API_PORT=str(free_port()),
        FLEETPULSE_INGEST_METRICS_PORT=str(free_port()),
        FLEETPULSE_INGEST_OFFLINE_AFTER_S="1.5",
        FLEETPULSE_INGEST_OFFLINE_CHECK_INTERVAL_S="0.2",
        FLEETPULSE_API_CAPACITY_REFRESH_INTERVAL_S="0.2",
        FLEETPULSE_API_METRICS_REFRESH_INTERVAL_S="0.5",
        FLEETPULSE_AGENT_STATE_DIR=str(tmp_path / "agent-state"),
        FLEETPULSE_AGENT_POOL="workstation",
        FLEETPULSE_UP_LOG_DIR=str(tmp_path / "logs"),
        PYTHONUNBUFFERED="1",
    )
    return env


@pytest.fixture
def up(up_env: dict[str, str]) -> Iterator[Up]:
    running = Up(up_env, ["--agents", "3", "--interval", "0.5"])
    yield running
    if running.process.poll() is None:
        running.process.send_signal(signal.SIGINT)
        try:
            running.process.wait(30)
        except subprocess.TimeoutExpired:
            running.process.kill()
            running.process.wait()
    running.close()


@pytest.fixture
def api(up_env: dict[str, str]) -> Iterator[httpx.Client]:
    """One client for every request (httpx.get would build an SSL context per poll)."""
    with httpx.Client(base_url=f"http://127.0.0.1:{up_env['FLEETPULSE_API_PORT']}") as client:
        yield client


def test_up_runs_the_fleet_detects_silence_and_stops_cleanly(
    up: Up, up_env: dict[str, str], api: httpx.Client
) -> None:
    wait_for(lambda: "fleetpulse is up" in up.output(), 60, "fleetpulse is up")

    def online() -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = api.get("/api/v1/agents?status=online").json()["items"]
        return items if len(items) == 4 else []

    agents = wait_for(online, 30, "4 agents online")
    pools = sorted(a["pool_name"] for a in agents)
    assert "workstation" in pools  # the real local agent, with its declared pool

    # Capacity answers come from the API's in-process index, which trails the registry by
    # up to capacity_refresh_interval_s (0.2 s here).
    def full_capacity() -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = api.get("/api/v1/agents/available-capacity").json()["items"]
        return rows if len(rows) == 4 else []

    capacity = wait_for(full_capacity, 10, "4 agents in available capacity")
    assert len(capacity) == 4
    vram = [row["gpu_vram_available_gb"] for row in capacity]
    assert vram == sorted(vram, reverse=True)

    status = subprocess.run(
        [sys.executable, "-m", "fleetpulse", "status", "--api-url", str(api.base_url)],
        capture_output=True,
        text=True,
        timeout=30,
        env=up_env,
        check=False,
    )
    assert status.returncode == 0, status.stderr
    assert "workstation" in status.stdout

    # The real agent dies without a goodbye: silence marks it offline, then it is gone
    # from available capacity.
    real_agent = next(a for a in agents if a["pool_name"] == "workstation")
    os.killpg(up.pid_of("agent"), signal.SIGKILL)

    def offline() -> bool:
        row = api.get(f"/api/v1/agents/{real_agent['agent_id']}").json()
        return bool(row["status"] == "offline")

    wait_for(offline, 20, "the killed agent marked offline")
    events = api.get("/api/v1/events", params={"agent_id": real_agent["agent_id"]}).json()
    reasons = [e["reason"] for e in events["items"]]
    assert reasons[:1] == ["first_heartbeat"]
    assert "silence" in reasons
    wait_for(
        lambda: len(api.get("/api/v1/agents/available-capacity").json()["items"]) == 3,
        10,
        "capacity without the dead agent",
    )
    assert "agent exited with code -9; the rest keep running" in up.output()
    wait_for(lambda: "agents 3 online, 1 offline" in up.output(), 10, "the live summary line")

    # Ctrl-C: agents first (their goodbyes are still ingested), then the API, then ingest.
    api.close()  # no connection of ours kept open into the API's shutdown
    up.process.send_signal(signal.SIGINT)
    assert up.process.wait(60) == 0, up.output()
    assert re.search(r"stopped: simulate \(0\), agent \(-9\), api \(0\), ingest \(0\)", up.output())
    with psycopg.connect(up_env["FLEETPULSE_DATABASE_URL"]) as conn:
        rows = conn.execute(
            "SELECT DISTINCT ON (agent_id) r.pool_name, r.status, e.reason"
            " FROM agent_registry r JOIN agent_status_events e USING (agent_id)"
            " ORDER BY agent_id, e.id DESC"
        ).fetchall()
    last = {(pool == "workstation", status, reason) for pool, status, reason in rows}
    # The killed agent went silent; the simulated ones said goodbye.
    assert last == {(True, "offline", "silence"), (False, "offline", "shutdown")}
