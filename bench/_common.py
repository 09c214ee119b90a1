"""Shared set-up for benchmarks: a throw-away database and RabbitMQ vhost, heartbeat bodies."""

from __future__ import annotations

import os
import statistics
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from urllib.parse import quote, urlsplit, urlunsplit

import httpx
import psycopg
from psycopg import sql

from fleetpulse import store
from fleetpulse.messages import GpuMetrics, Heartbeat, ResourceMetrics, encode, routing_key

DB_ADMIN_URL = os.environ.get(
    "FLEETPULSE_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
AMQP_URL = os.environ.get("FLEETPULSE_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
MANAGEMENT_URL = os.environ.get(
    "FLEETPULSE_TEST_AMQP_MANAGEMENT_URL", "http://guest:guest@127.0.0.1:15672"
)


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


@contextmanager
def bench_database(admin_url: str = DB_ADMIN_URL) -> Iterator[str]:
    """A fresh, migrated database on the server of ``admin_url``, dropped afterwards."""
    name = f"fleetpulse_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = urlunsplit(urlsplit(admin_url)._replace(path=f"/{name}"))
    try:
        store.upgrade(url)
        yield url
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


@contextmanager
def bench_vhost() -> Iterator[str]:
    vhost = f"fleetpulse_bench_{uuid.uuid4().hex[:8]}"
    parts = urlsplit(MANAGEMENT_URL)
    base = urlunsplit(parts._replace(netloc=f"{parts.hostname}:{parts.port}"))
    auth = (parts.username or "guest", parts.password or "guest")
    user = urlsplit(AMQP_URL).username or "guest"
    with httpx.Client(base_url=base, auth=auth, timeout=30) as client:
        client.put(f"/api/vhosts/{quote(vhost, safe='')}").raise_for_status()
        client.put(
            f"/api/permissions/{quote(vhost, safe='')}/{user}",
            json={"configure": ".*", "write": ".*", "read": ".*"},
        ).raise_for_status()
        try:
            amqp = urlsplit(AMQP_URL)
            yield urlunsplit(amqp._replace(path=f"/{quote(vhost, safe='')}"))
        finally:
            client.delete(f"/api/vhosts/{quote(vhost, safe='')}")


def fleet(agents: int) -> list[uuid.UUID]:
    return [uuid.UUID(int=i + 1, version=4) for i in range(agents)]


METRICS = ResourceMetrics(
    cpu_load_1m=1.2,
    cpu_load_5m=0.9,
    cpu_load_15m=0.7,
    cpu_cores=16,
    cpu_available_cores=14,
    mem_total_gb=64.0,
    mem_available_gb=40.2,
    gpu_type="NVIDIA GeForce RTX 4090",
    gpu_count=1,
    gpu_vram_total_gb=24.0,
    gpu_vram_available_gb=20.5,
    gpus=[
        GpuMetrics(
            index=0,
            uuid="GPU-0",
            name="NVIDIA GeForce RTX 4090",
            vram_total_gb=24.0,
            vram_free_gb=20.5,
            util_pct=3.0,
            temp_c=41.0,
            power_w=31.5,
        )
    ],
)


def heartbeat_body(agent: uuid.UUID, seq: int, sampled_at: datetime) -> tuple[str, bytes]:
    message = Heartbeat(
        schema_version=1,
        agent_id=agent,
        seq=seq,
        sampled_at=sampled_at,
        sent_at=sampled_at,
        hostname=f"ws-{agent.int % 100000}",
        pool="render",
        agent_version="0.1.0",
        resource_metrics=METRICS,
    )
    return routing_key(message.pool, agent), encode(message)


def stream(agents: list[uuid.UUID], total: int, start: datetime) -> Iterator[tuple[str, bytes]]:
    """``total`` heartbeats round-robin over the fleet, 30 s apart per agent."""
    for n in range(total):
        agent = agents[n % len(agents)]
        rnd = n // len(agents)
        yield heartbeat_body(agent, rnd + 1, start + timedelta(seconds=30 * rnd))


def now() -> datetime:
    return datetime.now(UTC)
