"""The pure core of ingest: deliveries in, rows and verdicts out. No I/O, no clock.

:func:`decode_batch` validates bodies; :func:`plan_batch` is given the registry state of
the batch's agents (locked by the store) and decides, message by message, who may write
(the broker identity bound to each agent), which rows to store and which status
transitions to record.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

import msgspec

from fleetpulse.errors import MessageError
from fleetpulse.messages import Goodbye, Heartbeat, Message, decode
from fleetpulse.store import (
    AgentState,
    BatchWrite,
    EventRow,
    GoodbyeRow,
    GpuRow,
    RegistryRow,
    SampleRow,
)

__all__ = [
    "Decoded",
    "Delivery",
    "Plan",
    "Rejection",
    "decode_batch",
    "pg_text_array",
    "plan_batch",
]

_json: Final = msgspec.json.Encoder()


@dataclass(slots=True)
class Delivery:
    """One message as the broker handed it over, stamped with the receive time."""

    tag: int
    body: bytes
    user_id: str | None
    received_at: datetime
    routing_key: str = ""
    headers: dict[str, Any] | None = None
    generation: int = 0


@dataclass(slots=True, frozen=True)
class Rejection:
    """A delivery that goes to the dead-letter queue, with a short reason and the detail."""

    delivery: Delivery
    reason: str
    detail: str
    result: str  # the messages_total label: invalid | unauthorised


@dataclass(slots=True, frozen=True)
class Decoded:
    delivery: Delivery
    message: Message


@dataclass(slots=True)
class Plan:
    write: BatchWrite
    rejected: list[Rejection] = field(default_factory=list)
    heartbeats: list[Decoded] = field(default_factory=list)
    goodbyes: int = 0


def decode_batch(deliveries: Sequence[Delivery]) -> tuple[list[Decoded], list[Rejection]]:
    decoded: list[Decoded] = []
    rejected: list[Rejection] = []
    for delivery in deliveries:
        try:
            decoded.append(Decoded(delivery, decode(delivery.body)))
        except MessageError as exc:
            rejected.append(Rejection(delivery, exc.reason, exc.detail, "invalid"))
    return decoded, rejected


def pg_text_array(items: Sequence[str]) -> str:
    """A PostgreSQL array literal of text items (quoted, backslash-escaped)."""
    if not items:
        return "{}"
    quoted = ('"' + item.replace("\\", "\\\\").replace('"', '\\"') + '"' for item in items)
    return "{" + ",".join(quoted) + "}"


def _pool(heartbeat: Heartbeat, gpu_pool: str, cpu_pool: str) -> str:
    if heartbeat.pool:
        return heartbeat.pool
    metrics = heartbeat.resource_metrics
    return gpu_pool if metrics.gpu_count > 0 or metrics.gpus else cpu_pool


def _check_identity(
    agent_id: uuid.UUID,
    user_id: str | None,
    principals: dict[uuid.UUID, str | None],
    require_user_id: bool,
) -> str | None:
    """None when allowed, else why not. Binds the first identity seen for a new agent."""
    if user_id is None and require_user_id:
        return "message carries no broker user_id and ingest.require_user_id is set"
    if agent_id not in principals:
        principals[agent_id] = user_id
        return None
    bound = principals[agent_id]
    if bound is None:
        if user_id is not None:
            principals[agent_id] = user_id
        return None
    if user_id != bound:
        return f"agent {agent_id} is bound to broker user {bound!r}, message came from {user_id!r}"
    return None


def plan_batch(
    decoded: Sequence[Decoded],
    state: dict[uuid.UUID, AgentState],
    *,
    require_user_id: bool = False,
    gpu_pool: str = "gpu",
    cpu_pool: str = "cpu",
) -> Plan:
    principals: dict[uuid.UUID, str | None] = {a: s.principal for a, s in state.items()}
    rejected: list[Rejection] = []
    samples: list[SampleRow] = []
    gpus: list[GpuRow] = []
    goodbyes: list[GoodbyeRow] = []
    newest: dict[uuid.UUID, tuple[Heartbeat, Delivery, str]] = {}
    first_received: dict[uuid.UUID, datetime] = {}
    last_received: dict[uuid.UUID, datetime] = {}
    accepted: list[Decoded] = []
    for item in decoded:
        message, delivery = item.message, item.delivery
        refusal = _check_identity(message.agent_id, delivery.user_id, principals, require_user_id)
        if refusal is not None:
            rejected.append(Rejection(delivery, "unauthorised", refusal, "unauthorised"))
            continue
        if isinstance(message, Goodbye):
            goodbyes.append(GoodbyeRow(message.agent_id, message.sent_at, delivery.received_at))
            continue
        accepted.append(item)
        agent_id = message.agent_id
        received = delivery.received_at
        metrics = message.resource_metrics
        pool = _pool(message, gpu_pool, cpu_pool)
        samples.append(
            SampleRow(
                agent_id,
                message.sampled_at,
                received,
                message.seq,
                message.hostname,
                pool,
                message.work_status.state,
                message.work_status.running_jobs,
                metrics.cpu_load_1m,
                metrics.cpu_load_5m,
                metrics.cpu_load_15m,
                metrics.cpu_cores,
                metrics.cpu_available_cores,
                metrics.mem_total_gb,
                metrics.mem_available_gb,
                metrics.gpu_type,
                metrics.gpu_count,
                metrics.gpu_vram_total_gb,
                metrics.gpu_vram_available_gb,
                pg_text_array(metrics.errors),
            )
        )
        for gpu in metrics.gpus:
            gpus.append(
                GpuRow(
                    agent_id,
                    message.sampled_at,
                    gpu.index,
                    gpu.uuid,
                    gpu.name,
                    gpu.vram_total_gb,
                    gpu.vram_free_gb,
                    gpu.util_pct,
                    gpu.temp_c,
                    gpu.power_w,
                    gpu.error,
                )
            )
        seen = newest.get(agent_id)
        if seen is None or message.sampled_at > seen[0].sampled_at:
            newest[agent_id] = (message, delivery, pool)
        if agent_id not in first_received or received < first_received[agent_id]:
            first_received[agent_id] = received
        if agent_id not in last_received or received > last_received[agent_id]:
            last_received[agent_id] = received
    registry: list[RegistryRow] = []
    events: list[EventRow] = []
    for agent_id in sorted(newest):
        message, delivery, pool = newest[agent_id]
        metrics = message.resource_metrics
        registry.append(
            RegistryRow(
                agent_id,
                message.hostname,
                pool,
                first_received[agent_id],
                last_received[agent_id],
                message.sampled_at,
                message.seq,
                message.agent_version,
                principals.get(agent_id),
                message.work_status.state,
                metrics.cpu_cores,
                metrics.cpu_available_cores,
                metrics.cpu_load_1m,
                metrics.mem_total_gb,
                metrics.mem_available_gb,
                metrics.gpu_type,
                metrics.gpu_count,
                metrics.gpu_vram_total_gb,
                metrics.gpu_vram_available_gb,
                _json.encode(metrics).decode(),
                None if message.agent_stats is None else _json.encode(message.agent_stats).decode(),
            )
        )
        before = state.get(agent_id)
        if before is None:
            events.append(
                EventRow(agent_id, first_received[agent_id], None, "online", "first_heartbeat")
            )
        elif before.status != "online":
            events.append(
                EventRow(agent_id, first_received[agent_id], before.status, "online", "heartbeat")
            )
    write = BatchWrite(samples, gpus, registry, events, goodbyes)
    return Plan(write, rejected, accepted, len(goodbyes))
