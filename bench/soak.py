"""A soak at fleet scale; prints JSON. Not part of `make test` nor `make bench` (`make soak`).

Simulated agents (``fleetpulse simulate`` processes) heartbeat at ``--interval`` through the
broker (the default node, or the three nodes of scripts/cluster.sh with ``--cluster``),
ingest processes (with the silence detector) and TimescaleDB, while ``wrk`` plays
``--clients`` schedulers asking the API process a mix of capacity questions (each client
waits ``--client-delay-ms`` between requests: schedulers poll, they do not hammer). The
registry changes with every heartbeat, so this measures capacity answers in the live case
(the capacity benchmark's registry stands still and every repeat hits the answer memo).

Per minute: publish-to-commit latency p50/p99 (a heartbeat's ``sent_at``, stamped as it
leaves the simulator, to the commit that stored it, measured inside the ingest processes),
heartbeats stored per second, ingest queue depth (max and last, sampled every 5 s), capacity
p50/p99 and requests/s (wrk), the detector's sweep time (mean and the histogram bucket of
the slowest), each process's RSS and CPU (simulators, ingests, API, wrk, broker node(s), the
database backends of this run) and the whole box's busy cores (other work included). The
first minute is warm-up. At the end: the bars (RSS growth after warm-up <= 10 %, queue depth
bounded, capacity p99 < 20 ms, no offline event) and the bytes per stored sample.

    python bench/soak.py [--agents 100000] [--minutes 10] [--interval 30] [--ingests 2]
                         [--simulators N] [--clients 8] [--cluster] [--out FILE]

A fresh database (fleetpulse_bench_*) and vhost are created and dropped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote, urlencode, urlsplit, urlunsplit

import httpx
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import bench_database, bench_vhost, percentile

ROOT = Path(__file__).resolve().parents[1]
BUCKET_S = 10
QUERIES = [
    {"min_gpu_vram_gb": 8, "limit": 20},
    {"min_gpu_vram_gb": 16, "min_cpu_cores": 8, "limit": 20},
    {"min_cpu_cores": 8, "min_mem_gb": 16, "pool": "cpu", "limit": 20},
    {"min_gpu_count": 2, "min_gpu_vram_gb": 10, "limit": 20},
    {"min_gpu_vram_gb": 8, "max_sample_age_s": 60, "limit": 50},
    {"min_gpu_vram_gb": 500, "limit": 20},  # no match: the index looks at every agent
]


# ------------------------------------------------------------------------------ the ingest role


def ingest_role() -> int:
    """An ingest process (worker + detector, as `fleetpulse ingest`) that also reports, every
    ``BUCKET_S`` seconds on stdout, each stored heartbeat's publish-to-commit latency."""
    import uvloop

    from fleetpulse.config import load_settings
    from fleetpulse.ingest import CommitReport, Ingest, IngestMetrics, SilenceDetector, utc_now

    settings = load_settings()
    metrics = IngestMetrics()
    buckets: dict[int, Counter[int]] = {}

    def on_commit(report: CommitReport) -> None:
        key = int(report.committed_at) // BUCKET_S * BUCKET_S
        counts = buckets.setdefault(key, Counter())
        for heartbeat in report.heartbeats:
            counts[round((report.committed_at - heartbeat.sent_at.timestamp()) * 1000)] += 1

    def sweeps() -> tuple[float, float, list[tuple[float, float]]]:
        count = total = 0.0
        cumulative: list[tuple[float, float]] = []
        for family in metrics.detector_sweep_seconds.collect():
            for sample in family.samples:
                if sample.name.endswith("_count"):
                    count = sample.value
                elif sample.name.endswith("_sum"):
                    total = sample.value
                elif sample.name.endswith("_bucket"):
                    cumulative.append((float(sample.labels["le"]), sample.value))
        return count, total, cumulative

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        async with (
            Ingest(settings, metrics=metrics, on_commit=on_commit),
            SilenceDetector(settings, metrics=metrics, clock=utc_now),
        ):
            previous = sweeps()
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), BUCKET_S - time.time() % BUCKET_S)
                current = sweeps()
                slowest = 0.0
                # cumulative buckets: the first that holds every sweep of this window
                for (le, now), (_, before) in zip(current[2], previous[2], strict=False):
                    if now - before >= current[0] - previous[0]:
                        slowest = le
                        break
                done = [k for k in buckets if k + BUCKET_S <= time.time()]
                line = {
                    "t": int(time.time()) // BUCKET_S * BUCKET_S - BUCKET_S,
                    "lat_ms": {},
                    "sweeps": current[0] - previous[0],
                    "sweep_s": current[1] - previous[1],
                    "sweep_max_le_s": slowest if current[0] > previous[0] else 0.0,
                    "leader": metrics.detector_leader._value.get(),
                }
                for k in done:
                    for ms, n in buckets.pop(k).items():
                        line["lat_ms"][ms] = line["lat_ms"].get(ms, 0) + n
                print(json.dumps(line), flush=True)
                previous = current

    uvloop.run(main())
    return 0


# ------------------------------------------------------------------------------------ helpers


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def proc_stat(pid: int) -> tuple[float, float] | None:
    """(CPU seconds so far, RSS MiB) of a process; None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    rss = int(fields[21]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    return cpu, rss


def box_busy() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    assert m, text
    return float(m.group(1)) * _UNITS[m.group(2)]


def parse_wrk(out: str) -> dict[str, float]:
    def grab(pattern: str) -> str | None:
        m = re.search(pattern, out)
        return m.group(1) if m else None

    errors = grab(r"Non-2xx or 3xx responses: (\d+)")
    p50, p99, rps = (
        grab(r"\s50%\s+(\S+)"),
        grab(r"\s99%\s+(\S+)"),
        grab(r"Requests/sec:\s+([\d.]+)"),
    )
    return {
        "capacity_p50_ms": _ms(p50) if p50 else math.nan,
        "capacity_p99_ms": _ms(p99) if p99 else math.nan,
        "capacity_rps": float(rps) if rps else 0.0,
        "capacity_non_2xx": float(errors) if errors else 0.0,
    }


class Reader(threading.Thread):
    """Collects the JSON lines an ingest child prints."""

    def __init__(self, stream: IO[str]) -> None:
        super().__init__(daemon=True)
        self.stream = stream
        self.lines: list[dict[str, Any]] = []

    def run(self) -> None:
        for line in self.stream:
            with contextlib.suppress(ValueError):
                self.lines.append(json.loads(line))


def wait_for(
    condition: Any, timeout_s: float, what: str, children: dict[str, subprocess.Popen[str]]
) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        gone = [name for name, child in children.items() if child.poll() is not None]
        if gone:
            raise SystemExit(json.dumps({"error": f"{', '.join(gone)} exited; see the logs"}))
        if time.monotonic() > deadline:
            raise SystemExit(json.dumps({"error": f"timed out after {timeout_s:g} s: {what}"}))
        time.sleep(0.5)


def cluster_vhost_urls(vhost: str) -> tuple[list[str], str]:
    out = subprocess.run(
        ["bash", str(ROOT / "scripts" / "cluster.sh"), "urls"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    urls = [
        urlunsplit(urlsplit(u)._replace(path=f"/{quote(vhost, safe='')}")) for u in out.split(",")
    ]
    port = urlsplit(urls[0]).port or 5701
    return urls, f"http://guest:guest@127.0.0.1:{port + 10000}"


@contextlib.contextmanager
def cluster_vhost() -> Any:
    import uuid

    vhost = f"fleetpulse_bench_{uuid.uuid4().hex[:8]}"
    urls, management = cluster_vhost_urls(vhost)
    parts = urlsplit(management)
    base = urlunsplit(parts._replace(netloc=f"{parts.hostname}:{parts.port}"))
    with httpx.Client(base_url=base, auth=("guest", "guest"), timeout=30) as client:
        client.put(f"/api/vhosts/{quote(vhost, safe='')}").raise_for_status()
        client.put(
            f"/api/permissions/{quote(vhost, safe='')}/guest",
            json={"configure": ".*", "write": ".*", "read": ".*"},
        ).raise_for_status()
        try:
            yield urls, management
        finally:
            client.delete(f"/api/vhosts/{quote(vhost, safe='')}")


def broker_pids(management: str) -> list[int]:
    parts = urlsplit(management)
    base = urlunsplit(parts._replace(netloc=f"{parts.hostname}:{parts.port}"))
    nodes = httpx.get(f"{base}/api/nodes", auth=("guest", "guest"), timeout=10).json()
    pids = []
    for node in nodes:
        with contextlib.suppress(KeyError, ValueError, TypeError):
            pids.append(int(node["os_pid"]))
    return pids


def queue_depth(management: str, vhost: str) -> int | None:
    parts = urlsplit(management)
    base = urlunsplit(parts._replace(netloc=f"{parts.hostname}:{parts.port}"))
    try:
        q = httpx.get(
            f"{base}/api/queues/{quote(vhost, safe='')}/fleetpulse.ingest",
            auth=("guest", "guest"),
            timeout=5,
        ).json()
        return int(q.get("messages", 0))
    except (httpx.HTTPError, ValueError):
        return None


# ------------------------------------------------------------------------------------- the run


def run(args: argparse.Namespace) -> dict[str, Any]:
    if shutil.which("wrk") is None:
        return {"error": "wrk not found; run 'make services'"}
    simulators = args.simulators or max(1, math.ceil(args.agents / 25_000))
    logs = Path(tempfile.mkdtemp(prefix="fleetpulse-soak-"))
    result: dict[str, Any] = {
        "benchmark": "soak",
        "config": {
            "agents": args.agents,
            "interval_s": args.interval,
            "heartbeats_per_s": round(args.agents / args.interval, 1),
            "minutes": args.minutes,
            "ingest_processes": args.ingests,
            "simulator_processes": simulators,
            "api_processes": 1,
            "clients": args.clients,
            "client_delay_ms": args.client_delay_ms,
            "broker": "three-node cluster" if args.cluster else "one node",
            "cpus": os.cpu_count(),
            "logs": str(logs),
        },
    }
    with bench_database() as db_url, cluster_vhost() if args.cluster else bench_vhost() as vh:
        if args.cluster:
            amqp_urls, management = vh
        else:
            amqp_urls = [vh]
            management = os.environ.get(
                "FLEETPULSE_TEST_AMQP_MANAGEMENT_URL", "http://guest:guest@127.0.0.1:15672"
            )
        vhost = urlsplit(amqp_urls[0]).path.lstrip("/")
        env = {
            **os.environ,
            "FLEETPULSE_AMQP_URLS": ",".join(amqp_urls),
            "FLEETPULSE_DATABASE_URL": db_url,
            "FLEETPULSE_AGENT_HEARTBEAT_INTERVAL_S": str(args.interval),
            "FLEETPULSE_INGEST_METRICS_PORT": "0",
            "PYTHONUNBUFFERED": "1",
        }
        children: dict[str, subprocess.Popen[str]] = {}
        readers: list[Reader] = []
        try:
            for i in range(args.ingests):
                child = subprocess.Popen(
                    [sys.executable, __file__, "--role", "ingest"],
                    env=env,
                    stdout=subprocess.PIPE,
                    stderr=(logs / f"ingest-{i}.log").open("w"),
                    text=True,
                )
                assert child.stdout is not None
                reader = Reader(child.stdout)
                reader.start()
                readers.append(reader)
                children[f"ingest-{i}"] = child
            api_port = free_port()
            children["api"] = subprocess.Popen(
                [sys.executable, "-m", "fleetpulse", "api"],
                env={**env, "FLEETPULSE_API_PORT": str(api_port)},
                stdout=(logs / "api.log").open("w"),
                stderr=subprocess.STDOUT,
                text=True,
            )
            share = [
                args.agents // simulators + (i < args.agents % simulators)
                for i in range(simulators)
            ]
            for i, n in enumerate(share):
                children[f"simulate-{i}"] = subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "fleetpulse",
                        "simulate",
                        "--agents",
                        str(n),
                        "--interval",
                        str(args.interval),
                        "--seed",
                        str(1000 + i),
                    ],
                    env=env,
                    stdout=(logs / f"simulate-{i}.log").open("w"),
                    stderr=subprocess.STDOUT,
                    text=True,
                )
            db = psycopg.connect(db_url, autocommit=True)
            started = time.monotonic()
            wait_for(
                lambda: (
                    db.execute(
                        "SELECT count(*) FROM agent_registry WHERE status = 'online'"
                    ).fetchone()
                    == (args.agents,)
                ),
                args.interval * 3 + 60,
                f"{args.agents} agents online",
                children,
            )
            result["config"]["fleet_online_after_s"] = round(time.monotonic() - started, 1)
            wait_for(
                lambda: (
                    httpx.get(f"http://127.0.0.1:{api_port}/readyz", timeout=5).status_code == 200
                ),
                60,
                "the API",
                children,
            )
            script = logs / "mix.lua"
            paths = [f"/api/v1/agents/available-capacity?{urlencode(q)}" for q in QUERIES]
            script.write_text(
                "local paths = {" + ", ".join(json.dumps(p) for p in paths) + "}\n"
                "local i = 0\n"
                "request = function()\n"
                "  i = i % #paths + 1\n"
                "  return wrk.format('GET', paths[i])\n"
                "end\n"
                f"delay = function() return {args.client_delay_ms} end\n"
            )
            brokers = broker_pids(management)
            storage_before = storage(db)
            result["minutes"] = [
                minute_of(
                    m,
                    args,
                    children,
                    readers,
                    brokers,
                    db,
                    db_url,
                    management,
                    vhost,
                    api_port,
                    script,
                )
                for m in range(args.minutes)
            ]
            result["summary"] = summary(result["minutes"], db, args, storage_before)
            db.close()
        finally:
            for _name, child in children.items():
                if child.poll() is None:
                    child.send_signal(signal.SIGTERM)
            for _name, child in children.items():
                try:
                    child.wait(60)
                except subprocess.TimeoutExpired:
                    child.kill()
    return result


def minute_of(
    m: int,
    args: argparse.Namespace,
    children: dict[str, subprocess.Popen[str]],
    readers: list[Reader],
    brokers: list[int],
    db: psycopg.Connection[Any],
    db_url: str,
    management: str,
    vhost: str,
    api_port: int,
    script: Path,
) -> dict[str, Any]:
    dbname = urlsplit(db_url).path.lstrip("/")

    def backends() -> list[int]:
        rows = db.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            (dbname,),
        ).fetchall()
        return [r[0] for r in rows]

    pids = {name: child.pid for name, child in children.items()}
    for i, pid in enumerate(brokers):
        pids[f"rabbitmq-{i}"] = pid
    before = {name: proc_stat(pid) for name, pid in pids.items()}
    pg_before = {pid: proc_stat(pid) for pid in backends()}
    box_before = box_busy()
    t0 = time.time()
    wrk = subprocess.Popen(
        [
            "wrk",
            "-t2",
            f"-c{args.clients}",
            "-d60s",
            "--latency",
            "-s",
            str(script),
            f"http://127.0.0.1:{api_port}",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    depths: list[int] = []
    wrk_cpu = 0.0
    while wrk.poll() is None:
        depth = queue_depth(management, vhost)
        if depth is not None:
            depths.append(depth)
        stat = proc_stat(wrk.pid)
        if stat is not None:
            wrk_cpu = stat[0]
        with contextlib.suppress(subprocess.TimeoutExpired):
            wrk.wait(5)
    t1 = time.time()
    out = wrk.stdout.read() if wrk.stdout else ""
    box_after = box_busy()
    seconds = t1 - t0
    processes: dict[str, dict[str, float]] = {}
    for name, pid in pids.items():
        a, b = before.get(name), proc_stat(pid)
        if a is not None and b is not None:
            processes[name] = {
                "cpu_cores": round((b[0] - a[0]) / seconds, 3),
                "rss_mib": round(b[1], 1),
            }
    processes["wrk"] = {"cpu_cores": round(wrk_cpu / seconds, 3), "rss_mib": 0.0}
    pg_cpu = 0.0
    for pid in backends():
        a, b = pg_before.get(pid), proc_stat(pid)
        if b is not None:
            pg_cpu += b[0] - (a[0] if a is not None else 0.0)
    processes["postgres_backends"] = {"cpu_cores": round(pg_cpu / seconds, 3)}
    # ingest reports in 10 s windows; one still open at the end counts for the next minute
    latencies: Counter[int] = Counter()
    windows: set[int] = set()
    sweeps = sweep_s = sweep_max = 0.0
    for reader in readers:
        for line in reader.lines:
            if t0 - BUCKET_S / 2 <= line["t"] < t1 - BUCKET_S / 2:
                windows.add(line["t"])
                for ms, n in line["lat_ms"].items():
                    latencies[int(ms)] += n
                sweeps += line["sweeps"]
                sweep_s += line["sweep_s"]
                sweep_max = max(sweep_max, line["sweep_max_le_s"])
    stored = sum(latencies.values())
    expanded = sorted(latencies.elements())
    offline = db.execute(
        "SELECT count(*) FROM agent_status_events"
        " WHERE to_status = 'offline' AND at >= to_timestamp(%s)",
        (t0,),
    ).fetchone()
    minute = {
        "minute": m,
        "warm_up": m == 0,
        "stored_per_s": round(stored / max(1, len(windows) * BUCKET_S), 1),
        "publish_to_commit_p50_ms": percentile([float(x) for x in expanded], 50),
        "publish_to_commit_p99_ms": percentile([float(x) for x in expanded], 99),
        "queue_depth_max": max(depths) if depths else None,
        "queue_depth_last": depths[-1] if depths else None,
        **parse_wrk(out),
        "sweeps": int(sweeps),
        "sweep_mean_ms": round(sweep_s / sweeps * 1000, 2) if sweeps else None,
        "sweep_slowest_bucket_ms": round(sweep_max * 1000, 1) if sweeps else None,
        "offline_events": offline[0] if offline else None,
        "box_busy_cores": round(
            (box_after[0] - box_before[0])
            / max(1, box_after[1] - box_before[1])
            * (os.cpu_count() or 1),
            2,
        ),
        "processes": processes,
    }
    print(
        json.dumps({k: v for k, v in minute.items() if k != "processes"}),
        file=sys.stderr,
        flush=True,
    )
    return minute


def storage(db: psycopg.Connection[Any]) -> tuple[int, int, int]:
    """(samples stored, bytes of agent_samples, bytes of gpu_samples), indexes included."""
    row = db.execute(
        "SELECT (SELECT count(*) FROM agent_samples),"
        " hypertable_size('agent_samples'), hypertable_size('gpu_samples')"
    ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1] or 0), int(row[2] or 0)


def summary(
    minutes: list[dict[str, Any]],
    db: psycopg.Connection[Any],
    args: argparse.Namespace,
    storage_before: tuple[int, int, int],
) -> dict[str, Any]:
    steady = [m for m in minutes if not m["warm_up"]] or minutes
    first, last = steady[0], steady[-1]
    growth = {}
    for name, stat in last["processes"].items():
        base = first["processes"].get(name, {}).get("rss_mib")
        if base and "rss_mib" in stat and stat["rss_mib"]:
            growth[name] = round(stat["rss_mib"] / base - 1, 3)
    expected = args.agents / args.interval
    depths = [m["queue_depth_max"] for m in steady if m["queue_depth_max"] is not None]
    p99s = [m["capacity_p99_ms"] for m in steady]
    offline = db.execute(
        "SELECT count(*) FROM agent_status_events WHERE to_status = 'offline'"
    ).fetchone()
    # bytes per sample from what the soak itself added (a table's fixed overhead excluded)
    after = storage(db)
    samples = after[0] - storage_before[0]
    grown = (after[1] - storage_before[1], after[2] - storage_before[2])
    bytes_per_sample = round(sum(grown) / samples) if samples > 0 else None
    try:
        db.execute("ALTER TABLE agent_samples SET (timescaledb.compress)")
        compression = "available (not measured here)"
    except psycopg.Error as exc:
        compression = f"unavailable: {str(exc).splitlines()[0]}"
    # a fleet is carried when ingest stores what is sent and the queue does not grow
    carried = all(m["stored_per_s"] >= 0.95 * expected for m in steady) and (
        not depths or depths[-1] <= max(2 * expected, depths[0])
    )
    return {
        "fleet_carried": carried,
        "expected_heartbeats_per_s": round(expected, 1),
        "stored_per_s_min": min(m["stored_per_s"] for m in steady),
        "publish_to_commit_p99_ms_max": max(m["publish_to_commit_p99_ms"] for m in steady),
        "capacity_p99_ms_max": max(p99s),
        "rss_growth_after_warm_up": growth,
        "queue_depth_max": max(depths) if depths else None,
        "offline_events": offline[0] if offline else None,
        "bars": {
            "rss_growth_le_10pct": all(g <= 0.10 for g in growth.values()),
            "queue_depth_bounded": carried,
            "capacity_p99_lt_20ms": max(p99s) < 20.0,
            "no_offline_event": (offline[0] if offline else 1) == 0,
        },
        "bytes_per_sample": bytes_per_sample,
        "bytes_per_sample_agent_gpu": [round(g / samples) for g in grown] if samples > 0 else None,
        "bytes_per_agent_day": round(bytes_per_sample * 86_400 / args.interval)
        if bytes_per_sample
        else None,
        "samples_stored": after[0],
        "compression": compression,
        "busiest_process": max(
            last["processes"].items(), key=lambda kv: kv[1].get("cpu_cores", 0.0)
        )[0],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--role", choices=["soak", "ingest"], default="soak")
    parser.add_argument("--agents", type=int, default=100_000)
    parser.add_argument("--minutes", type=int, default=10)
    parser.add_argument("--interval", type=float, default=30.0)
    parser.add_argument("--ingests", type=int, default=2)
    parser.add_argument("--simulators", type=int, default=0, help="default: one per 25,000 agents")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--client-delay-ms", type=int, default=20)
    parser.add_argument("--cluster", action="store_true", help="the nodes of scripts/cluster.sh")
    parser.add_argument("--out", default=None, help="also write the JSON here")
    args = parser.parse_args()
    if args.role == "ingest":
        return ingest_role()
    result = run(args)
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0 if "error" not in result else 1


if __name__ == "__main__":
    sys.exit(main())
