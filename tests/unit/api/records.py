"""Registry records built in memory for unit tests."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from fleetpulse.store import AgentRecord, GpuState

NOW = datetime(2026, 11, 24, 4, 0, tzinfo=UTC)


def gpu(
    index: int,
    free: float,
    *,
    name: str = "RTX",
    total: float = 24.0,
    error: str | None = None,
    health: str | None = None,
) -> GpuState:
    return GpuState(
        index=index, name=name, vram_total_gb=total, vram_free_gb=free, error=error, health=health
    )


def record(
    hostname: str,
    *,
    gpus: tuple[GpuState, ...] = (),
    cores: int = 8,
    status: str = "online",
    pool: str = "render",
    mem: float = 16.0,
    sampled_ago_s: float | None = 1.0,
    updated: datetime = NOW,
    agent_id: uuid.UUID | None = None,
    **extra: Any,
) -> AgentRecord:
    usable = [g.vram_free_gb for g in gpus if not g.error and g.health in (None, "ok")]
    fields: dict[str, Any] = {
        "agent_id": agent_id or uuid.uuid5(uuid.NAMESPACE_DNS, hostname),
        "hostname": hostname,
        "pool_name": pool,
        "status": status,
        "status_changed_at": NOW,
        "first_seen_at": NOW - timedelta(days=1),
        "last_heartbeat_at": NOW,
        "last_sampled_at": None
        if sampled_ago_s is None
        else NOW - timedelta(seconds=sampled_ago_s),
        "agent_version": "0.1.0",
        "work_state": "idle",
        "cpu_cores": cores,
        "cpu_available_cores": cores,
        "cpu_load_1m": 0.0,
        "mem_total_gb": mem * 2,
        "mem_available_gb": mem,
        "gpu_type": gpus[0].name if gpus else "none",
        "gpu_count": len(gpus),
        "gpu_vram_total_gb": sum(g.vram_total_gb for g in gpus),
        "gpu_vram_available_gb": max(usable, default=0.0),
        "gpus": gpus,
        "errors": (),
        "gpu_probe_failures_total": None,
        "spool_dropped_total": None,
        "updated_at": updated,
    }
    fields.update(extra)
    return AgentRecord(**fields)
