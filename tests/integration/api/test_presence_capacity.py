"""Offered/withheld and GPU health end to end: heartbeats through the real broker and ingest
into TimescaleDB, then the API: available-capacity leaves out withheld machines and degraded
GPUs (unless asked), the agent row says why, and the change is on the events stream."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import msgspec
import pytest

from fleetpulse.api import create_app
from fleetpulse.messages import Heartbeat, Presence
from tests.fixtures.api import api_settings, live_server
from tests.fixtures.ingest import (
    FakeClock,
    gpu,
    heartbeat,
    publish,
    resources,
    running_ingest,
    settings_for,
    wait_until,
)

pytestmark = [pytest.mark.slow(6), pytest.mark.timeout(60)]

WITHHELD = Presence(
    user_idle_s=2.0, locked=False, source="logind", offered=False, withheld_reason="user_active"
)
IDLE = Presence(user_idle_s=3600.0, locked=True, source="logind")


def beat(agent: uuid.UUID, seq: int, presence: Presence | None, *, health: str = "ok") -> Heartbeat:
    card = gpu(0, total=24.0, free=20.0, name="RTX", health=health)
    metrics = resources(gpus=[card])
    if health != "ok":  # as the agent sums it up: a degraded GPU is not in the summary
        metrics = msgspec.structs.replace(
            metrics, gpu_type="none", gpu_count=0, gpu_vram_total_gb=0.0, gpu_vram_available_gb=0.0
        )
    return msgspec.structs.replace(
        heartbeat(agent, seq, metrics=metrics, hostname=f"ws-{str(agent)[:4]}"), presence=presence
    )


async def read_events(lines: AsyncIterator[str], want: int, timeout_s: float) -> list[Any]:
    found: list[Any] = []

    async def reader() -> None:
        data: dict[str, Any] = {}
        kind = ""
        async for line in lines:
            if line.startswith("event:"):
                kind = line[6:].strip()
            elif line.startswith("data:"):
                data = {**json.loads(line[5:]), "sse_event": kind}
            elif line == "" and data:
                found.append(data)
                data = {}
                if len(found) >= want:
                    return

    await asyncio.wait_for(reader(), timeout_s)
    return found


async def test_withheld_machines_and_degraded_gpus_are_not_capacity(
    db_url: str, amqp_url: str
) -> None:
    offered, withheld, sick = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    settings = settings_for(db_url, amqp_url)
    clock = FakeClock()  # ingest's receive times; the beats are sampled at T0 + seq
    async with running_ingest(settings, clock=clock) as (_, rec, _d):
        await publish(
            amqp_url,
            [
                beat(offered, 1, IDLE),
                beat(withheld, 1, WITHHELD),
                beat(sick, 1, None, health="degraded"),
            ],
        )
        await wait_until(lambda: rec.heartbeats == 3)
        app = create_app(api_settings(db_url, capacity_refresh_interval_s=0.0))
        async with live_server(app) as base, httpx.AsyncClient(base_url=base, timeout=10) as client:
            capacity = "/api/v1/agents/available-capacity"
            found = (await client.get(capacity, params={"min_gpu_vram_gb": 1})).json()
            assert [row["agent_id"] for row in found["items"]] == [str(offered)]
            with_sick = await client.get(
                capacity, params={"min_gpu_vram_gb": 1, "include_degraded": "true"}
            )
            assert {row["agent_id"] for row in with_sick.json()["items"]} == {
                str(offered),
                str(sick),
            }
            bad = await client.get(capacity, params={"include_degraded": "maybe"})
            assert bad.status_code == 400
            assert "include_degraded" in bad.json()["detail"]
            row = (await client.get(f"/api/v1/agents/{withheld}")).json()
            assert (row["offered"], row["withheld_reason"]) == (False, "user_active")
            assert row["presence"] == {"user_idle_s": 2.0, "locked": False, "source": "logind"}
            assert (await client.get(f"/api/v1/agents/{sick}")).json()["gpus"][0]["health"] == (
                "degraded"
            )
            listed = (await client.get("/api/v1/events", params={"agent_id": str(withheld)})).json()
            assert [e["reason"] for e in listed["items"]][-1] == "withheld"

            async with client.stream("GET", "/api/v1/events/stream") as response:
                lines_open = response.aiter_lines()
                async for line in lines_open:
                    if line.startswith(":"):
                        break
                # Received later than the first beats, as time goes on: an agent that sends
                # no incarnation is ordered by its sample time bounded by the receive time.
                clock.advance_nowait(5.0)
                await publish(amqp_url, [beat(withheld, 2, IDLE)])  # the owner walked away
                await wait_until(lambda: rec.heartbeats == 4)
                (event,) = await read_events(lines_open, 1, timeout_s=10)
            assert (event["agent_id"], event["reason"], event["sse_event"]) == (
                str(withheld),
                "offered",
                "offer",
            )

            async def offered_now() -> bool:
                body = (await client.get(capacity, params={"min_gpu_vram_gb": 1})).json()
                return str(withheld) in {r["agent_id"] for r in body["items"]}

            await wait_until(offered_now, timeout_s=10)
