"""How fast each polars engine loads agent samples from TimescaleDB.

Seeds its own ``fleetpulse_bench_*`` database with ``ROWS`` agent_samples rows (one
INSERT ... SELECT over generate_series), loads them ``RUNS`` times with connectorx and
with ADBC (interleaved) through :func:`fleetpulse.analysis.load_agent_samples`, prints JSON with the
median and every run, and drops the database.

    python bench/polars_load.py [--rows 1000000] [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import uuid
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql

from fleetpulse import analysis, store

ADMIN_URL = os.environ.get(
    "FLEETPULSE_BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)

SEED = """
INSERT INTO agent_samples (agent_id, sampled_at, received_at, seq, hostname, pool_name,
    work_state, running_jobs, cpu_load_1m, cpu_load_5m, cpu_load_15m, cpu_cores,
    cpu_available_cores, mem_total_gb, mem_available_gb, gpu_type, gpu_count,
    gpu_vram_total_gb, gpu_vram_available_gb)
SELECT md5('agent' || a)::uuid,
       now() - make_interval(secs => s * 30),
       now() - make_interval(secs => s * 30) + interval '40 ms',
       s, 'ws-' || a, (ARRAY['render', 'train', 'cpu'])[1 + mod(a, 3)],
       CASE WHEN mod(a + s, 2) = 0 THEN 'busy' ELSE 'idle' END, mod(a + s, 3),
       mod(a + s, 17) * 0.9, mod(a + s, 13) * 0.8, mod(a + s, 11) * 0.7, 16,
       greatest(0, 16 - mod(a + s, 17)), 64, 64 - mod(a * 7 + s, 60),
       CASE WHEN mod(a, 3) = 2 THEN 'none' ELSE 'NVIDIA GeForce RTX 4090' END,
       CASE WHEN mod(a, 3) = 2 THEN 0 ELSE 1 END,
       CASE WHEN mod(a, 3) = 2 THEN 0 ELSE 24 END,
       CASE WHEN mod(a, 3) = 2 THEN 0 ELSE mod(a * 5 + s, 24) END
FROM generate_series(1, %(agents)s) AS a, generate_series(1, %(per_agent)s) AS s
"""


def with_database(url: str, name: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path=f"/{name}"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--agents", type=int, default=1000)
    args = parser.parse_args()
    name = f"fleetpulse_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = with_database(ADMIN_URL, name)
    try:
        store.upgrade(url)
        started = time.perf_counter()
        with psycopg.connect(url, autocommit=True) as conn:
            per_agent = -(-args.rows // args.agents)
            conn.execute(SEED, {"agents": args.agents, "per_agent": per_agent})
            conn.execute("VACUUM ANALYZE agent_samples")
            rows = conn.execute("SELECT count(*) FROM agent_samples").fetchone()
        seed_s = time.perf_counter() - started
        for engine in analysis.ENGINES:
            analysis.load_agent_samples(url, engine=engine)  # warm the cache and the driver
        # Rounds alternate which engine goes first, so load from elsewhere hits both alike.
        runs: dict[str, list[float]] = {engine: [] for engine in analysis.ENGINES}
        shapes: dict[str, tuple[int, int]] = {}
        for n in range(args.runs):
            order = analysis.ENGINES if n % 2 == 0 else tuple(reversed(analysis.ENGINES))
            for engine in order:
                t0 = time.perf_counter()
                frame = analysis.load_agent_samples(url, engine=engine)
                runs[engine].append(time.perf_counter() - t0)
                shapes[engine] = frame.shape
        results: dict[str, dict[str, object]] = {}
        for engine, times in runs.items():
            median = statistics.median(times)
            results[engine] = {
                "median_s": round(median, 3),
                "rows_per_s": round(shapes[engine][0] / median),
                "runs_s": [round(r, 3) for r in times],
                "rows": shapes[engine][0],
                "columns": shapes[engine][1],
            }
        fastest = min(results, key=lambda e: float(str(results[e]["median_s"])))
        print(
            json.dumps(
                {
                    "benchmark": "polars_load",
                    "rows": rows[0] if rows else 0,
                    "seed_s": round(seed_s, 2),
                    "engines": results,
                    "fastest": fastest,
                    "default_engine": analysis.DEFAULT_ENGINE,
                    "cpus": os.cpu_count(),
                },
                indent=2,
            )
        )
    finally:
        with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
