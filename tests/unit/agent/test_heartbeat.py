"""Building heartbeats: pure functions of contributions and a clock reading."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from fleetpulse.agent import (
    Contribution,
    HostReading,
    Identity,
    build_goodbye,
    build_heartbeat,
    resource_metrics,
    restamp,
)
from fleetpulse.errors import MessageError
from fleetpulse.messages import (
    AgentStats,
    GpuMetrics,
    Heartbeat,
    Presence,
    WorkStatus,
    decode,
    encode,
)

HOST = HostReading(
    cpu_load_1m=2.7,
    cpu_load_5m=1.0,
    cpu_load_15m=0.5,
    cpu_cores=16,
    mem_total_gb=64.0,
    mem_available_gb=40.2,
)
T0 = datetime(2026, 11, 24, 4, 0, tzinfo=UTC)
IDENTITY = Identity(agent_id=uuid.uuid4(), hostname="ws-17", pool="render")


def gpu(index: int, free: float, total: float = 24.0, error: str | None = None) -> GpuMetrics:
    return GpuMetrics(
        index=index,
        name=f"GPU {index}",
        vram_total_gb=0.0 if error else total,
        vram_free_gb=0.0 if error else free,
        error=error,
    )


def test_available_cores_are_the_floor_of_cores_minus_load() -> None:
    metrics = resource_metrics([Contribution(host=HOST)])
    assert metrics.cpu_available_cores == 13
    assert metrics.gpu_type == "none"
    assert metrics.gpu_count == 0
    assert metrics.errors == []


def test_vram_available_is_the_most_free_on_one_healthy_gpu() -> None:
    gpus = (gpu(0, 5.0), gpu(1, 0.0, error="gpu 1: GPU is lost"), gpu(2, 20.0))
    metrics = resource_metrics([Contribution(host=HOST), Contribution(gpus=gpus)])
    assert metrics.gpu_vram_available_gb == 20.0
    assert metrics.gpu_vram_total_gb == 48.0
    assert metrics.gpu_count == 2
    assert metrics.gpu_type == "GPU 2"
    assert [g.index for g in metrics.gpus] == [0, 1, 2]
    assert metrics.errors == ["gpu 1: GPU is lost"]


def test_failed_gpu_probe_means_none_and_zeros_with_the_reason() -> None:
    failed = Contribution(gpus=(), errors=("gpu: timeout after 2s",), gpu_failed=True)
    metrics = resource_metrics([Contribution(host=HOST), failed])
    assert (metrics.gpu_type, metrics.gpu_count, metrics.gpu_vram_available_gb) == ("none", 0, 0)
    assert metrics.cpu_cores == 16
    assert metrics.errors == ["gpu: timeout after 2s"]


def test_missing_host_metrics_are_zeros_and_an_error() -> None:
    metrics = resource_metrics([Contribution(errors=("host: OSError: boom",))])
    assert metrics.cpu_cores == 0
    assert metrics.mem_total_gb == 0.0
    assert metrics.errors == ["host: OSError: boom"]
    assert resource_metrics([]).errors == ["host: no host metrics"]


def test_errors_are_capped_to_the_contract() -> None:
    many = Contribution(host=HOST, errors=tuple("x" * 2000 for _ in range(100)))
    metrics = resource_metrics([many])
    assert len(metrics.errors) == 64
    assert all(len(e) == 1024 for e in metrics.errors)


def test_heartbeat_round_trips_and_restamp_only_touches_sent_at() -> None:
    beat = build_heartbeat(IDENTITY, seq=7, sampled_at=T0, metrics=resource_metrics([]))
    assert beat.sent_at == beat.sampled_at == T0
    later = T0 + timedelta(seconds=90)
    body, key = restamp(encode(beat), later)
    again = decode(body)
    assert isinstance(again, Heartbeat)
    assert again.sent_at == later
    assert again.sampled_at == T0
    assert again.seq == 7
    assert key == f"heartbeat.render.{IDENTITY.agent_id}"
    assert IDENTITY.routing_key == key


def test_goodbye_and_default_pool() -> None:
    identity = Identity(agent_id=uuid.uuid4(), hostname="ws-1")
    goodbye = build_goodbye(identity, seq=3, sent_at=T0)
    body, key = restamp(encode(goodbye), T0)
    assert decode(body) == goodbye
    assert key == f"heartbeat.default.{identity.agent_id}"


def test_restamp_refuses_a_corrupt_body() -> None:
    with pytest.raises(MessageError):
        restamp(b"{not json", T0)


def test_without_host_metrics_every_host_figure_is_zero() -> None:
    metrics = resource_metrics([Contribution(gpus=(gpu(0, 5.0),))])
    host = (metrics.cpu_load_1m, metrics.cpu_load_5m, metrics.cpu_load_15m, metrics.cpu_cores)
    assert host == (0.0, 0.0, 0.0, 0)
    assert (metrics.cpu_available_cores, metrics.mem_total_gb, metrics.mem_available_gb) == (
        0,
        0.0,
        0.0,
    )
    assert metrics.gpu_count == 1
    assert metrics.errors == ["host: no host metrics"]


def test_a_healthy_gpu_without_a_name_is_of_type_unknown() -> None:
    nameless = GpuMetrics(index=0, vram_total_gb=8.0, vram_free_gb=8.0)
    metrics = resource_metrics([Contribution(host=HOST, gpus=(nameless,))])
    assert metrics.gpu_type == "unknown"


@pytest.mark.parametrize(
    ("totals", "expected"),
    [((8.25, 8.0), 16.25), ((7.99991, 8.0), 16.0), ((0.1, 0.2), 0.3), ((11.5,), 11.5)],
)
def test_total_vram_sums_the_healthy_gpus_to_the_megabyte(
    totals: tuple[float, ...], expected: float
) -> None:
    gpus = [gpu(i, 0.0, total) for i, total in enumerate(totals)]
    gpus.append(gpu(len(totals), 0.0, error="gpu: GPU is lost"))
    metrics = resource_metrics([Contribution(host=HOST, gpus=tuple(gpus))])
    assert metrics.gpu_vram_total_gb == expected
    assert isinstance(metrics.gpu_vram_total_gb, float)


def test_a_heartbeat_carries_the_agents_stats_and_work_status() -> None:
    stats = AgentStats(collect_ms=2.5, spool_depth=3, reconnects_total=1)
    busy = WorkStatus(state="busy", running_jobs=2)
    metrics = resource_metrics([Contribution(host=HOST)])
    beat = build_heartbeat(
        IDENTITY, seq=1, sampled_at=T0, metrics=metrics, stats=stats, work_status=busy
    )
    assert decode(encode(beat)) == beat
    assert (beat.agent_stats, beat.work_status) == (stats, busy)
    assert beat.resource_metrics == metrics
    assert (beat.agent_id, beat.hostname, beat.pool) == (IDENTITY.agent_id, "ws-17", "render")
    plain = build_heartbeat(IDENTITY, seq=2, sampled_at=T0, metrics=metrics)
    assert (plain.agent_stats, plain.work_status) == (None, WorkStatus(state="idle"))


def test_a_goodbye_names_the_agents_pool() -> None:
    goodbye = build_goodbye(IDENTITY, seq=9, sent_at=T0)
    assert (goodbye.pool, goodbye.hostname, goodbye.seq) == ("render", "ws-17", 9)
    assert restamp(encode(goodbye), T0)[1] == f"heartbeat.render.{IDENTITY.agent_id}"


def test_a_heartbeat_carries_the_owners_presence_when_known() -> None:
    away = Presence(user_idle_s=900.0, locked=True, source="logind", offered=True)
    metrics = resource_metrics([Contribution(host=HOST)])
    beat = build_heartbeat(IDENTITY, seq=1, sampled_at=T0, metrics=metrics, presence=away)
    assert beat.presence == away
    assert decode(encode(beat)) == beat
    assert build_heartbeat(IDENTITY, seq=2, sampled_at=T0, metrics=metrics).presence is None
