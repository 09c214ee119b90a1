"""Ingest notices a deleted, re-declared or unbound heartbeat exchange and repairs it, loudly
(issue 11, part 4): error log, ``topology_repairs`` counter, ``/readyz`` failing."""

from __future__ import annotations

import asyncio
import logging
import uuid
from urllib.parse import quote

import aiormq
import httpx
import pytest

from fleetpulse.ingest import Ingest, IngestMetrics
from fleetpulse.messages import EXCHANGE, INGEST_QUEUE
from tests.fixtures.ingest import (
    heartbeat,
    instant_sleep,
    publish,
    running_ingest,
    settings_for,
    wait_until,
)

pytestmark = pytest.mark.slow(6)


def _bound(rabbit_admin, vhost: str) -> bool:
    vh = quote(vhost, safe="")
    bindings = rabbit_admin.client.get(f"/api/queues/{vh}/{INGEST_QUEUE}/bindings").json()
    return any(b["source"] == EXCHANGE and b["routing_key"] == "heartbeat.#" for b in bindings)


def _exchange(rabbit_admin, vhost: str) -> dict[str, object]:
    vh = quote(vhost, safe="")
    response = rabbit_admin.client.get(f"/api/exchanges/{vh}/{EXCHANGE}")
    return response.json() if response.status_code == 200 else {}


async def _replace_exchange(amqp_url: str, exchange_type: str | None) -> None:
    """What an identity with configure permission could do: delete the exchange (and so the
    ingest queue's binding), and perhaps declare it again with other properties."""
    connection = await aiormq.connect(amqp_url)
    try:
        channel = await connection.channel()
        await channel.exchange_delete(EXCHANGE)
        if exchange_type is not None:
            await channel.exchange_declare(
                exchange=EXCHANGE, exchange_type=exchange_type, durable=False
            )
    finally:
        await connection.close()


@pytest.mark.parametrize(
    ("exchange_type", "problem"), [(None, "exchange_missing"), ("fanout", "exchange_mismatch")]
)
async def test_a_deleted_or_redeclared_exchange_is_repaired(
    db_url: str,
    amqp_url: str,
    rabbit_admin,
    amqp_vhost: str,
    caplog: pytest.LogCaptureFixture,
    exchange_type: str | None,
    problem: str,
) -> None:
    agent = uuid.uuid4()
    caplog.set_level(logging.ERROR, logger="fleetpulse")
    # The check runs when the test says (a long interval), so delete-then-declare is seen as
    # one change; the watch loop's own checks are covered by the binding test below.
    settings = settings_for(db_url, amqp_url, queue_depth_interval_s=600.0)
    async with running_ingest(settings) as (ingest, rec, _d):
        await _replace_exchange(amqp_url, exchange_type)
        report = await ingest.check_topology()
        assert report is not None
        assert report.repaired == [problem]
        assert ingest.metrics.topology_repairs.labels(problem)._value.get() == 1
        assert _bound(rabbit_admin, amqp_vhost)
        exchange = _exchange(rabbit_admin, amqp_vhost)
        assert (exchange["type"], exchange["durable"]) == ("topic", True)
        await publish(amqp_url, [heartbeat(agent, 1)])
        await wait_until(lambda: rec.heartbeats == 1)
    assert any(r.levelno == logging.ERROR and EXCHANGE in r.getMessage() for r in caplog.records)


async def test_a_deleted_binding_is_restored(
    db_url: str, amqp_url: str, rabbit_admin, amqp_vhost: str
) -> None:
    agent = uuid.uuid4()
    vh = quote(amqp_vhost, safe="")
    async with running_ingest(settings_for(db_url, amqp_url)) as (_, rec, _d):
        props = quote("heartbeat.#", safe="")
        rabbit_admin.client.delete(
            f"/api/bindings/{vh}/e/{EXCHANGE}/q/{INGEST_QUEUE}/{props}"
        ).raise_for_status()
        assert not _bound(rabbit_admin, amqp_vhost)
        await wait_until(lambda: _bound(rabbit_admin, amqp_vhost), what="the binding back")
        await publish(amqp_url, [heartbeat(agent, 1)])
        await wait_until(lambda: rec.heartbeats == 1)


async def test_ingest_starts_over_an_exchange_declared_with_other_properties(
    db_url: str, amqp_url: str, rabbit_admin, amqp_vhost: str
) -> None:
    """Before: a restarted ingest looped on PRECONDITION_FAILED and never consumed again."""
    async with running_ingest(settings_for(db_url, amqp_url)):
        pass
    await _replace_exchange(amqp_url, "fanout")
    agent = uuid.uuid4()
    async with running_ingest(settings_for(db_url, amqp_url)) as (ingest, rec, _d):
        assert ingest.metrics.topology_repairs.labels("exchange_mismatch")._value.get() == 1
        await publish(amqp_url, [heartbeat(agent, 1)])
        await wait_until(lambda: rec.heartbeats == 1)
    assert _exchange(rabbit_admin, amqp_vhost)["type"] == "topic"


async def test_readyz_fails_while_the_topology_is_broken(db_url: str, amqp_url: str) -> None:
    from fleetpulse.ingest.endpoint import serve_endpoint

    # Checks only when the test says so (the interval is long), so each state can be seen.
    settings = settings_for(db_url, amqp_url, queue_depth_interval_s=600.0)
    metrics = IngestMetrics()
    ingest = Ingest(settings, metrics=metrics, sleep=instant_sleep)
    server, thread = serve_endpoint("127.0.0.1", 0, metrics.registry, ingest.readiness)
    base = f"http://127.0.0.1:{server.server_port}"
    try:
        async with httpx.AsyncClient(base_url=base) as client:
            assert (await client.get("/readyz")).status_code == 503  # not started
            async with ingest:
                await asyncio.wait_for(ingest.consuming.wait(), 10)
                await wait_until(lambda: metrics.topology_ok._value.get() == 1)
                ready = await client.get("/readyz")
                assert (ready.status_code, ready.text) == (200, "ready\n")
                await _replace_exchange(amqp_url, None)
                report = await ingest.check_topology()
                assert report is not None
                assert report.repaired == ["exchange_missing"]
                broken = await client.get("/readyz")
                assert broken.status_code == 503
                assert "exchange_missing" in broken.text
                scrape = (await client.get("/metrics")).text
                assert (
                    'fleetpulse_ingest_topology_repairs_total{problem="exchange_missing"} 1.0'
                    in scrape
                )
                assert (await client.get("/healthz")).status_code == 200
                await ingest.check_topology()
                assert (await client.get("/readyz")).status_code == 200
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
