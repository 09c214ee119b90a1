"""Capacity API under load at 100k agents; prints JSON.

A fresh database (fleetpulse_bench_*) gets a realistic registry (most agents online, a few
GPU types, several pools); the API runs in its own process (uvicorn + uvloop) and wrk drives
each capacity query of the mix at 8 and 32 connections, beside a route of the same server
that returns a precomputed body of the same size (the framework's ceiling). Also measured:
each query's SQL time alone and the registry index's query and refresh costs. Every figure
is the median of ``--runs`` runs. The database is dropped at the end. Beside requests/s, each
wrk run records the API process's CPU time per request (from /proc): on a box shared with
other work, the ratio of those is steadier than the ratio of throughputs.

The registry is seeded once and then stands still, so a ``max_sample_age_s`` bound is
stretched by the time since seeding (the same agents match all along), and each query's
answer is fetched again right before its pair of wrk runs: the ceiling's body has the size
of the answer actually being served.

    python bench/capacity_api.py [--agents 100000] [--runs 3] [--duration 4]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import re
import shutil
import socket
import statistics
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import psycopg
from litestar import MediaType, Response, get

from _common import bench_database  # type: ignore[import-not-found]

# The SQL reference of the capacity query lives with the tests that check the index against
# it (tests/fixtures/capacity_reference.py): the repository root goes on the path for it.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ADMIN_URL = os.environ.get(
    "FLEETPULSE_BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
POOLS = [("render", 0.35), ("train", 0.25), ("infer", 0.2), ("cpu", 0.15), ("edge", 0.05)]
GPUS = [
    ("NVIDIA GeForce RTX 4090", 24.0, 0.4),
    ("NVIDIA L4", 24.0, 0.2),
    ("NVIDIA A100 80GB", 80.0, 0.08),
    (None, 0.0, 0.32),
]
QUERIES = {
    "common": {"min_gpu_vram_gb": 8, "limit": 20},
    "selective_type_pool_cores": {
        "gpu_type": "NVIDIA A100 80GB",
        "pool": "train",
        "min_cpu_cores": 48,
        "limit": 20,
    },
    "selective_multi_gpu_mem": {
        "min_gpu_vram_gb": 20,
        "min_gpu_count": 4,
        "min_mem_gb": 200,
        "limit": 20,
    },
    "selective_fresh_cpu": {
        "pool": "cpu",
        "min_cpu_cores": 60,
        "max_sample_age_s": 20,
        "limit": 20,
    },
    "no_match_vram": {"min_gpu_vram_gb": 500, "limit": 20},
    "no_match_cores_type": {"min_cpu_cores": 1000, "gpu_type": "NVIDIA L4", "limit": 20},
    # each condition matches thousands, together none: the index scans every online agent
    "no_match_combined": {"gpu_type": "NVIDIA A100 80GB", "pool": "cpu", "limit": 20},
}


def pick(rng: random.Random, weighted: list[Any]) -> Any:
    x = rng.random()
    for item in weighted:
        x -= item[-1]
        if x <= 0:
            return item
    return weighted[-1]


def seed(url: str, agents: int) -> None:
    rng = random.Random(42)
    now = datetime.now(UTC)
    columns = (
        "agent_id, hostname, pool_name, status, status_changed_at, first_seen_at,"
        " last_heartbeat_at, last_sampled_at, agent_version, work_state, cpu_cores,"
        " cpu_available_cores, cpu_load_1m, mem_total_gb, mem_available_gb, gpu_type, gpu_count,"
        " gpu_vram_total_gb, gpu_vram_available_gb, resource_metrics"
    )
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("ALTER TABLE agent_registry DISABLE TRIGGER USER")
        with conn.cursor() as cur, cur.copy(f"COPY agent_registry ({columns}) FROM STDIN") as copy:
            for n in range(agents):
                pool = pick(rng, POOLS)[0]
                name, total, _ = pick(rng, GPUS) if pool != "cpu" else (None, 0.0, 0)
                count = 0 if name is None else rng.choice([1, 1, 1, 2, 4, 8])
                gpus = [
                    {
                        "index": i,
                        "uuid": f"GPU-{n}-{i}",
                        "name": name,
                        "vram_total_gb": total,
                        "vram_free_gb": round(rng.uniform(0, total), 2),
                        "util_pct": 10.0,
                        "temp_c": 50.0,
                        "power_w": 100.0,
                        "error": "Xid 79" if rng.random() < 0.01 else None,
                    }
                    for i in range(count)
                ]
                cores = rng.choice([4, 8, 16, 32, 64])
                load = rng.uniform(0, cores)
                free = max(0, int(cores - load))
                mem_total = rng.choice([16.0, 32.0, 64.0, 128.0, 256.0])
                mem_free = round(rng.uniform(0.1, 0.9) * mem_total, 2)
                vram_free = max((g["vram_free_gb"] for g in gpus if not g["error"]), default=0.0)
                sampled = now - timedelta(seconds=rng.uniform(0, 60))
                metrics = {
                    "cpu_load_1m": load,
                    "cpu_load_5m": load,
                    "cpu_load_15m": load,
                    "cpu_cores": cores,
                    "cpu_available_cores": free,
                    "mem_total_gb": mem_total,
                    "mem_available_gb": mem_free,
                    "gpu_type": name or "none",
                    "gpu_count": count,
                    "gpu_vram_total_gb": total * count,
                    "gpu_vram_available_gb": vram_free,
                    "gpus": gpus,
                    "errors": [],
                }
                copy.write_row(
                    (
                        uuid.UUID(int=rng.getrandbits(128)),
                        f"ws-{n}",
                        pool,
                        "online" if rng.random() < 0.9 else "offline",
                        sampled,
                        sampled,
                        sampled,
                        sampled,
                        "0.1.0",
                        "idle",
                        cores,
                        free,
                        load,
                        mem_total,
                        mem_free,
                        name or "none",
                        count,
                        total * count,
                        vram_free,
                        json.dumps(metrics),
                    )
                )
        conn.execute("ALTER TABLE agent_registry ENABLE TRIGGER USER")
        conn.execute("ANALYZE agent_registry")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve(url: str, port: int) -> None:
    """The API process: the real app plus one route returning a precomputed body."""
    import uvicorn

    from fleetpulse.api import create_app
    from fleetpulse.config import ApiSettings, DatabaseSettings, Settings

    bodies: dict[int, bytes] = {}

    @get("/bench/precomputed", media_type=MediaType.JSON, include_in_schema=False)
    async def precomputed(size: int) -> Response[bytes]:
        body = bodies.get(size)
        if body is None:
            body = bodies[size] = b'"' + b"x" * max(0, size - 2) + b'"'
        return Response(body, media_type=MediaType.JSON)

    settings = Settings(
        database=DatabaseSettings(url=url, pool_min_size=2, pool_max_size=4),
        api=ApiSettings(host="127.0.0.1", port=port, metrics_refresh_interval_s=5.0),
    )
    app = create_app(settings)
    app.register(precomputed)
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=port,
        loop="uvloop",
        http="httptools",
        log_level="warning",
        access_log=False,
    )


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    assert m, text
    return float(m.group(1)) * _UNITS[m.group(2)]


def cpu_s(pid: int) -> float:
    """User + system CPU time of a process so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wrk(url: str, connections: int, duration: float, server_pid: int) -> dict[str, float]:
    before = cpu_s(server_pid)
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{int(duration)}s", "--latency", url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    cpu = cpu_s(server_pid) - before
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"\s50%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"\s99%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "rps": rps,
        "p50_ms": p50,
        "p99_ms": p99,
        "non_2xx": float(errors.group(1)) if errors else 0.0,
        # the server's CPU per request: steadier than rps when other processes share the CPUs
        "server_cpu_us_per_request": round(cpu / max(requests, 1) * 1e6, 1),
    }


async def sql_times(url: str, seeded_at: float, repeats: int = 15) -> dict[str, float]:
    from tests.fixtures.capacity_reference import sql_capacity

    result: dict[str, float] = {}
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        for name, q in QUERIES.items():
            times = []
            for _ in range(repeats):
                started = time.perf_counter()
                await sql_capacity(conn, now=datetime.now(UTC), **at_age(q, seeded_at))
                times.append((time.perf_counter() - started) * 1e3)
            result[name] = round(statistics.median(times), 3)
    return result


async def index_costs(url: str, seeded_at: float) -> dict[str, Any]:
    from fleetpulse import store

    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        started = time.perf_counter()
        rows = await store.fetch_registry(conn)
        fetch_s = time.perf_counter() - started
    index = store.RegistryIndex()
    started = time.perf_counter()
    index.apply(rows)
    build_s = time.perf_counter() - started
    query_ms: dict[str, float] = {}
    for name, q in QUERIES.items():
        f = store.CapacityFilter(**at_age(q, seeded_at))
        index.query(f)
        times = []
        for _ in range(50):
            t = time.perf_counter()
            index.query(f)
            times.append((time.perf_counter() - t) * 1e3)
        query_ms[name] = round(statistics.median(times), 3)
    # a refresh after 1 s of heartbeats from 100k agents at 30 s: ~3,300 changed rows
    changed = [
        store.AgentRecord(
            **{
                **{f: getattr(r, f) for f in r.__struct_fields__},
                "updated_at": r.updated_at + timedelta(seconds=1),
            }
        )
        for r in rows[: len(rows) // 30]
    ]
    started = time.perf_counter()
    index.apply(changed)
    index.query(store.CapacityFilter())  # includes re-sorting
    refresh_s = time.perf_counter() - started
    return {
        "full_load_fetch_s": round(fetch_s, 3),
        "full_load_build_s": round(build_s, 3),
        "query_ms": query_ms,
        "refresh_changed_rows": len(changed),
        "refresh_apply_and_resort_ms": round(refresh_s * 1e3, 1),
    }


def at_age(q: dict[str, Any], seeded_at: float) -> dict[str, Any]:
    """The query as if the registry's samples had kept their age since seeding."""
    if "max_sample_age_s" not in q:
        return q
    return {**q, "max_sample_age_s": round(q["max_sample_age_s"] + time.time() - seeded_at, 1)}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--agents", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--duration", type=int, default=4)
    parser.add_argument("--serve", nargs=2, metavar=("URL", "PORT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve[0], int(args.serve[1]))
        return 0
    if shutil.which("wrk") is None:
        print(json.dumps({"error": "wrk not found; apt-get install -y wrk"}))
        return 1

    databases = contextlib.ExitStack()
    url = databases.enter_context(bench_database(ADMIN_URL))
    server: subprocess.Popen[bytes] | None = None
    try:
        started = time.perf_counter()
        seeded_at = time.time()
        seed(url, args.agents)
        seed_s = time.perf_counter() - started
        port = free_port()
        server = subprocess.Popen(
            [sys.executable, __file__, "--serve", url, str(port)], stdout=subprocess.DEVNULL
        )
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                raise RuntimeError("API did not start")
            time.sleep(0.2)
        sizes: dict[str, list[int]] = {}
        counts: dict[str, list[int]] = {}
        runs: dict[str, dict[str, list[dict[str, float]]]] = {}
        for _ in range(args.runs):
            for qname, q in QUERIES.items():
                for c in (8, 32):
                    target = (
                        f"{base}/api/v1/agents/available-capacity?{urlencode(at_age(q, seeded_at))}"
                    )
                    body = httpx.get(target).content
                    sizes.setdefault(qname, []).append(len(body))
                    counts.setdefault(qname, []).append(json.loads(body)["count"])
                    api = wrk(target, c, args.duration, server.pid)
                    ceiling = wrk(
                        f"{base}/bench/precomputed?size={len(body)}", c, args.duration, server.pid
                    )
                    runs.setdefault(qname, {}).setdefault(f"api_c{c}", []).append(api)
                    runs[qname].setdefault(f"ceiling_c{c}", []).append(ceiling)

        def med(samples: list[dict[str, float]]) -> dict[str, float]:
            return {k: round(statistics.median(s[k] for s in samples), 3) for k in samples[0]}

        queries: dict[str, Any] = {}
        for qname in QUERIES:
            m = {k: med(v) for k, v in runs[qname].items()}
            queries[qname] = {
                "params": QUERIES[qname],
                "matches": sorted(set(counts[qname])),
                "response_bytes": sorted(set(sizes[qname])),
                **m,
                "throughput_vs_ceiling_c32": round(
                    m["api_c32"]["rps"] / m["ceiling_c32"]["rps"], 3
                ),
                "server_cpu_ceiling_vs_api_c32": round(
                    m["ceiling_c32"]["server_cpu_us_per_request"]
                    / m["api_c32"]["server_cpu_us_per_request"],
                    3,
                ),
                "throughput_vs_ceiling_c32_per_run": [
                    round(a["rps"] / b["rps"], 3)
                    for a, b in zip(runs[qname]["api_c32"], runs[qname]["ceiling_c32"], strict=True)
                ],
            }
        report = {
            "benchmark": "capacity_api",
            "agents": args.agents,
            "runs": args.runs,
            "duration_s_per_run": args.duration,
            "seed_s": round(seed_s, 1),
            "load_generator": "wrk -t1 (separate process)",
            "server": "uvicorn, uvloop, httptools (as fleetpulse api)",
            "loadavg_1m_at_end": round(os.getloadavg()[0], 2),
            "queries": queries,
            "sql_ms_median": asyncio.run(sql_times(url, seeded_at)),
            "registry_index": asyncio.run(index_costs(url, seeded_at)),
            "bar": {
                "p99_under_20ms_at_c8_all": all(
                    q["api_c8"]["p99_ms"] < 20 for q in queries.values()
                ),
                "throughput_c32_at_least_0.6x_ceiling_all": all(
                    q["throughput_vs_ceiling_c32"] >= 0.6 for q in queries.values()
                ),
            },
        }
        print(json.dumps(report, indent=2))
        return 0
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=20)
        databases.close()


if __name__ == "__main__":
    sys.exit(main())
