"""Ingest throughput and latency; prints JSON.

1. Drain: a pre-filled queue of N heartbeats, drained by one ingest (stored once, registry
   current), beside the bare consume-and-ack rate of aiormq (the library ingest uses) and
   of aio-pika for the very same messages (one publish fills all three queues), no
   database. Several runs, the consumers taking turns at going first; medians reported,
   and the median of the per-run ratios (ingest against each bare consumer of that run).
2. Latency: publish-to-commit (publisher's wall clock before publish → ingest's wall clock
   after commit and ack) at a fixed rate, with the publisher in its own process on this box.

    python bench/ingest_throughput.py [--messages 20000] [--runs 3] [--rate 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import sys
import time
from collections.abc import Awaitable
from datetime import timedelta
from typing import Any, Final

import aio_pika
import aiormq
import psycopg
import uvloop
from pamqp.commands import Basic

from _common import (
    bench_database,
    bench_vhost,
    fleet,
    heartbeat_body,
    median,
    now,
    percentile,
    stream,
)
from fleetpulse.config import AmqpSettings, DatabaseSettings, IngestSettings, Settings
from fleetpulse.ingest import CommitReport, Ingest, declare_topology
from fleetpulse.messages import EXCHANGE, INGEST_QUEUE

BARE_AIORMQ = "bench.bare.aiormq"
BARE_AIOPIKA = "bench.bare.aiopika"
BARE_BULK = "bench.bare.aiormq-bulk"
QUEUE_ARGS = {"x-queue-type": "quorum"}


async def setup_queues(amqp_url: str) -> None:
    connection = await aiormq.connect(amqp_url)
    try:
        await declare_topology(connection)
        channel = await connection.channel()
        for queue in (BARE_AIORMQ, BARE_AIOPIKA, BARE_BULK):
            await channel.queue_declare(queue, durable=True, arguments=QUEUE_ARGS)
            await channel.queue_bind(queue, EXCHANGE, routing_key="heartbeat.#")
    finally:
        await connection.close()


async def prefill(amqp_url: str, messages: list[tuple[str, bytes]]) -> float:
    connection = await aiormq.connect(amqp_url)
    started = time.perf_counter()
    try:
        channel = await connection.channel(publisher_confirms=True)
        props = Basic.Properties(delivery_mode=2, content_type="application/json")
        for start in range(0, len(messages), 500):
            await asyncio.gather(
                *(
                    channel.basic_publish(
                        body, exchange=EXCHANGE, routing_key=key, properties=props
                    )
                    for key, body in messages[start : start + 500]
                )
            )
    finally:
        await connection.close()
    return time.perf_counter() - started


async def purge(amqp_url: str, queues: tuple[str, ...]) -> None:
    connection = await aiormq.connect(amqp_url)
    try:
        channel = await connection.channel()
        for queue in queues:
            await channel.queue_purge(queue)
    finally:
        await connection.close()


async def depth(amqp_url: str, queue: str) -> int:
    connection = await aiormq.connect(amqp_url)
    try:
        channel = await connection.channel()
        declared = await channel.queue_declare(queue, passive=True)
        return int(declared.message_count or 0)
    finally:
        await connection.close()


class _Countdown:
    """Counts deliveries up to ``total``; the rate is taken from consume to the last one."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.count = 0
        self.done = asyncio.Event()

    def tick(self) -> int:
        self.count += 1
        if self.count == self.total:
            self.done.set()
        return self.count

    async def rate(self, consume: Awaitable[Any]) -> float:
        started = time.perf_counter()
        await consume
        await self.done.wait()
        return self.total / (time.perf_counter() - started)


async def _bare_aiormq(
    amqp_url: str, queue: str, total: int, prefetch: int, ack_every: int
) -> float:
    """Consume and ack ``total`` deliveries; one ack frame per ``ack_every`` of them."""
    connection = await aiormq.connect(amqp_url)
    countdown = _Countdown(total)
    try:
        channel = await connection.channel()
        await channel.basic_qos(prefetch_count=prefetch)

        async def on_message(message: aiormq.abc.DeliveredMessage) -> None:
            assert isinstance(message.delivery, Basic.Deliver)
            count = countdown.tick()
            if count % ack_every == 0 or count == total:
                await channel.basic_ack(message.delivery.delivery_tag or 0, multiple=ack_every > 1)

        return await countdown.rate(channel.basic_consume(queue, on_message))
    finally:
        await connection.close()


async def bare_aiormq(amqp_url: str, total: int, prefetch: int) -> float:
    return await _bare_aiormq(amqp_url, BARE_AIORMQ, total, prefetch, ack_every=1)


async def bare_aiormq_bulk(amqp_url: str, total: int, prefetch: int) -> float:
    """The library's ceiling for this consumer shape: one ack frame per 500 deliveries."""
    return await _bare_aiormq(amqp_url, BARE_BULK, total, prefetch, ack_every=500)


async def bare_aiopika(amqp_url: str, total: int, prefetch: int) -> float:
    connection = await aio_pika.connect(amqp_url)
    countdown = _Countdown(total)
    try:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=prefetch)
        queue = await channel.get_queue(BARE_AIOPIKA)

        async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            await message.ack()
            countdown.tick()

        return await countdown.rate(queue.consume(on_message))
    finally:
        await connection.close()


def settings_for(db_url: str, amqp_url: str, **ingest: Any) -> Settings:
    return Settings(
        amqp=AmqpSettings(url=amqp_url),
        database=DatabaseSettings(url=db_url, pool_min_size=1, pool_max_size=2),
        ingest=IngestSettings(detector_enabled=False, metrics_port=0, **ingest),
    )


def settings_from(args: argparse.Namespace, db_url: str, amqp_url: str) -> Settings:
    """The ingest settings the command line chose."""
    return settings_for(
        db_url,
        amqp_url,
        prefetch=args.prefetch,
        batch_max_messages=args.batch,
        batch_max_age_s=args.batch_age,
        commit_pipeline=args.pipeline,
    )


async def drain_with_ingest(settings: Settings, total: int) -> tuple[float, dict[str, Any]]:
    done = asyncio.Event()
    seen = {"heartbeats": 0, "stored": 0, "duplicate": 0, "batches": 0}

    def on_commit(report: CommitReport) -> None:
        seen["heartbeats"] += len(report.heartbeats)
        seen["stored"] += report.stored
        seen["duplicate"] += report.duplicate
        seen["batches"] += 1
        if seen["heartbeats"] >= total:
            done.set()

    ingest = Ingest(settings, on_commit=on_commit, name="bench-ingest")
    await ingest.db.open()  # connect outside the timed part, as the bare consumers do
    await ingest.db.close()
    async with ingest:
        await ingest.consuming.wait()
        started = time.perf_counter()
        await done.wait()
        elapsed = time.perf_counter() - started
        commit = ingest.metrics.commit_seconds
    seen["commit_seconds_mean"] = round(commit._sum.get() / max(1, seen["batches"]), 4)
    seen["mean_batch"] = round(total / max(1, seen["batches"]), 1)
    return total / elapsed, seen


def verify(db_url: str, total: int, agents: int) -> dict[str, Any]:
    with psycopg.connect(db_url) as conn:
        samples, distinct = conn.execute(
            "SELECT count(*), count(DISTINCT (agent_id, sampled_at)) FROM agent_samples"
        ).fetchone() or (0, 0)
        registry, current = conn.execute(
            "SELECT count(*), count(*) FILTER (WHERE r.last_seq = s.max_seq) FROM agent_registry r"
            " JOIN (SELECT agent_id, max(seq) AS max_seq FROM agent_samples GROUP BY 1) s"
            " USING (agent_id)"
        ).fetchone() or (0, 0)
    ok = samples == distinct == total and registry == current == agents
    return {"samples": samples, "registry_rows": registry, "registry_current": current, "ok": ok}


def reset(db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(
            "TRUNCATE agent_status_events, agent_registry, agent_samples, gpu_samples"
            " RESTART IDENTITY CASCADE"
        )


CONSUMERS: Final = ["bare_aiormq", "bare_aiopika", "bare_aiormq_bulk", "ingest"]
BARE: Final = {
    "bare_aiormq": bare_aiormq,
    "bare_aiopika": bare_aiopika,
    "bare_aiormq_bulk": bare_aiormq_bulk,
}


async def throughput(args: argparse.Namespace, db_url: str, amqp_url: str) -> dict[str, Any]:
    await setup_queues(amqp_url)
    agents = fleet(args.agents)
    messages = list(stream(agents, args.messages, now() - timedelta(days=1)))
    runs: list[dict[str, Any]] = []
    settings = settings_from(args, db_url, amqp_url)
    for run in range(args.runs):
        reset(db_url)
        queues = (INGEST_QUEUE, BARE_AIORMQ, BARE_AIOPIKA, BARE_BULK)
        await purge(amqp_url, queues)
        publish_s = await prefill(amqp_url, messages)
        depths = [await depth(amqp_url, q) for q in queues]
        # Quorum queues may report a few more (broker-side resends under load): the
        # consumers below stop at exactly N either way.
        assert all(d >= args.messages for d in depths), depths
        # The four consumers take turns at going first: right after a prefill the broker is
        # still settling its queues, and a fixed order would hand that cost to one of them.
        rates: dict[str, float] = {}
        seen: dict[str, Any] = {}
        order = CONSUMERS[run % len(CONSUMERS) :] + CONSUMERS[: run % len(CONSUMERS)]
        for consumer in order:
            if consumer == "ingest":
                rates[consumer], seen = await drain_with_ingest(settings, args.messages)
            else:
                rates[consumer] = await BARE[consumer](amqp_url, args.messages, args.prefetch)
        ingest_rate, aiormq_rate = rates["ingest"], rates["bare_aiormq"]
        aiopika_rate, bulk_rate = rates["bare_aiopika"], rates["bare_aiormq_bulk"]
        check = verify(db_url, args.messages, args.agents)
        left = await depth(amqp_url, INGEST_QUEUE)
        runs.append(
            {
                "order": order,
                "ingest_per_s": round(ingest_rate),
                "ingest_vs_bare_aiormq": round(ingest_rate / aiormq_rate, 3),
                "ingest_vs_bare_aiopika": round(ingest_rate / aiopika_rate, 3),
                "bare_aiormq_per_s": round(aiormq_rate),
                "bare_aiopika_per_s": round(aiopika_rate),
                "bare_aiormq_bulk_ack_per_s": round(bulk_rate),
                "prefill_per_s": round(args.messages / publish_s),
                "queue_depths_after_prefill": depths,
                "stored_once_and_registry_current": check["ok"]
                and left == depths[0] - args.messages,
                **{k: v for k, v in seen.items() if k != "heartbeats"},
                **check,
            }
        )
    ingest = median([r["ingest_per_s"] for r in runs])
    bare_aiormq_rate = median([r["bare_aiormq_per_s"] for r in runs])
    bare_aiopika_rate = median([r["bare_aiopika_per_s"] for r in runs])
    bulk = median([r["bare_aiormq_bulk_ack_per_s"] for r in runs])
    return {
        "messages": args.messages,
        "agents": args.agents,
        "runs": runs,
        "median_ingest_per_s": ingest,
        "median_bare_aiormq_per_s": bare_aiormq_rate,
        "median_bare_aiopika_per_s": bare_aiopika_rate,
        "median_bare_aiormq_bulk_ack_per_s": bulk,
        # Paired within each run (same messages, same broker state), then the median.
        "median_ingest_vs_bare_aiormq": round(
            median([r["ingest_vs_bare_aiormq"] for r in runs]), 3
        ),
        "median_ingest_vs_bare_aiopika": round(
            median([r["ingest_vs_bare_aiopika"] for r in runs]), 3
        ),
        "ingest_vs_bare_aiormq": round(ingest / bare_aiormq_rate, 3),
        "ingest_vs_bare_aiormq_bulk_ack": round(ingest / bulk, 3),
        "ingest_vs_bare_aiopika": round(ingest / bare_aiopika_rate, 3),
        "all_runs_correct": all(r["stored_once_and_registry_current"] for r in runs),
    }


def _publisher(amqp_url: str, rate: int, seconds: float, agents: int, ready: Any) -> None:
    """Child process: publish at a fixed rate; sent_at is the wall clock just before publish."""

    async def main() -> None:
        connection = await aiormq.connect(amqp_url)
        channel = await connection.channel(publisher_confirms=True)
        props = Basic.Properties(delivery_mode=2, content_type="application/json")
        fleet_ids = fleet(agents)
        tick_s = 0.01
        per_tick = max(1, round(rate * tick_s))
        total = round(rate * seconds)
        sent = 0
        pending: set[asyncio.Future[Any]] = set()
        ready.set()
        next_tick = time.perf_counter()
        while sent < total:
            for _ in range(min(per_tick, total - sent)):
                agent = fleet_ids[sent % agents]
                key, body = heartbeat_body(agent, 1_000_000 + sent, now())
                task = asyncio.ensure_future(
                    channel.basic_publish(
                        body, exchange=EXCHANGE, routing_key=key, properties=props
                    )
                )
                pending.add(task)
                task.add_done_callback(pending.discard)
                sent += 1
            next_tick += tick_s
            await asyncio.sleep(max(0.0, next_tick - time.perf_counter()))
        if pending:
            await asyncio.gather(*pending)
        await connection.close()

    uvloop.run(main())


async def latency(args: argparse.Namespace, db_url: str, amqp_url: str) -> dict[str, Any]:
    reset(db_url)
    latencies: list[float] = []
    total = round(args.rate * args.seconds)
    done = asyncio.Event()

    def on_commit(report: CommitReport) -> None:
        for heartbeat in report.heartbeats:
            latencies.append(report.committed_at - heartbeat.sent_at.timestamp())
        if len(latencies) >= total:
            done.set()

    settings = settings_from(args, db_url, amqp_url)
    async with Ingest(settings, on_commit=on_commit, name="bench-latency") as ingest:
        await ingest.consuming.wait()
        ctx = multiprocessing.get_context("spawn")
        ready = ctx.Event()
        child = ctx.Process(
            target=_publisher, args=(amqp_url, args.rate, args.seconds, args.agents, ready)
        )
        child.start()
        await asyncio.to_thread(ready.wait, 30)
        await asyncio.wait_for(done.wait(), timeout=args.seconds + 60)
        await asyncio.to_thread(child.join, 30)
    warm = latencies[len(latencies) // 10 :]  # the first tenth is connection warm-up
    return {
        "rate_per_s": args.rate,
        "seconds": args.seconds,
        "messages": len(latencies),
        "p50_ms": round(percentile(warm, 50) * 1000, 1),
        "p99_ms": round(percentile(warm, 99) * 1000, 1),
        "max_ms": round(max(warm) * 1000, 1),
        "note": "publish-to-commit: publisher wall clock before basic_publish to ingest wall"
        " clock after commit and ack; publisher in its own process; first 10% dropped",
    }


async def main(args: argparse.Namespace) -> dict[str, Any]:
    with bench_database() as db_url, bench_vhost() as amqp_url:
        result: dict[str, Any] = {
            "benchmark": "ingest_throughput",
            "cpus": os.cpu_count(),
            "python": sys.version.split()[0],
            "event_loop": "uvloop",
            "settings": {
                "prefetch": args.prefetch,
                "batch_max_messages": args.batch,
                "batch_max_age_s": args.batch_age,
                "write_method": "copy",
                "commit_pipeline": args.pipeline,
            },
        }
        result["drain"] = await throughput(args, db_url, amqp_url)
        if args.rate > 0:
            latency_runs = []
            for _ in range(args.latency_runs):
                latency_runs.append(await latency(args, db_url, amqp_url))
            result["latency_runs"] = latency_runs
            result["latency"] = {
                "median_p50_ms": median([r["p50_ms"] for r in latency_runs]),
                "median_p99_ms": median([r["p99_ms"] for r in latency_runs]),
            }
        return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--agents", type=int, default=1_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--prefetch", type=int, default=2_000)
    parser.add_argument("--batch", type=int, default=1_000)
    parser.add_argument("--batch-age", type=float, default=0.05)
    parser.add_argument("--rate", type=int, default=1_000)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--latency-runs", type=int, default=3)
    parser.add_argument("--pipeline", type=int, default=2, help="batches written at once")
    arguments = parser.parse_args()
    print(json.dumps(uvloop.run(main(arguments)), indent=2))
