"""Task 2 of the seed: registration, metric persistence, heartbeat handling (real broker + DB)."""

from __future__ import annotations

import json
import logging
import uuid
from datetime import timedelta

import pytest

from fleetpulse.agent import FakeClock
from tests.fixtures.ingest import (
    PROFILES,
    T0,
    gpu,
    heartbeat,
    publish,
    query,
    queue_messages,
    resources,
    running_ingest,
    scalar,
    settings_for,
    wait_until,
)

pytestmark = pytest.mark.slow(5)


async def test_orchestrator_auto_registers_new_agent_on_heartbeat(
    db_url: str, amqp_url: str, clock: FakeClock
) -> None:
    agent = uuid.uuid4()
    async with running_ingest(settings_for(db_url, amqp_url), clock=clock) as (_, rec, _d):
        assert scalar(db_url, "SELECT count(*) FROM agent_registry") == 0
        await publish(amqp_url, [heartbeat(agent, 1)])
        await wait_until(lambda: rec.heartbeats == 1)
    rows = query(db_url, "SELECT agent_id, status FROM agent_registry")
    assert rows == [(agent, "online")]


async def test_orchestrator_creates_agent_registry_record(
    db_url: str, amqp_url: str, clock: FakeClock
) -> None:
    agent = uuid.uuid4()
    async with running_ingest(settings_for(db_url, amqp_url), clock=clock) as (_, rec, _d):
        await publish(amqp_url, [heartbeat(agent, 7, hostname="ws-42", state="busy")])
        await wait_until(lambda: rec.heartbeats == 1)
    row = query(
        db_url,
        "SELECT hostname, agent_version, first_seen_at, last_heartbeat_at, last_sampled_at,"
        " last_seq, work_state, status_changed_at FROM agent_registry WHERE agent_id = %s",
        agent,
    )[0]
    assert row[0:2] == ("ws-42", "0.1.0")
    # Receive time (the ingest clock), never the agent's sampled_at, for liveness.
    assert row[2] == row[3] == row[7] == clock.now()
    assert row[4] == T0 + timedelta(seconds=7)
    assert row[5:7] == (7, "busy")


async def test_agent_id_preserved_across_heartbeats(
    db_url: str, amqp_url: str, clock: FakeClock
) -> None:
    agent = uuid.uuid4()
    async with running_ingest(settings_for(db_url, amqp_url), clock=clock) as (_, rec, _d):
        await publish(amqp_url, [heartbeat(agent, i) for i in range(1, 6)])
        await wait_until(lambda: rec.heartbeats == 5)
    assert query(db_url, "SELECT agent_id, last_seq FROM agent_registry") == [(agent, 5)]
    assert scalar(db_url, "SELECT count(*) FROM agent_samples WHERE agent_id = %s", agent) == 5
    assert scalar(db_url, "SELECT count(*) FROM agent_status_events") == 1


@pytest.mark.parametrize(
    ("declared", "profile", "expected"),
    [("render", "high", "render"), (None, "high", "gpu"), (None, "cpu", "cpu")],
)
async def test_pool_name_assigned_on_registration(
    db_url: str, amqp_url: str, declared: str | None, profile: str, expected: str
) -> None:
    agent = uuid.uuid4()
    async with running_ingest(settings_for(db_url, amqp_url)) as (_, rec, _d):
        await publish(amqp_url, [heartbeat(agent, 1, pool=declared, metrics=PROFILES[profile])])
        await wait_until(lambda: rec.heartbeats == 1)
    assert scalar(db_url, "SELECT pool_name FROM agent_registry") == expected
    assert scalar(db_url, "SELECT pool_name FROM agent_samples") == expected


async def test_new_agent_status_set_online_with_first_heartbeat_event(
    db_url: str, amqp_url: str, clock: FakeClock
) -> None:
    agent = uuid.uuid4()
    async with running_ingest(settings_for(db_url, amqp_url), clock=clock) as (_, rec, _d):
        await publish(amqp_url, [heartbeat(agent, 1), heartbeat(agent, 2)])
        await wait_until(lambda: rec.heartbeats == 2)
    events = query(
        db_url, "SELECT agent_id, at, from_status, to_status, reason FROM agent_status_events"
    )
    assert events == [(agent, clock.now(), None, "online", "first_heartbeat")]


async def test_orchestrator_saves_resource_metrics_to_db(db_url: str, amqp_url: str) -> None:
    agent = uuid.uuid4()
    metrics = resources(gpus=[gpu(0, 24.0, 20.5), gpu(1, 12.0, 6.0, name="NVIDIA RTX A2000")])
    async with running_ingest(settings_for(db_url, amqp_url)) as (_, rec, _d):
        await publish(amqp_url, [heartbeat(agent, 1, metrics=metrics)])
        await wait_until(lambda: rec.heartbeats == 1)
    stored = scalar(db_url, "SELECT resource_metrics FROM agent_registry")
    assert stored["cpu_cores"] == 16
    assert [g["index"] for g in stored["gpus"]] == [0, 1]
    assert stored["gpus"][1]["vram_free_gb"] == 6.0
    assert stored == json.loads(json.dumps(stored))  # plain JSON, readable by the API


async def test_metrics_include_cpu_load_and_cores(db_url: str, amqp_url: str) -> None:
    agent = uuid.uuid4()
    async with running_ingest(settings_for(db_url, amqp_url)) as (_, rec, _d):
        await publish(amqp_url, [heartbeat(agent, 1, metrics=resources(cores=32, load=5.5))])
        await wait_until(lambda: rec.heartbeats == 1)
    reg = query(db_url, "SELECT cpu_cores, cpu_available_cores, cpu_load_1m FROM agent_registry")
    assert reg == [(32, 26, 5.5)]
    sample = query(
        db_url,
        "SELECT cpu_load_1m, cpu_load_5m, cpu_load_15m, cpu_cores, cpu_available_cores,"
        " mem_total_gb, mem_available_gb FROM agent_samples",
    )
    assert sample == [(5.5, 5.5, 5.5, 32, 26, 64.0, 40.2)]


async def test_metrics_include_gpu_vram_and_type_and_failed_gpus(
    db_url: str, amqp_url: str
) -> None:
    agent = uuid.uuid4()
    broken = gpu(1, 0.0, 0.0, name="", error="nvml: GPU is lost", util_pct=None)
    metrics = resources(gpus=[gpu(0, 24.0, 20.5), broken])
    async with running_ingest(settings_for(db_url, amqp_url)) as (_, rec, _d):
        await publish(amqp_url, [heartbeat(agent, 1, metrics=metrics)])
        await wait_until(lambda: rec.heartbeats == 1)
    reg = query(
        db_url,
        "SELECT gpu_type, gpu_count, gpu_vram_total_gb, gpu_vram_available_gb FROM agent_registry",
    )
    assert reg == [("NVIDIA GeForce RTX 4090", 1, 24.0, 20.5)]  # a failed GPU is not capacity
    gpus = query(
        db_url,
        "SELECT gpu_index, gpu_uuid, vram_free_gb, util_pct, error FROM gpu_samples ORDER BY 1",
    )
    assert gpus == [
        (0, "GPU-0000", 20.5, 3.0, None),
        (1, "GPU-0001", 0.0, None, "nvml: GPU is lost"),
    ]


async def test_metrics_updated_on_each_heartbeat(db_url: str, amqp_url: str) -> None:
    agent = uuid.uuid4()
    async with running_ingest(settings_for(db_url, amqp_url)) as (_, rec, _d):
        await publish(amqp_url, [heartbeat(agent, 1, metrics=resources(mem_free=40.0))])
        await wait_until(lambda: rec.heartbeats == 1)
        assert scalar(db_url, "SELECT mem_available_gb FROM agent_registry") == 40.0
        await publish(amqp_url, [heartbeat(agent, 2, metrics=resources(mem_free=12.5))])
        await wait_until(lambda: rec.heartbeats == 2)
    assert scalar(db_url, "SELECT mem_available_gb FROM agent_registry") == 12.5
    assert (
        scalar(db_url, "SELECT resource_metrics->>'mem_available_gb' FROM agent_registry") == "12.5"
    )


async def test_empty_metrics_handled_gracefully(db_url: str, amqp_url: str) -> None:
    """No GPU and the probe failed: gpu_type none, zeros, the reason kept with the sample."""
    agent = uuid.uuid4()
    metrics = resources(errors=["gpu: timeout after 2.0s", 'quote " and \\ backslash'])
    async with running_ingest(settings_for(db_url, amqp_url)) as (_, rec, _d):
        await publish(amqp_url, [heartbeat(agent, 1, metrics=metrics)])
        await wait_until(lambda: rec.heartbeats == 1)
    assert query(
        db_url, "SELECT gpu_type, gpu_count, gpu_vram_available_gb FROM agent_registry"
    ) == [("none", 0, 0.0)]
    assert scalar(db_url, "SELECT errors FROM agent_samples") == [
        "gpu: timeout after 2.0s",
        'quote " and \\ backslash',
    ]
    assert scalar(db_url, "SELECT count(*) FROM gpu_samples") == 0
    assert scalar(db_url, "SELECT agent_stats FROM agent_registry") is None


async def test_orchestrator_updates_last_heartbeat_at_from_receive_time(
    db_url: str, amqp_url: str, clock: FakeClock
) -> None:
    agent = uuid.uuid4()
    async with running_ingest(settings_for(db_url, amqp_url), clock=clock) as (_, rec, _d):
        await publish(amqp_url, [heartbeat(agent, 1)])
        await wait_until(lambda: rec.heartbeats == 1)
        first = clock.now()
        clock.advance_nowait(30)
        await publish(amqp_url, [heartbeat(agent, 2)])
        await wait_until(lambda: rec.heartbeats == 2)
    row = query(db_url, "SELECT first_seen_at, last_heartbeat_at FROM agent_registry")[0]
    assert row == (first, first + timedelta(seconds=30))
    received = [r[0] for r in query(db_url, "SELECT received_at FROM agent_samples ORDER BY seq")]
    assert received == [first, first + timedelta(seconds=30)]


async def test_multiple_agents_heartbeats_processed_independently(
    db_url: str, amqp_url: str
) -> None:
    agents = [uuid.uuid4() for _ in range(3)]
    interleaved = [
        heartbeat(a, seq, hostname=f"ws-{n}") for seq in range(1, 4) for n, a in enumerate(agents)
    ]
    async with running_ingest(settings_for(db_url, amqp_url)) as (_, rec, _d):
        await publish(amqp_url, interleaved)
        await wait_until(lambda: rec.heartbeats == 9)
    rows = query(
        db_url, "SELECT agent_id, hostname, last_seq FROM agent_registry ORDER BY hostname"
    )
    assert rows == [(a, f"ws-{n}", 3) for n, a in enumerate(agents)]
    assert scalar(db_url, "SELECT count(*) FROM agent_samples") == 9


async def test_corrupted_heartbeat_message_logged_not_crashed(
    db_url: str, amqp_url: str, rabbit_admin, amqp_vhost: str, caplog: pytest.LogCaptureFixture
) -> None:
    agent = uuid.uuid4()
    caplog.set_level(logging.WARNING, logger="fleetpulse")
    async with running_ingest(settings_for(db_url, amqp_url)) as (ingest, rec, _d):
        await publish(amqp_url, [b'{"schema_version": 1, "message_type": "heartbeat", "agent_'])
        await publish(amqp_url, [heartbeat(agent, 1)])
        await wait_until(lambda: rec.heartbeats == 1 and len(rec.rejected) == 1)
        assert ingest.state == "running"
        invalid = ingest.metrics.messages.labels("invalid")._value.get()
        assert invalid == 1
    assert scalar(db_url, "SELECT count(*) FROM agent_samples") == 1
    assert any("malformed" in r.getMessage() for r in caplog.records)
    dead = await_dead_letters(rabbit_admin, amqp_vhost, 1)
    assert dead[0]["properties"]["headers"]["x-fleetpulse-reason"] == "malformed"


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"x" * (64 * 1024 + 1), "oversize"),
        (b'{"schema_version": 2, "message_type": "heartbeat"}', "schema_version"),
        (b"\xff\xfe not json", "malformed"),
        (b'{"schema_version": 1, "message_type": "heartbeat", "agent_id": "nope"}', "invalid"),
    ],
)
async def test_invalid_messages_dead_lettered_with_reason(
    db_url: str, amqp_url: str, rabbit_admin, amqp_vhost: str, body: bytes, reason: str
) -> None:
    async with running_ingest(settings_for(db_url, amqp_url)) as (ingest, rec, _d):
        await publish(amqp_url, [body])
        await wait_until(lambda: len(rec.rejected) == 1)
        assert ingest.metrics.dead_letters.labels(reason)._value.get() == 1
    dead = await_dead_letters(rabbit_admin, amqp_vhost, 1)
    assert dead[0]["properties"]["headers"]["x-fleetpulse-reason"] == reason
    assert dead[0]["payload_bytes"] == len(body)
    assert await queue_messages(amqp_url, "fleetpulse.ingest") == 0  # acked, not requeued


def await_dead_letters(rabbit_admin, vhost: str, count: int) -> list[dict]:
    from urllib.parse import quote

    response = rabbit_admin.client.post(
        f"/api/queues/{quote(vhost, safe='')}/fleetpulse.dead/get",
        json={
            "count": count + 5,
            "ackmode": "ack_requeue_true",
            "encoding": "auto",
            "truncate": 100,
        },
    )
    response.raise_for_status()
    messages = response.json()
    assert len(messages) == count, messages
    return messages


@pytest.mark.parametrize(
    ("content_type", "content_encoding", "reason"),
    [
        ("text/plain", None, "content_type"),
        ("application/xml", None, "content_type"),
        ("application/json", "gzip", "content_encoding"),
        (None, "br", "content_encoding"),
    ],
)
async def test_a_body_said_to_be_other_than_plain_json_is_refused(
    db_url: str,
    amqp_url: str,
    rabbit_admin,
    amqp_vhost: str,
    content_type: str | None,
    content_encoding: str | None,
    reason: str,
) -> None:
    """Strict: a heartbeat whose properties say it is not plain JSON is dead-lettered with
    the reason, never read as JSON on a guess (the body here is valid JSON all the same)."""
    agent = uuid.uuid4()
    async with running_ingest(settings_for(db_url, amqp_url)) as (_, rec, _d):
        await publish(
            amqp_url,
            [heartbeat(agent, 1)],
            content_type=content_type,
            content_encoding=content_encoding,
        )
        await wait_until(lambda: len(rec.rejected) == 1)
        # JSON with a charset, or no content_type at all (minimal publishers), is JSON
        await publish(
            amqp_url, [heartbeat(agent, 2)], content_type="application/json; charset=utf-8"
        )
        await publish(
            amqp_url, [heartbeat(agent, 3)], content_type=None, content_encoding="identity"
        )
        await wait_until(lambda: rec.heartbeats == 2)
    assert scalar(db_url, "SELECT array_agg(seq ORDER BY seq) FROM agent_samples") == [2, 3]
    dead = await_dead_letters(rabbit_admin, amqp_vhost, 1)
    assert dead[0]["properties"]["headers"]["x-fleetpulse-reason"] == reason
