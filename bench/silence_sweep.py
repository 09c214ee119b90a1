"""Silence sweep statement time at 100k and 1M registered agents; prints JSON.

For each size: fill the registry (all online, heard within the last 30 s), then several
runs that make 1 % of the agents newly silent (their last heartbeat crossed
``offline_after_s`` within the last second) and time the detector's sweep as it runs every
second: the slice of heartbeats that crossed since the previous sweep, the UPDATE plus its
``silence`` events, committed. Also timed: the steady-state sweep that finds nobody, and
the full sweep a new leader runs (every heartbeat past the threshold, offline agents
included). Medians reported, plus the plan of the sweep.

    python bench/silence_sweep.py [--sizes 100000,1000000] [--runs 6]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from _common import bench_database, median
from fleetpulse import store
from fleetpulse.ingest.detector import SWEEP_OVERLAP_MIN_S
from fleetpulse.store.liveness import _SWEEP_SQL as SWEEP_SQL

FILL = """
INSERT INTO agent_registry (agent_id, hostname, pool_name, status, status_changed_at,
    first_seen_at, last_heartbeat_at, last_sampled_at, agent_version, cpu_cores,
    cpu_available_cores, gpu_type, gpu_count, gpu_vram_total_gb, gpu_vram_available_gb,
    resource_metrics)
SELECT gen_random_uuid(), 'ws-' || g, 'render', 'online', now(), now(),
       now() - random() * interval '30 seconds', now(), '0.1.0', 16, 14,
       'NVIDIA GeForce RTX 4090', 1, 24, (g %% 24)::float8, '{"cpu_cores": 16}'::jsonb
  FROM generate_series(1, %s) g
"""
AGE = """
UPDATE agent_registry SET last_heartbeat_at = now() - interval '90.5 seconds'
 WHERE agent_id IN (SELECT agent_id FROM agent_registry WHERE status = 'online'
                    ORDER BY random() LIMIT %s)
"""
REVIVE = """
UPDATE agent_registry SET status = 'online', status_changed_at = now(),
       last_heartbeat_at = now() - random() * interval '30 seconds'
 WHERE status = 'offline'
"""


OFFLINE_AFTER_S = 90.0


def since_for(swept_at: datetime) -> datetime:
    """What the detector passes one second after a sweep at ``swept_at``."""
    return swept_at - timedelta(seconds=OFFLINE_AFTER_S + SWEEP_OVERLAP_MIN_S)


async def sweep_ms(url: str, *, since: datetime | None) -> tuple[float, int]:
    conn = await store.connect(url)
    async with conn:
        await conn.execute("SELECT 1")
        started = time.perf_counter()
        marked = await store.sweep_silent(
            conn,
            now=datetime.now(UTC),
            offline_after_s=OFFLINE_AFTER_S,
            since=since,
            limit=1_000_000,
        )
        return (time.perf_counter() - started) * 1000, marked


async def explain(url: str) -> list[str]:
    conn = await store.connect(url, autocommit=False)
    async with conn:
        now = datetime.now(UTC)
        cur = await conn.execute(
            "EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) " + SWEEP_SQL,
            {
                "now": now,
                "cutoff": now - timedelta(seconds=OFFLINE_AFTER_S),
                "since": since_for(now - timedelta(seconds=1)),
            },
        )
        lines = [row[0] for row in await cur.fetchall()]
        await conn.rollback()
    return lines


def huge_pages_in_use() -> bool:
    """Whether some process (PostgreSQL's shared memory, on a box running only it) maps
    huge pages: /proc/meminfo counts them reserved or taken."""
    with open("/proc/meminfo") as f:
        info = dict(line.split(":", 1) for line in f)
    total, free = int(info["HugePages_Total"]), int(info["HugePages_Free"])
    return total - free + int(info["HugePages_Rsvd"]) > 0


def run_size(size: int, runs: int) -> dict[str, Any]:
    with bench_database() as url:
        started = time.perf_counter()
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(FILL, (size,))
            conn.execute("VACUUM ANALYZE agent_registry")
        fill_s = time.perf_counter() - started
        silent = size // 100
        marked_ms: list[float] = []
        idle_ms: list[float] = []
        full_ms: list[float] = []
        steady_ms: list[float] = []
        for run in range(runs):
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute(AGE, (silent,))
                conn.execute("VACUUM ANALYZE agent_registry")
            # the previous sweep ran a second ago: these heartbeats crossed since
            aged_at = datetime.now(UTC)
            full = run == runs - 1  # the last run: as a new leader would, everything
            since = None if full else since_for(aged_at - timedelta(seconds=1))
            elapsed, marked = asyncio.run(sweep_ms(url, since=since))
            assert marked == silent, (marked, silent)
            (full_ms if full else marked_ms).append(round(elapsed, 2))
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute("VACUUM agent_registry")  # autovacuum's job between sweeps
            for _ in range(3):
                now = datetime.now(UTC)
                elapsed, marked = asyncio.run(sweep_ms(url, since=since_for(now)))
                assert marked == 0
                idle_ms.append(round(elapsed, 3))
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute(REVIVE)
                conn.execute("VACUUM agent_registry")
            for _ in range(3):  # and once they are back: nobody in the slice
                elapsed, marked = asyncio.run(sweep_ms(url, since=since_for(datetime.now(UTC))))
                assert marked == 0
                steady_ms.append(round(elapsed, 3))
        with psycopg.connect(url, autocommit=True) as conn:
            events = conn.execute(
                "SELECT count(*) FROM agent_status_events WHERE reason = 'silence'"
            ).fetchone()
            size_row = conn.execute(
                "SELECT pg_size_pretty(pg_total_relation_size('agent_registry'))"
            ).fetchone()
            shared_buffers = conn.execute("SHOW shared_buffers").fetchone()
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(AGE, (silent,))
            conn.execute("VACUUM ANALYZE agent_registry")
        plan = asyncio.run(explain(url))
    return {
        "registry_rows": size,
        "shared_buffers": shared_buffers[0] if shared_buffers else None,
        "huge_pages_in_use": huge_pages_in_use(),
        "newly_silent_per_run": silent,
        "fill_s": round(fill_s, 1),
        "sweep_ms_runs": marked_ms,
        "median_sweep_ms": median(marked_ms),
        "full_sweep_ms": full_ms,
        # a sweep that finds nobody: in the seconds after a burst its slice still holds the
        # agents just marked (they are visited again, then skipped); then nobody
        "idle_sweep_after_burst_ms_runs": idle_ms,
        "median_idle_sweep_after_burst_ms": median(idle_ms),
        "idle_sweep_ms_runs": steady_ms,
        "median_idle_sweep_ms": median(steady_ms),
        "silence_events_written": events[0] if events else 0,
        "registry_size": size_row[0] if size_row else None,
        "plan": plan,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--runs", type=int, default=6, help="the last one is a full sweep")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    results = [run_size(size, args.runs) for size in sizes]
    print(json.dumps({"benchmark": "silence_sweep", "results": results}, indent=2))


if __name__ == "__main__":
    main()
