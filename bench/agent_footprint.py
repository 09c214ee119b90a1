"""Agent footprint: memory and CPU of a real ``fleetpulse agent``, host collection time,
and ``simulate`` at 10,000 agents. Prints one JSON object.

Uses the local broker (``FLEETPULSE_BENCH_AMQP_URL`` / ``..._MANAGEMENT_URL``, default
guest on 127.0.0.1) in a throw-away vhost with one bounded queue, so every heartbeat
is routable and confirmed and nothing piles up in the broker.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
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
AGENT_HEARTBEATS = 40
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


def bench_agent(vhost: Vhost) -> dict[str, float]:
    """A real agent process: RSS after warm-up, CPU seconds per heartbeat over a window."""
    loop = asyncio.new_event_loop()
    sink = loop.run_until_complete(vhost.bind_sink())
    with tempfile.TemporaryDirectory() as state:
        env = {
            **os.environ,
            "FLEETPULSE_AMQP_URL": vhost.url,
            "FLEETPULSE_AGENT_STATE_DIR": state,
            "FLEETPULSE_AGENT_HEARTBEAT_INTERVAL_S": str(AGENT_INTERVAL_S),
        }
        proc = subprocess.Popen(
            [sys.executable, "-m", "fleetpulse", "--log-level", "warning", "agent"],
            env=env,
        )
        try:
            ps = psutil.Process(proc.pid)
            deadline = time.monotonic() + 30
            while vhost.published() < 1 and time.monotonic() < deadline:
                time.sleep(0.2)
            time.sleep(1.0)  # warm-up: imports done, GPU probe answered
            cpu0 = sum(ps.cpu_times()[:2])
            t0 = time.monotonic()
            time.sleep(AGENT_HEARTBEATS * AGENT_INTERVAL_S)
            cpu1 = sum(ps.cpu_times()[:2])
            elapsed = time.monotonic() - t0
            rss = ps.memory_info().rss
            children = sum(c.memory_info().rss for c in ps.children(recursive=True))
        finally:
            proc.terminate()
            proc.wait(10)
    loop.run_until_complete(sink.close())
    loop.close()
    heartbeats = elapsed / AGENT_INTERVAL_S
    return {
        "agent_rss_mib": round(rss / 2**20, 1),
        "agent_children_rss_mib": round(children / 2**20, 1),
        "agent_cpu_s_per_heartbeat": round((cpu1 - cpu0) / heartbeats, 5),
        "agent_exit_code": proc.returncode,
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
    result: dict[str, Any] = {"benchmark": "agent_footprint", "cpus": os.cpu_count()}
    result.update(bench_host_collection())
    with Vhost() as vhost:
        result.update(bench_agent(vhost))
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
