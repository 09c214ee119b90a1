"""Agent footprint: memory and CPU of a real ``fleetpulse agent``, host collection time,
and ``simulate`` at 10,000 agents. Prints one JSON object.

The agent runs from the light install (``pip install fleetpulse``, no extras: a fresh
virtualenv with the locked agent dependencies), whose size and import time are measured
too, for ``AGENT_HEARTBEATS`` heartbeats (120: an hour at the default 30 s interval) every
``AGENT_INTERVAL_S``. Beside it, in the same run, Debian's ``prometheus-node-exporter``
(the closest thing a user would install instead) is scraped at the same rate: its RSS and
CPU per scrape. ``--skip-simulate`` leaves out the simulator figures.

Uses the local broker (``FLEETPULSE_BENCH_AMQP_URL`` / ``..._MANAGEMENT_URL``, default
guest on 127.0.0.1) in a throw-away vhost with one bounded queue, so every heartbeat
is routable and confirmed and nothing piles up in the broker.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import aio_pika
import httpx
import psutil
import uvloop

from fleetpulse.agent import HostCollector, Simulator
from fleetpulse.config import AgentSettings, AmqpSettings, Settings
from fleetpulse.messages import EXCHANGE

AMQP = os.environ.get("FLEETPULSE_BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
MANAGEMENT = os.environ.get("FLEETPULSE_BENCH_AMQP_MANAGEMENT_URL", "http://127.0.0.1:15672")
AGENT_INTERVAL_S = 0.25
AGENT_HEARTBEATS = 120  # an hour's worth at the default 30 s interval
ROOT = Path(__file__).resolve().parents[1]
# `uv run` (make test) names itself in $UV; else uv on PATH, else the Makefile's way
UV = [os.environ.get("UV") or shutil.which("uv") or "python3"] + (
    [] if (os.environ.get("UV") or shutil.which("uv")) else ["-m", "uv"]
)
SIM_AGENTS = 10_000
SIM_INTERVAL_S = 30.0
SIM_DURATION_S = 30.0


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Vhost:
    def __init__(self) -> None:
        self.name = f"fleetpulse_bench_{uuid.uuid4().hex[:8]}"
        self.http = httpx.Client(base_url=MANAGEMENT, auth=("guest", "guest"), timeout=10)
        parts = urlsplit(AMQP)
        self.url = urlunsplit(parts._replace(path=f"/{quote(self.name, safe='')}"))

    def __enter__(self) -> Vhost:
        self.http.put(f"/api/vhosts/{self.name}").raise_for_status()
        self.http.put(
            f"/api/permissions/{self.name}/guest",
            json={"configure": ".*", "write": ".*", "read": ".*"},
        ).raise_for_status()
        return self

    def __exit__(self, *_: Any) -> None:
        self.http.delete(f"/api/vhosts/{self.name}")
        self.http.close()

    async def bind_sink(self) -> aio_pika.abc.AbstractConnection:
        """A queue bound to every heartbeat, capped so the broker keeps only the newest."""
        connection = await aio_pika.connect(self.url)
        channel = await connection.channel()
        exchange = await channel.declare_exchange(
            EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True
        )
        queue = await channel.declare_queue(
            "bench.sink", arguments={"x-max-length": 1000, "x-overflow": "drop-head"}
        )
        await queue.bind(exchange, "heartbeat.#")
        return connection

    def published(self) -> int:
        stats = self.http.get(f"/api/queues/{self.name}/bench.sink").json()
        return int(stats.get("message_stats", {}).get("publish", 0))


def bench_host_collection(samples: int = 2000) -> dict[str, float]:
    collector = HostCollector()

    async def run() -> list[float]:
        times = []
        for _ in range(samples):
            started = time.perf_counter()
            await collector.collect()
            times.append((time.perf_counter() - started) * 1000.0)
        return times

    times = asyncio.run(run())
    return {
        "host_collect_ms_p50": percentile(times, 0.5),
        "host_collect_ms_p99": percentile(times, 0.99),
    }


def site_packages_mib(venv: Path) -> float:
    [site] = list(venv.glob("lib/python*/site-packages"))
    total = sum(f.stat().st_size for f in site.rglob("*") if f.is_file())
    return round(total / 2**20, 1)


def make_venv(where: Path, *extras: str) -> Path:
    """A fresh virtualenv with the locked dependencies of ``extras`` (none: the agent)."""
    flags = [arg for extra in extras for arg in ("--extra", extra)]
    exported = subprocess.run(
        [*UV, "export", "--frozen", "--no-dev", "--no-hashes", "--no-emit-project", "-q", *flags],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    requirements = where / "requirements.txt"
    requirements.write_text(exported)
    venv = where / "venv"
    python = str(venv / "bin" / "python")
    for step in (
        ["venv", "-q", str(venv)],
        ["pip", "install", "-q", "--python", python, "-r", str(requirements)],
        ["pip", "install", "-q", "--python", python, "--no-deps", str(ROOT)],
    ):
        subprocess.run([*UV, *step], cwd=ROOT, check=True, capture_output=True)
    return venv


def bench_install(light: Path, scratch: Path, runs: int = 7) -> dict[str, float]:
    """Installed size (agent only, and with every extra) and the agent entry's import time."""
    full = make_venv(scratch, "all")
    python = str(light / "bin" / "python")
    totals: list[float] = []
    walls: list[float] = []
    for _ in range(runs):
        started = time.perf_counter()
        done = subprocess.run(
            [python, "-X", "importtime", "-c", "import fleetpulse.cli, fleetpulse.agent.entry"],
            capture_output=True,
            text=True,
            check=True,
        )
        walls.append((time.perf_counter() - started) * 1000.0)
        cumulative = 0
        for line in done.stderr.splitlines():
            parts = line.split("|")
            if len(parts) == 3 and not parts[2].startswith("  ") and parts[1].strip().isdigit():
                cumulative += int(parts[1])  # top-level imports only: they include the rest
        totals.append(cumulative / 1000.0)
    return {
        "install_agent_only_mib": site_packages_mib(light),
        "install_all_extras_mib": site_packages_mib(full),
        "import_agent_entry_ms_median": round(statistics.median(totals), 1),
        "python_start_and_import_ms_median": round(statistics.median(walls), 1),
    }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class NodeExporter:
    """Debian's prometheus-node-exporter with its default collectors, scraped every
    ``interval_s`` from a thread (the scraping costs this process, not the exporter)."""

    def __init__(self, interval_s: float) -> None:
        binary = shutil.which("prometheus-node-exporter") or shutil.which("node_exporter")
        if binary is None:
            raise SystemExit("apt-get install prometheus-node-exporter (the comparison)")
        self.port = free_port()
        self.interval_s = interval_s
        self.proc = subprocess.Popen(
            [binary, f"--web.listen-address=127.0.0.1:{self.port}"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.ps = psutil.Process(self.proc.pid)
        self.scrapes = 0
        self.scrape_ms: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._scrape, daemon=True)
        deadline = time.monotonic() + 10
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{self.port}/metrics", timeout=5).raise_for_status()
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        self._thread.start()

    def _scrape(self) -> None:
        with httpx.Client(timeout=5) as client:
            next_at = time.monotonic()
            while not self._stop.is_set():
                started = time.perf_counter()
                client.get(f"http://127.0.0.1:{self.port}/metrics").raise_for_status()
                self.scrape_ms.append((time.perf_counter() - started) * 1000.0)
                self.scrapes += 1
                next_at += self.interval_s
                self._stop.wait(max(0.0, next_at - time.monotonic()))

    def cpu_s(self) -> float:
        return float(sum(self.ps.cpu_times()[:2]))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self.proc.terminate()
        self.proc.wait(10)


def bench_agent(vhost: Vhost, light: Path) -> dict[str, float]:
    """The light install's agent process: RSS after an hour's worth of heartbeats, CPU per
    heartbeat; node_exporter beside it, scraped at the same rate over the same window."""
    loop = asyncio.new_event_loop()
    sink = loop.run_until_complete(vhost.bind_sink())
    exporter = NodeExporter(AGENT_INTERVAL_S)
    with tempfile.TemporaryDirectory() as state:
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("FLEETPULSE_")},
            "FLEETPULSE_AMQP_URL": vhost.url,
            "FLEETPULSE_AGENT_STATE_DIR": state,
            "FLEETPULSE_AGENT_HEARTBEAT_INTERVAL_S": str(AGENT_INTERVAL_S),
        }
        proc = subprocess.Popen(
            [str(light / "bin" / "fleetpulse"), "--log-level", "warning", "agent"], env=env
        )
        try:
            ps = psutil.Process(proc.pid)
            deadline = time.monotonic() + 30
            while vhost.published() < 1 and time.monotonic() < deadline:
                time.sleep(0.2)
            time.sleep(1.0)  # warm-up: imports done, GPU probe answered
            first = vhost.published()
            cpu0, exporter_cpu0, scrapes0 = (
                sum(ps.cpu_times()[:2]),
                exporter.cpu_s(),
                exporter.scrapes,
            )
            t0 = time.monotonic()
            time.sleep(AGENT_HEARTBEATS * AGENT_INTERVAL_S)
            cpu1, exporter_cpu1, scrapes1 = (
                sum(ps.cpu_times()[:2]),
                exporter.cpu_s(),
                exporter.scrapes,
            )
            elapsed = time.monotonic() - t0
            sent = vhost.published() - first
            rss = ps.memory_info().rss
            uss = ps.memory_full_info().uss
            children = sum(c.memory_info().rss for c in ps.children(recursive=True))
            exporter_rss = exporter.ps.memory_info().rss
        finally:
            proc.terminate()
            proc.wait(10)
            exporter.close()
    loop.run_until_complete(sink.close())
    loop.close()
    heartbeats = elapsed / AGENT_INTERVAL_S
    scrapes = max(1, scrapes1 - scrapes0)
    return {
        "agent_heartbeats_in_window": sent,
        "agent_rss_mib": round(rss / 2**20, 1),
        "agent_uss_mib": round(uss / 2**20, 1),
        "agent_children_rss_mib": round(children / 2**20, 1),
        "agent_cpu_ms_per_heartbeat": round((cpu1 - cpu0) / heartbeats * 1000.0, 3),
        "agent_exit_code": proc.returncode,
        "node_exporter_scrapes_in_window": scrapes,
        "node_exporter_rss_mib": round(exporter_rss / 2**20, 1),
        "node_exporter_cpu_ms_per_scrape": round(
            (exporter_cpu1 - exporter_cpu0) / scrapes * 1000.0, 3
        ),
        "node_exporter_scrape_ms_median": round(statistics.median(exporter.scrape_ms), 2),
    }


def bench_simulate(
    vhost: Vhost, interval_s: float, duration_s: float, prefix: str
) -> dict[str, float]:
    """10,000 simulated agents in this process, one connection, for ``duration_s``."""

    async def run() -> dict[str, float]:
        sink = await vhost.bind_sink()
        settings = Settings(
            amqp=AmqpSettings(url=vhost.url), agent=AgentSettings(goodbye_timeout_s=10.0)
        )
        simulator = Simulator(settings, agents=SIM_AGENTS, profile="mixed", interval_s=interval_s)
        async with simulator:
            assert simulator.publisher is not None
            await asyncio.wait_for(simulator.publisher.connected.wait(), 10)
            cpu0, t0 = time.process_time(), time.monotonic()
            await simulator.run(duration_s)
            wall, cpu = time.monotonic() - t0, time.process_time() - cpu0
            published = simulator.publisher.published_total
            samples = simulator.samples_total
            backlog = simulator.spool.depth
        await sink.close()
        return {
            f"{prefix}_agents": SIM_AGENTS,
            f"{prefix}_interval_s": interval_s,
            f"{prefix}_heartbeats": samples,
            f"{prefix}_published_incl_goodbyes": published,
            f"{prefix}_backlog_at_end": backlog,
            f"{prefix}_heartbeats_per_s": round(samples / duration_s, 1),
            f"{prefix}_published_per_s": round(published / wall, 1),
            f"{prefix}_cpu_fraction_of_one_core": round(cpu / wall, 3),
            f"{prefix}_rss_mib": round(psutil.Process().memory_info().rss / 2**20, 1),
        }

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(run())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-simulate", action="store_true")
    args = parser.parse_args()
    result: dict[str, Any] = {
        "benchmark": "agent_footprint",
        "cpus": os.cpu_count(),
        "load_1m_at_start": round(os.getloadavg()[0], 2),
    }
    result.update(bench_host_collection())
    with tempfile.TemporaryDirectory() as scratch:
        light = make_venv(Path(scratch))
        full_scratch = Path(scratch) / "full"
        full_scratch.mkdir()
        result.update(bench_install(light, full_scratch))
        with Vhost() as vhost:
            result.update(bench_agent(vhost, light))
    result["load_1m_at_end"] = round(os.getloadavg()[0], 2)
    if not args.skip_simulate:
        with Vhost() as vhost:
            result.update(bench_simulate(vhost, SIM_INTERVAL_S, SIM_DURATION_S, "simulate"))
        # headroom: the same fleet asked for 10x the rate (3 s interval)
        with Vhost() as vhost:
            result.update(bench_simulate(vhost, 3.0, 9.0, "simulate_stress"))
    for key, value in result.items():
        if isinstance(value, float):
            result[key] = round(value, 4)
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
