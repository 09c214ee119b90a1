"""examples/dispatch.py against the real API: it runs its jobs, and a 409 (the capacity it
chose taken meanwhile by another dispatcher) makes it ask again."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

import httpx
import pytest

from fleetpulse.api import create_app
from fleetpulse.client import Client
from tests.fixtures.api import GpuSeed, api_settings, live_server, seed_agent

pytestmark = pytest.mark.slow(3)

EXAMPLE = Path(__file__).parents[3] / "examples" / "dispatch.py"


def _example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("dispatch_example", EXAMPLE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def test_the_example_runs_its_jobs_and_releases(conn, db_url: str) -> None:
    seed_agent(conn, hostname="ws-big", gpus=(GpuSeed(24, 20),))
    seed_agent(conn, hostname="ws-small", gpus=(GpuSeed(8, 4),))
    async with live_server(create_app(api_settings(db_url))) as base:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, str(EXAMPLE), "--api-url", base, "--jobs", "2", "--run", "0.05",
            "--min-gpu-vram", "8",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={**os.environ, "FLEETPULSE_CONFIG": os.devnull},
        )  # fmt: skip
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        with Client(base) as api:
            left = await asyncio.to_thread(api.claims)
    assert proc.returncode == 0, err.decode()
    lines = out.decode().splitlines()
    assert lines[0] == "job 1: running on ws-big GPU 0 (8 GB held)"
    assert sum(line.startswith("job 2: done, released claim") for line in lines) == 1
    assert left.count == 0


class _Rival(httpx.HTTPTransport):
    """Right after the dispatcher's first capacity answer, another dispatcher claims what
    that answer offered, as if it had been a moment faster."""

    def __init__(self, base: str) -> None:
        super().__init__()
        self.base = base
        self.done = False
        self.seen: list[tuple[str, str, int]] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = super().handle_request(request)
        self.seen.append(
            (request.method, request.url.path.rsplit("/", 1)[-1], response.status_code)
        )
        if not self.done and request.url.path.endswith("/available-capacity"):
            self.done = True
            response.read()
            best = response.json()["items"][0]
            with Client(self.base) as rival:
                rival.claim(holder="rival", ttl_s=600, agent_id=best["agent_id"], vram_gb=20)
        return response


async def test_a_409_makes_the_dispatcher_ask_again(conn, db_url: str) -> None:
    seed_agent(conn, hostname="ws-big", gpus=(GpuSeed(24, 20),))
    seed_agent(conn, hostname="ws-next", gpus=(GpuSeed(24, 16),))
    example = _example()
    async with live_server(create_app(api_settings(db_url))) as base:
        rival = _Rival(base)

        def dispatch() -> str:
            with Client(base, transport=rival) as api:
                return example.run_job(
                    api, 1, holder="me", vram_gb=8, ttl_s=60, run_s=0.01, attempts=5
                )

        host = await asyncio.to_thread(dispatch)
        with Client(base) as api:
            held = await asyncio.to_thread(api.claims)
    assert host == "ws-next"
    assert [(c.holder, c.hostname) for c in held.items] == [("rival", "ws-big")]
    assert [(method, status) for method, _, status in rival.seen] == [
        ("GET", 200),  # capacity: ws-big first, then the rival takes it
        ("POST", 409),  # the claim on ws-big
        ("GET", 200),  # asked again: ws-next
        ("POST", 201),
        ("DELETE", 204),
    ]
