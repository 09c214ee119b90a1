"""History buckets and status events: listed, and pushed as Server-Sent Events."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from fleetpulse.api import create_app
from tests.fixtures.api import GpuSeed, api_settings, insert_event, live_server, seed_agent


async def test_history_buckets_aggregate_samples(conn, client_for) -> None:
    end = datetime(2026, 11, 24, 4, 0, tzinfo=UTC)
    agent = seed_agent(
        conn,
        gpus=(GpuSeed(24, 10),),
        sampled_at=end,
        samples=4,
        sample_interval_s=30,
        cpu_load_1m=2.0,
    )
    # a second sample set in the same minute with other numbers, to see avg/min/max
    conn.execute(
        "UPDATE agent_samples SET cpu_load_1m = 6.0, cpu_available_cores = 10"
        " WHERE agent_id = %s AND sampled_at = %s",
        (agent, end - timedelta(seconds=30)),
    )
    conn.execute(
        "UPDATE gpu_samples SET vram_free_gb = 4.0 WHERE agent_id = %s AND sampled_at = %s",
        (agent, end - timedelta(seconds=30)),
    )
    params = {
        "since": (end - timedelta(minutes=5)).isoformat(),
        "until": (end + timedelta(seconds=1)).isoformat(),
        "bucket": "1m",
    }
    async with client_for() as client:
        body = (await client.get(f"/api/v1/agents/{agent}/metrics", params=params)).json()
    assert body["bucket_s"] == 60
    by_time = {p["bucket"]: p for p in body["points"]}
    minute = by_time["2026-11-24T03:59:00Z"]  # samples at 03:59:00 and 03:59:30
    assert minute["samples"] == 2
    assert minute["cpu_load_1m"] == {"avg": 4.0, "min": 2.0, "max": 6.0}
    assert minute["cpu_available_cores"]["min"] == 10
    assert minute["gpus"][0]["vram_free_gb"] == {"avg": 7.0, "min": 4.0, "max": 10.0}
    assert sum(p["samples"] for p in body["points"]) == 4


async def test_history_rejects_reversed_oversized_and_unknown(conn, client_for) -> None:
    agent = seed_agent(conn)
    now = datetime.now(UTC)
    url = f"/api/v1/agents/{agent}/metrics"
    async with client_for(history_max_points=100) as client:
        reversed_ = await client.get(
            url, params={"since": now.isoformat(), "until": (now - timedelta(hours=1)).isoformat()}
        )
        too_long = await client.get(url, params={"since": (now - timedelta(days=90)).isoformat()})
        too_many = await client.get(url, params={"bucket": "1s"})
        bad_bucket = await client.get(url, params={"bucket": "5 minutes"})
        unknown = await client.get(f"/api/v1/agents/{uuid.uuid4()}/metrics")
        default = await client.get(url)
    assert reversed_.status_code == 400
    assert "since" in reversed_.json()["detail"]
    assert too_long.status_code == 400
    assert "range" in too_long.json()["detail"]
    assert too_many.status_code == 400
    assert "bucket" in too_many.json()["detail"]
    assert bad_bucket.status_code == 400
    assert "bucket" in bad_bucket.json()["detail"]
    assert unknown.status_code == 404
    assert default.status_code == 200
    assert default.json()["bucket_s"] == 60  # an hour in at most 100 buckets


async def test_events_filtered_by_agent_and_time(conn, client_for) -> None:
    t0 = datetime(2026, 11, 24, tzinfo=UTC)
    a = seed_agent(conn, hostname="a", first_seen_at=t0, events=False)
    b = seed_agent(conn, hostname="b", first_seen_at=t0, events=False)
    insert_event(conn, a, at=t0, from_status=None, to_status="online", reason="first_heartbeat")
    insert_event(conn, b, at=t0, from_status=None, to_status="online", reason="first_heartbeat")
    insert_event(
        conn,
        a,
        at=t0 + timedelta(minutes=5),
        from_status="online",
        to_status="offline",
        reason="silence",
    )
    async with client_for() as client:
        of_a = (await client.get("/api/v1/events", params={"agent_id": str(a)})).json()
        later = (
            await client.get(
                "/api/v1/events", params={"since": (t0 + timedelta(minutes=1)).isoformat()}
            )
        ).json()
        after = (await client.get("/api/v1/events", params={"after_id": 2})).json()
        empty = (
            await client.get(
                "/api/v1/events",
                params={"since": "2026-11-24T01:00:00Z", "until": "2026-11-24T00:00:00Z"},
            )
        ).json()
    assert [e["reason"] for e in of_a["items"]] == ["first_heartbeat", "silence"]
    assert [(e["hostname"], e["to_status"]) for e in later["items"]] == [("a", "offline")]
    assert [e["id"] for e in after["items"]] == [3]
    assert empty["count"] == 0


async def _read_events(
    lines: AsyncIterator[str], want: int, timeout_s: float
) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    current: dict[str, Any] = {}

    async def reader() -> None:
        async for line in lines:
            if line.startswith("id: "):
                current["id"] = int(line[4:])
            elif line.startswith("data: "):
                current["data"] = json.loads(line[6:])
            elif line == "" and "data" in current:
                found.append(dict(current))
                current.clear()
                if len(found) >= want:
                    return

    await asyncio.wait_for(reader(), timeout_s)
    return found


async def test_sse_pushes_a_transition_within_a_second_and_resumes(conn, db_url: str) -> None:
    agent = seed_agent(conn, hostname="watched")
    first_id = conn.execute("SELECT max(id) FROM agent_status_events").fetchone()[0]
    app = create_app(api_settings(db_url, registry_poll_interval_s=30.0))
    async with live_server(app) as base, httpx.AsyncClient(base_url=base, timeout=10) as client:
        async with client.stream("GET", "/api/v1/events/stream") as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            lines = response.aiter_lines()
            # the stream is open once its greeting comment arrives
            async for line in lines:
                if line.startswith(":"):
                    break
            loop = asyncio.get_running_loop()
            started = loop.time()
            offline_id = insert_event(
                conn,
                agent,
                at=datetime.now(UTC),
                from_status="online",
                to_status="offline",
                reason="silence",
            )
            (event,) = await _read_events(lines, 1, timeout_s=1.0)
            assert loop.time() - started < 1.0
        assert event["id"] == offline_id
        assert event["data"]["to_status"] == "offline"
        assert event["data"]["agent_id"] == str(agent)
        back_id = insert_event(
            conn,
            agent,
            at=datetime.now(UTC),
            from_status="offline",
            to_status="online",
            reason="heartbeat",
        )
        headers = {"Last-Event-ID": str(first_id)}
        async with client.stream("GET", "/api/v1/events/stream", headers=headers) as response:
            resumed = await _read_events(response.aiter_lines(), 2, timeout_s=5.0)
        assert [e["id"] for e in resumed] == [offline_id, back_id]
        bad = await client.get("/api/v1/events/stream", headers={"Last-Event-ID": "yesterday"})
        assert bad.status_code == 400
        assert "Last-Event-ID" in bad.json()["detail"]
