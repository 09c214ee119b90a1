"""Two `fleetpulse api` processes, 50 claimers racing for the last slot: exactly one wins."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pytest

from tests.fixtures.api import GpuSeed, seed_agent

pytestmark = pytest.mark.slow(8)

CLAIMERS = 50


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def _api_processes(db_url: str, count: int) -> Iterator[list[str]]:
    """``count`` API processes on the same database; yields their base URLs once all serve."""
    procs: list[subprocess.Popen[bytes]] = []
    urls: list[str] = []
    try:
        for _ in range(count):
            port = _free_port()
            env = {
                **os.environ,
                "FLEETPULSE_DATABASE_URL": db_url,
                "FLEETPULSE_API_PORT": str(port),
                "FLEETPULSE_API_HOST": "127.0.0.1",
                "FLEETPULSE_DATABASE_POOL_MAX_SIZE": "8",
            }
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "fleetpulse", "api"],
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
            urls.append(f"http://127.0.0.1:{port}")
        deadline = time.monotonic() + 40
        with httpx.Client(timeout=1) as client:
            for proc, url in zip(procs, urls, strict=True):
                while True:
                    try:
                        if client.get(f"{url}/readyz").status_code == 200:
                            break
                    except httpx.HTTPError:
                        pass
                    assert proc.poll() is None, "API exited early"
                    assert time.monotonic() < deadline, "API did not become ready"
                    time.sleep(0.05)
        yield urls
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:  # pragma: no cover - a hung shutdown
                proc.kill()
                proc.wait()


def test_fifty_claimers_on_two_api_processes_get_exactly_one_slot(
    conn: psycopg.Connection[Any], db_url: str
) -> None:
    agent = seed_agent(conn, hostname="last-slot", gpus=(GpuSeed(24, 24),))
    seed_agent(conn, hostname="too-small", gpus=(GpuSeed(8, 8),))
    named = {"holder": "earlier", "ttl_s": 600, "agent_id": str(agent), "vram_gb": 12}
    with _api_processes(db_url, 2) as urls:
        first = httpx.post(f"{urls[0]}/api/v1/claims", json=named, timeout=10)
        assert first.status_code == 201, first.text  # 12 of 24 GiB left: one more 12 fits

        async def race() -> list[httpx.Response]:
            async with httpx.AsyncClient(timeout=30) as client:
                bodies = [
                    {"holder": f"racer-{n}", "ttl_s": 600, "agent_id": str(agent), "vram_gb": 12}
                    if n % 2
                    else {"holder": f"racer-{n}", "ttl_s": 600, "filter": {"min_gpu_vram_gb": 12}}
                    for n in range(CLAIMERS)
                ]
                return list(
                    await asyncio.gather(
                        *(
                            client.post(f"{urls[n % 2]}/api/v1/claims", json=body)
                            for n, body in enumerate(bodies)
                        )
                    )
                )

        answers = asyncio.run(race())
    codes = sorted(r.status_code for r in answers)
    assert codes == [201] + [409] * (CLAIMERS - 1), [
        r.text for r in answers if r.status_code >= 500
    ]
    winner = next(r.json() for r in answers if r.status_code == 201)
    assert winner["agent_id"] == str(agent)
    held = conn.execute(
        "SELECT sum((g->>'vram_gb')::float8), count(DISTINCT c.claim_id) FROM claims c,"
        " jsonb_array_elements(c.gpus) g WHERE c.ended_at IS NULL AND c.agent_id = %s",
        (agent,),
    ).fetchone()
    assert held == (24.0, 2)  # never more than the GPU has
    created = conn.execute(
        "SELECT count(*) FROM agent_status_events WHERE reason = 'claim_created'"
    ).fetchone()
    assert created == (2,)
