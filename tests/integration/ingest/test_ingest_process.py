"""`fleetpulse ingest` as a process: it stores and serves metrics, waits for an absent
database, stops cleanly on SIGTERM, and a survivor takes over the detector when it dies."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from fleetpulse.agent import FakeClock
from fleetpulse.ingest import IngestMetrics, SilenceDetector
from fleetpulse.messages import INGEST_QUEUE
from tests.fixtures.ingest import (
    T0,
    heartbeat,
    instant_sleep,
    publish,
    scalar,
    settings_for,
    wait_for_queue,
    wait_until,
)
from tests.fixtures.logs import json_log_lines

pytestmark = pytest.mark.slow(7)


def status(db_url: str, agent: uuid.UUID) -> str:
    return str(scalar(db_url, "SELECT status FROM agent_registry WHERE agent_id = %s", agent))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ingest_process(db_url: str, amqp_url: str, port: int, log: Any) -> subprocess.Popen[bytes]:
    env = dict(
        os.environ,
        FLEETPULSE_DATABASE_URL=db_url,
        FLEETPULSE_AMQP_URL=amqp_url,
        FLEETPULSE_INGEST_METRICS_PORT=str(port),
        FLEETPULSE_INGEST_OFFLINE_CHECK_INTERVAL_S="0.05",
        FLEETPULSE_INGEST_BATCH_MAX_AGE_S="0.01",
        FLEETPULSE_LOG_FORMAT="json",
    )
    return subprocess.Popen(
        [sys.executable, "-m", "fleetpulse", "ingest"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    """One client for all metric polls (a client per poll builds an SSL context each time)."""
    async with httpx.AsyncClient(timeout=2) as client:
        yield client


async def _metric(http: httpx.AsyncClient, port: int, name: str) -> float | None:
    try:
        text = (await http.get(f"http://127.0.0.1:{port}/metrics")).text
    except httpx.HTTPError:
        return None
    for line in text.splitlines():
        if line.startswith((name + " ", name + "{")):
            return float(line.rsplit(" ", 1)[1])
    return None


async def test_cli_ingest_stores_serves_metrics_and_stops_cleanly_on_sigterm(
    db_url: str, amqp_url: str, tmp_path: Path, http: httpx.AsyncClient
) -> None:
    port = _free_port()
    log = tmp_path / "ingest.log"
    with log.open("wb") as sink:
        proc = _ingest_process(db_url, amqp_url, port, sink)
    try:
        await wait_until(
            lambda: _metric(http, port, "fleetpulse_detector_leader"), timeout_s=20, what="metrics"
        )
        await wait_for_queue(amqp_url, INGEST_QUEUE)
        agent = uuid.uuid4()
        await publish(amqp_url, [heartbeat(agent, s) for s in range(1, 4)])
        await publish(amqp_url, [b"not a heartbeat"])
        await wait_until(
            lambda: scalar(db_url, "SELECT count(*) FROM agent_samples") == 3, timeout_s=10
        )
        stored = await _metric(http, port, 'fleetpulse_ingest_messages_total{result="stored"}')
        assert stored == 3
        assert await _metric(http, port, "fleetpulse_detector_leader") == 1
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(proc.wait, 15)
        output = log.read_text()
        assert code == 0, output
        logged = json_log_lines(output)
        assert any("draining" in r["message"] for r in logged)
        [rejected] = [r for r in logged if r["message"].startswith("message rejected")]
        assert (rejected["level"], rejected["logger"]) == ("WARNING", "fleetpulse.ingest.worker")
        assert rejected["reason"]
        assert rejected["routing_key"]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


async def test_detector_failover_when_leader_process_dies(
    db_url: str, amqp_url: str, clock: FakeClock, http: httpx.AsyncClient
) -> None:
    """A real ingest process holds the lock; SIGKILL it and the survivor takes over."""
    port = _free_port()
    proc = _ingest_process(db_url, amqp_url, port, subprocess.DEVNULL)
    settings = settings_for(db_url, amqp_url, offline_check_interval_s=0.05, offline_after_s=5)
    metrics = IngestMetrics()
    try:
        await wait_until(
            lambda: _metric(http, port, "fleetpulse_detector_leader"), timeout_s=20, what="leader"
        )
        assert await _metric(http, port, "fleetpulse_detector_leader") == 1
        async with SilenceDetector(
            settings, metrics=metrics, clock=clock, sleep=instant_sleep
        ) as survivor:
            await wait_until(lambda: survivor._lease is not None)
            await asyncio.sleep(0.2)
            assert survivor.is_leader is False
            assert survivor.runs == 0
            await wait_for_queue(amqp_url, INGEST_QUEUE)
            agent = uuid.uuid4()
            await publish(amqp_url, [heartbeat(agent, 1, sampled_at=T0)])
            await wait_until(lambda: scalar(db_url, "SELECT count(*) FROM agent_registry") == 1)
            proc.kill()
            await asyncio.to_thread(proc.wait, 10)
            await wait_until(lambda: survivor.is_leader, timeout_s=10, what="failover")
            heard = scalar(db_url, "SELECT last_heartbeat_at FROM agent_registry")
            clock.advance_nowait((heard + timedelta(seconds=6) - clock.now()).total_seconds())
            await wait_until(lambda: survivor.transitions == 1)
            assert metrics.detector_leader._value.get() == 1
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert status(db_url, agent) == "offline"


async def test_cli_ingest_waits_for_an_absent_database_and_still_stops_on_sigterm(
    db_url: str, amqp_url: str, tmp_path: Path
) -> None:
    absent = db_url.rsplit("/", 1)[0] + "/fleetpulse_absent_" + uuid.uuid4().hex[:8]
    log = tmp_path / "ingest.log"
    with log.open("wb") as sink:
        proc = _ingest_process(absent, amqp_url, _free_port(), sink)
    try:
        await wait_until(
            lambda: "waits for the database" in log.read_text(), timeout_s=20, what="retry log"
        )
        assert proc.poll() is None  # retrying, not crashed
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 15) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
