"""Ingest's resident memory through a flood of big messages from one agent credential; prints JSON.

A real ``fleetpulse ingest`` process over a throw-away database and vhost. Its RSS is read
from /proc before the flood (after a warm-up of ordinary heartbeats), every 20 ms during the
flood (peak) and after it has settled every message (and a few seconds more). The flood:
``--huge`` publishes of 1 MiB (the broker refuses each, over its max_message_size), then
``--messages`` bodies just under the broker's limit (each over the 64 KiB body limit, so
ingest dead-letters them), published as fast as the broker confirms.

    python bench/ingest_flood.py [--messages 1000] [--huge 20]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import aiormq
import httpx
from pamqp.commands import Basic

from _common import MANAGEMENT_URL, bench_database, bench_vhost, fleet, heartbeat_body, now
from fleetpulse.config import AmqpSettings, Settings
from fleetpulse.ingest import create_agent_credentials
from fleetpulse.messages import (
    BROKER_MAX_MESSAGE_BYTES,
    DEAD_LETTER_QUEUE,
    EXCHANGE,
    INGEST_QUEUE,
    routing_key,
)

MIB = 1024 * 1024


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def queue_state(amqp_url: str, queue: str) -> tuple[int, int]:
    connection = await aiormq.connect(amqp_url)
    try:
        channel = await connection.channel()
        declared = await channel.queue_declare(queue, passive=True)
        return int(declared.message_count or 0), int(declared.consumer_count or 0)
    except aiormq.exceptions.ChannelNotFoundEntity:
        return 0, 0
    finally:
        await connection.close()


async def wait_for(check: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not await check():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


async def publish(url: str, items: list[tuple[str, bytes]], user: str | None) -> int:
    """Publish with confirms, 200 in flight; returns how many the broker refused."""
    refused = 0
    connection = await aiormq.connect(url)
    try:
        channel = await connection.channel(publisher_confirms=True)
        props = Basic.Properties(delivery_mode=2, content_type="application/json", user_id=user)
        for start in range(0, len(items), 200):
            chunk = items[start : start + 200]
            await asyncio.gather(
                *(channel.basic_publish(b, exchange=EXCHANGE, routing_key=k, properties=props)
                  for k, b in chunk)
            )  # fmt: skip
    except aiormq.exceptions.ChannelPreconditionFailed:
        refused += 1
    finally:
        await connection.close()
    return refused


async def run(
    args: argparse.Namespace, db_url: str, amqp_url: str, agent: uuid.UUID, agent_url: str
) -> dict[str, Any]:
    env = {
        **os.environ,
        "FLEETPULSE_DATABASE_URL": db_url,
        "FLEETPULSE_AMQP_URL": amqp_url,
        "FLEETPULSE_AMQP_MANAGEMENT_URL": MANAGEMENT_URL,
        "FLEETPULSE_INGEST_METRICS_PORT": "0",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "fleetpulse",
        "ingest",
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:

        async def consuming() -> bool:
            return (await queue_state(amqp_url, INGEST_QUEUE))[1] > 0

        await wait_for(consuming, 60, "ingest to consume")
        agents = fleet(200)
        start = now()
        warm = [heartbeat_body(agents[i % 200], i, start) for i in range(2000)]
        await publish(amqp_url, warm, None)

        async def drained() -> bool:
            return (await queue_state(amqp_url, INGEST_QUEUE))[0] == 0

        await wait_for(drained, 60, "the warm-up to drain")
        await asyncio.sleep(2)
        before = rss_mib(process.pid)

        name = urlsplit(agent_url).username
        key = routing_key(None, agent)
        peak = before
        sampling = True

        async def sample() -> None:
            nonlocal peak
            while sampling:
                peak = max(peak, rss_mib(process.pid))
                await asyncio.sleep(0.02)

        sampler = asyncio.create_task(sample())
        refused = 0
        for _ in range(args.huge):
            refused += await publish(agent_url, [(key, b"x" * MIB)], name)
        body = b"x" * (BROKER_MAX_MESSAGE_BYTES - 1024)
        flood_started = time.monotonic()
        await publish(agent_url, [(key, body)] * args.messages, name)

        async def settled() -> bool:
            return (await queue_state(amqp_url, DEAD_LETTER_QUEUE))[0] >= args.messages

        await wait_for(settled, 300, "ingest to dead-letter the flood")
        flood_s = time.monotonic() - flood_started
        sampling = False
        await sampler
        after_settled = rss_mib(process.pid)
        await asyncio.sleep(args.settle_s)
        after = rss_mib(process.pid)
        return {
            "bench": "ingest_flood",
            "messages": args.messages,
            "message_bytes": len(body),
            "flood_mib": round(args.messages * len(body) / MIB, 1),
            "huge_1mib_refused_by_broker": f"{refused}/{args.huge}",
            "rss_before_mib": round(before, 1),
            "rss_peak_mib": round(peak, 1),
            "rss_after_settled_mib": round(after_settled, 1),
            f"rss_after_{args.settle_s:g}s_mib": round(after, 1),
            "flood_settled_s": round(flood_s, 2),
        }
    finally:
        process.terminate()
        await asyncio.wait_for(process.wait(), 30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--huge", type=int, default=20)
    parser.add_argument("--settle-s", type=float, default=5.0)
    args = parser.parse_args()
    agent = uuid.uuid4()
    name = f"flood-{agent.hex[:8]}"
    password = uuid.uuid4().hex
    with bench_database() as db_url, bench_vhost() as amqp_url:
        with open(os.devnull, "w") as quiet:
            create_agent_credentials(
                Settings(amqp=AmqpSettings(url=amqp_url, management_url=MANAGEMENT_URL)),
                name=name,
                agent_id=str(agent),
                password=password,
                out=quiet,
            )
        parts = urlsplit(amqp_url)
        agent_url = urlunsplit(
            parts._replace(netloc=f"{name}:{password}@{parts.hostname}:{parts.port}")
        )
        try:
            result = asyncio.run(run(args, db_url, amqp_url, agent, agent_url))
        finally:
            mparts = urlsplit(MANAGEMENT_URL)
            httpx.delete(
                urlunsplit(mparts._replace(netloc=f"{mparts.hostname}:{mparts.port}"))
                + f"/api/users/{quote(name, safe='')}",
                auth=(mparts.username or "guest", mparts.password or "guest"),
            )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
