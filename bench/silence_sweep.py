"""Silence sweep statement time at 100k and 1M registered agents; prints JSON.

For each size: fill the registry (all online, heard within the last 30 s), then several
runs that age 1 % of the agents past ``offline_after_s`` and time one sweep (the UPDATE
plus its ``silence`` events, committed), and time the steady-state sweep that finds
nobody (what runs every second). Medians reported, plus the plan of the sweep, and the
floor: the same number of one-column changes by key in a narrow table, each logged.

    python bench/silence_sweep.py [--sizes 100000,1000000] [--runs 5]
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
UPDATE agent_registry SET last_heartbeat_at = now() - interval '200 seconds'
 WHERE agent_id IN (SELECT agent_id FROM agent_registry WHERE status = 'online'
                    ORDER BY random() LIMIT %s)
"""
REVIVE = """
UPDATE agent_registry SET status = 'online', status_changed_at = now(),
       last_heartbeat_at = now() - random() * interval '30 seconds'
 WHERE status = 'offline'
"""


async def sweep_ms(url: str, *, offline_after_s: float) -> tuple[float, int]:
    conn = await store.connect(url)
    async with conn:
        await conn.execute("SELECT 1")
        started = time.perf_counter()
        marked = await store.sweep_silent(
            conn, now=datetime.now(UTC), offline_after_s=offline_after_s
        )
        return (time.perf_counter() - started) * 1000, marked


async def explain(url: str) -> list[str]:
    conn = await store.connect(url, autocommit=False)
    async with conn:
        cur = await conn.execute(
            "EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) " + SWEEP_SQL,
            {
                "now": datetime.now(UTC),
                "cutoff": datetime.now(UTC) - timedelta(seconds=90),
                "limit": 100_000,
            },
        )
        lines = [row[0] for row in await cur.fetchall()]
        await conn.rollback()
    return lines


FLOOR_SETUP = """
CREATE TABLE floor_rows (id uuid PRIMARY KEY, state boolean NOT NULL);
INSERT INTO floor_rows SELECT gen_random_uuid(), false FROM generate_series(1, %s);
CREATE TABLE floor_log (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, row_id uuid NOT NULL);
"""
FLOOR_WRITE = """
WITH changed AS (UPDATE floor_rows SET state = NOT state WHERE id = ANY(%s) RETURNING id)
INSERT INTO floor_log (row_id) SELECT id FROM changed
"""


def write_floor_ms(url: str, size: int, changed: int, runs: int) -> list[float]:
    """What this box takes to flip one column of ``changed`` rows found by key in a narrow
    table of ``size`` rows and log one row each: a floor under any design that records a
    transition per agent, whatever its indexes."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(FLOOR_SETUP.replace("%s", str(int(size))))
        conn.execute("VACUUM ANALYZE floor_rows")
        timings: list[float] = []
        for _ in range(runs):
            picked = conn.execute(
                "SELECT array_agg(id)"
                " FROM (SELECT id FROM floor_rows ORDER BY random() LIMIT %s) p",
                (changed,),
            ).fetchone()
            ids = picked[0] if picked else []
            started = time.perf_counter()
            with conn.transaction():
                conn.execute(FLOOR_WRITE, (ids,))
            timings.append(round((time.perf_counter() - started) * 1000, 2))
            conn.execute("VACUUM floor_rows")
        conn.execute("DROP TABLE floor_rows, floor_log")
    return timings


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
        for _ in range(runs):
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute(AGE, (silent,))
                conn.execute("VACUUM ANALYZE agent_registry")
            elapsed, marked = asyncio.run(sweep_ms(url, offline_after_s=90))
            assert marked == silent, (marked, silent)
            marked_ms.append(round(elapsed, 2))
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute("VACUUM agent_registry")  # autovacuum's job between sweeps
            for _ in range(3):
                elapsed, marked = asyncio.run(sweep_ms(url, offline_after_s=90))
                assert marked == 0
                idle_ms.append(round(elapsed, 3))
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute(REVIVE)
        with psycopg.connect(url, autocommit=True) as conn:
            events = conn.execute(
                "SELECT count(*) FROM agent_status_events WHERE reason = 'silence'"
            ).fetchone()
            size_row = conn.execute(
                "SELECT pg_size_pretty(pg_total_relation_size('agent_registry'))"
            ).fetchone()
            shared_buffers = conn.execute("SHOW shared_buffers").fetchone()
        plan = asyncio.run(explain(url))
        floor_ms = write_floor_ms(url, size, silent, runs)
    return {
        "registry_rows": size,
        "shared_buffers": shared_buffers[0] if shared_buffers else None,
        "newly_silent_per_run": silent,
        "fill_s": round(fill_s, 1),
        "sweep_ms_runs": marked_ms,
        "median_sweep_ms": median(marked_ms),
        "idle_sweep_ms_runs": idle_ms,
        "median_idle_sweep_ms": median(idle_ms),
        "silence_events_written": events[0] if events else 0,
        "floor_ms_runs": floor_ms,
        "median_floor_ms": median(floor_ms),
        "registry_size": size_row[0] if size_row else None,
        "idle_plan": plan,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    results = [run_size(size, args.runs) for size in sizes]
    print(json.dumps({"benchmark": "silence_sweep", "results": results}, indent=2))


if __name__ == "__main__":
    main()
