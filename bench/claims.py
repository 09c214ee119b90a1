"""Claims under load at 100k agents with 10k active claims; prints JSON.

A fresh database (fleetpulse_bench_*) gets the registry of ``capacity_api.py`` (100k agents,
most online, a few GPU types, several pools) and ``--claims`` active claims spread over
online GPU agents (one GPU each, a few GiB, a core, an hour to live). The API runs in its
own process as ``fleetpulse api`` would (uvicorn, uvloop, httptools, default pool size).
Each run measures, with wrk at ``--connections`` connections on the same server:

- ``capacity``: the plain capacity query (``min_gpu_vram_gb=8&limit=20``) with the claims
  in place, so its answers are claimable figures;
- ``claims``: ``POST /api/v1/claims`` by filter (``{"min_gpu_vram_gb": 8}``, 8 GiB on one
  GPU, ``ttl_s`` 10, so the bench's own claims reach a steady state instead of filling the
  fleet): claims per second (201 answers), p50/p99 latency, 409s.

Every figure is the median over ``--runs`` runs; the database is dropped at the end.

    python bench/claims.py [--agents 100000] [--claims 10000] [--runs 3] [--duration 5]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import psycopg

from _common import bench_database  # type: ignore[import-not-found]
from capacity_api import ADMIN_URL, cpu_s, free_port, seed  # type: ignore[import-not-found]

CAPACITY_QUERY = "min_gpu_vram_gb=8&limit=20"
CLAIM_BODY = {"holder": "bench", "ttl_s": 10, "filter": {"min_gpu_vram_gb": 8}}
_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def seed_claims(url: str, claims: int) -> int:
    """``claims`` active claims on random online GPU agents (one GPU, 2 GiB, one core)."""
    rng = random.Random(7)
    now = datetime.now(UTC)
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT agent_id, resource_metrics->'gpus' FROM agent_registry"
            " WHERE status = 'online' AND gpu_count > 0"
        ).fetchall()
        picked = [rng.choice(rows) for _ in range(claims)]
        with (
            conn.cursor() as cur,
            cur.copy(
                "COPY claims (claim_id, agent_id, holder, gpus, cpu_cores, mem_gb, created_at,"
                " expires_at) FROM STDIN"
            ) as copy,
        ):
            for n, (agent, gpus) in enumerate(picked):
                g = rng.choice(gpus)
                held = [{"index": g["index"], "uuid": g["uuid"], "vram_gb": 2.0}]
                copy.write_row(
                    (
                        uuid.uuid4(),
                        agent,
                        f"seeded-{n % 50}",
                        json.dumps(held),
                        1,
                        1.0,
                        now,
                        now + timedelta(hours=1),
                    )
                )
        conn.execute("ANALYZE claims")
    return len({a for a, _ in picked})


def serve(url: str, port: int) -> None:
    from fleetpulse.api.server import run_api
    from fleetpulse.config import ApiSettings, DatabaseSettings, Settings

    settings = Settings(
        database=DatabaseSettings(url=url),
        api=ApiSettings(host="127.0.0.1", port=port),
    )
    run_api(settings)


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    assert m, text
    return float(m.group(1)) * _UNITS[m.group(2)]


def wrk(
    url: str, connections: int, duration: int, server_pid: int, script: str | None = None
) -> dict[str, float]:
    before = cpu_s(server_pid)
    command = ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency"]
    if script is not None:
        command += ["-s", script]
    out = subprocess.run([*command, url], capture_output=True, text=True, check=True).stdout
    cpu = cpu_s(server_pid) - before
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    seconds = _ms(re.search(r"requests in ([\d.]+m?s)", out).group(1)) / 1e3  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    non_2xx = int(errors.group(1)) if errors else 0
    return {
        "requests_per_s": round(requests / seconds, 1),
        "ok_per_s": round((requests - non_2xx) / seconds, 1),
        "p50_ms": _ms(re.search(r"\s50%\s+(\S+)", out).group(1)),  # type: ignore[union-attr]
        "p99_ms": _ms(re.search(r"\s99%\s+(\S+)", out).group(1)),  # type: ignore[union-attr]
        "non_2xx": float(non_2xx),
        "server_cpu_us_per_request": round(cpu / max(requests, 1) * 1e6, 1),
    }


def claim_script() -> str:
    body = json.dumps(CLAIM_BODY)
    handle, path = tempfile.mkstemp(suffix=".lua", prefix="fleetpulse_claims_")
    with os.fdopen(handle, "w") as f:
        f.write(
            'wrk.method = "POST"\n'
            f"wrk.body = '{body}'\n"
            'wrk.headers["Content-Type"] = "application/json"\n'
        )
    return path


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--agents", type=int, default=100_000)
    parser.add_argument("--claims", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("--connections", type=int, default=8)
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
    script = claim_script()
    try:
        started = time.perf_counter()
        seed(url, args.agents)
        held_agents = seed_claims(url, args.claims)
        seed_s = time.perf_counter() - started
        port = free_port()
        server = subprocess.Popen(
            [sys.executable, __file__, "--serve", url, str(port)], stdout=subprocess.DEVNULL
        )
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 180
        while True:
            try:
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                raise RuntimeError("API did not start")
            time.sleep(0.2)
        capacity_url = f"{base}/api/v1/agents/available-capacity?{CAPACITY_QUERY}"
        held_rows = sum(
            "vram_held_gb" in json.dumps(row)
            for row in httpx.get(capacity_url, timeout=30).json()["items"]
        )
        runs: dict[str, list[dict[str, float]]] = {"capacity": [], "claims": []}
        c = args.connections
        for _ in range(args.runs):
            runs["capacity"].append(wrk(capacity_url, c, args.duration, server.pid))
            runs["claims"].append(
                wrk(f"{base}/api/v1/claims", c, args.duration, server.pid, script)
            )
        active = httpx.get(f"{base}/api/v1/claims", params={"limit": 1}, timeout=30)
        active.raise_for_status()

        def med(samples: list[dict[str, float]]) -> dict[str, float]:
            return {k: round(statistics.median(s[k] for s in samples), 3) for k in samples[0]}

        claims, capacity = med(runs["claims"]), med(runs["capacity"])
        report = {
            "benchmark": "claims",
            "agents": args.agents,
            "seeded_active_claims": args.claims,
            "seeded_claims_on_agents": held_agents,
            "runs": args.runs,
            "duration_s_per_run": args.duration,
            "connections": c,
            "seed_s": round(seed_s, 1),
            "load_generator": "wrk -t1 (separate process)",
            "server": "fleetpulse api (uvicorn, uvloop, httptools), default settings",
            "claim_body": CLAIM_BODY,
            "capacity_query": CAPACITY_QUERY,
            "capacity_rows_with_claims_first_answer": held_rows,
            "loadavg_1m_at_end": round(os.getloadavg()[0], 2),
            "capacity": capacity,
            "claims": claims,
            "per_run": runs,
            "bar": {
                "claim_p99_under_25ms": claims["p99_ms"] < 25,
                "at_least_300_claims_per_s": claims["ok_per_s"] >= 300,
                "capacity_p99_under_20ms": capacity["p99_ms"] < 20,
            },
        }
        print(json.dumps(report, indent=2))
        return 0
    finally:
        os.unlink(script)
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
        databases.close()


if __name__ == "__main__":
    sys.exit(main())
