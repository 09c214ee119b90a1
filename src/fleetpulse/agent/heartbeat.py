"""Building heartbeats: pure functions of the collectors' contributions and a clock reading."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime

import msgspec

from fleetpulse import __version__
from fleetpulse.agent.collectors import Contribution, HostReading
from fleetpulse.gpus import usable_gpus
from fleetpulse.messages import (
    SCHEMA_VERSION,
    AgentStats,
    Goodbye,
    GpuMetrics,
    Heartbeat,
    Message,
    Presence,
    ResourceMetrics,
    WorkStatus,
    available_cores,
    decode,
    encode,
    routing_key,
)

__all__ = [
    "Identity",
    "build_goodbye",
    "build_heartbeat",
    "resource_metrics",
    "restamp",
]

MAX_ERRORS = 64


class Identity(msgspec.Struct, frozen=True, kw_only=True):
    agent_id: uuid.UUID
    hostname: str
    pool: str | None = None
    agent_version: str = __version__
    # This run of the agent: a new one at every start (spooled samples keep theirs).
    incarnation: uuid.UUID = msgspec.field(default_factory=uuid.uuid4)

    @property
    def routing_key(self) -> str:
        return routing_key(self.pool, self.agent_id)


def resource_metrics(contributions: Iterable[Contribution]) -> ResourceMetrics:
    """Merge contributions. ``gpu_vram_available_gb`` is the most free VRAM on one healthy
    GPU; failed devices are listed with their error but count for nothing, and degraded ones
    (``health``) are listed but left out of the summary (the API can include them)."""
    host: HostReading | None = None
    gpus: list[GpuMetrics] = []
    errors: list[str] = []
    for part in contributions:
        host = part.host or host
        gpus.extend(part.gpus or ())
        errors.extend(part.errors)
    if host is None:
        host = HostReading(
            cpu_load_1m=0.0,
            cpu_load_5m=0.0,
            cpu_load_15m=0.0,
            cpu_cores=0,
            mem_total_gb=0.0,
            mem_available_gb=0.0,
        )
        if not any(e.startswith("host:") for e in errors):
            errors.append("host: no host metrics")
    errors.extend(g.error for g in gpus if g.error)
    healthy = sorted(usable_gpus(gpus), key=lambda g: (-g.vram_free_gb, g.index))
    gpus.sort(key=lambda g: g.index)
    return ResourceMetrics(
        cpu_load_1m=host.cpu_load_1m,
        cpu_load_5m=host.cpu_load_5m,
        cpu_load_15m=host.cpu_load_15m,
        cpu_cores=host.cpu_cores,
        cpu_available_cores=available_cores(host.cpu_cores, host.cpu_load_1m),
        mem_total_gb=host.mem_total_gb,
        mem_available_gb=min(host.mem_available_gb, host.mem_total_gb),
        gpu_type=(healthy[0].name or "unknown") if healthy else "none",
        gpu_count=len(healthy),
        gpu_vram_total_gb=round(sum(g.vram_total_gb for g in healthy), 3),
        gpu_vram_available_gb=healthy[0].vram_free_gb if healthy else 0.0,
        gpus=gpus,
        errors=[e[:1024] for e in errors[:MAX_ERRORS]],
    )


def build_heartbeat(
    identity: Identity,
    *,
    seq: int,
    sampled_at: datetime,
    metrics: ResourceMetrics,
    stats: AgentStats | None = None,
    work_status: WorkStatus | None = None,
    presence: Presence | None = None,
) -> Heartbeat:
    """``sent_at`` starts equal to ``sampled_at``; :func:`restamp` sets it when it leaves."""
    return Heartbeat(
        schema_version=SCHEMA_VERSION,
        agent_id=identity.agent_id,
        seq=seq,
        sampled_at=sampled_at,
        sent_at=sampled_at,
        hostname=identity.hostname,
        pool=identity.pool,
        agent_version=identity.agent_version,
        resource_metrics=metrics,
        work_status=work_status or WorkStatus(),
        agent_stats=stats,
        presence=presence,
        incarnation=identity.incarnation,
    )


def build_goodbye(identity: Identity, *, seq: int, sent_at: datetime) -> Goodbye:
    return Goodbye(
        schema_version=SCHEMA_VERSION,
        agent_id=identity.agent_id,
        seq=seq,
        sent_at=sent_at,
        hostname=identity.hostname,
        pool=identity.pool,
        agent_version=identity.agent_version,
        incarnation=identity.incarnation,
    )


def restamp(body: bytes, sent_at: datetime) -> tuple[bytes, str]:
    """A spooled body with ``sent_at`` set to now, and its routing key."""
    message: Message = decode(body)
    message = msgspec.structs.replace(message, sent_at=sent_at)
    return encode(message), routing_key(message.pool, message.agent_id)
