"""The pure core of ingest: deliveries in, rows and verdicts out. No I/O, no clock.

:func:`decode_batch` validates bodies; :func:`plan_batch` is given the registry state of
the batch's agents (locked by the store) and decides, message by message, who may write
(the broker identity bound to each agent), which rows to store and which status
transitions to record. Besides status transitions, an agent's newest heartbeat records
``withheld``/``offered`` when its owner's offer changes (an agent that does not report
presence is offered) and ``gpu_health`` when the set of GPUs that are not ``ok`` changes.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

import msgspec

from fleetpulse.errors import MessageError
from fleetpulse.messages import Goodbye, GpuMetrics, Heartbeat, Message, decode
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
    "gpu_health_summary",
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
    content_type: str | None = None
    content_encoding: str | None = None


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


def _content_refusal(delivery: Delivery) -> MessageError | None:
    """Strict about what the body claims to be: JSON (no ``content_type`` is taken as JSON,
    as minimal publishers send it), never encoded. A body said to be something else is not
    read as JSON on a guess."""
    content_type = delivery.content_type
    if content_type and content_type.split(";", 1)[0].strip().lower() != "application/json":
        return MessageError(
            f"content_type {content_type[:100]!r} is not application/json", reason="content_type"
        )
    encoding = delivery.content_encoding
    if encoding and encoding.strip().lower() != "identity":
        return MessageError(
            f"content_encoding {encoding[:100]!r} is not supported (bodies are plain JSON)",
            reason="content_encoding",
        )
    return None


def decode_batch(deliveries: Sequence[Delivery]) -> tuple[list[Decoded], list[Rejection]]:
    decoded: list[Decoded] = []
    rejected: list[Rejection] = []
    for delivery in deliveries:
        refusal = (
            _content_refusal(delivery)
            if delivery.content_type or delivery.content_encoding
            else None
        )
        if refusal is not None:
            rejected.append(Rejection(delivery, refusal.reason, refusal.detail, "invalid"))
            continue
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


def _gpu_key(gpu: GpuMetrics) -> str:
    return gpu.uuid or str(gpu.index)


def gpu_health_summary(gpus: Sequence[GpuMetrics]) -> dict[str, str] | None:
    """The GPUs that are not ``ok`` (uuid, else index -> ``degraded``/``failed``; a GPU with
    an error is failed); None when there are none, so agents that never report health and
    healthy ones look alike."""
    sick = {
        _gpu_key(g): "failed" if g.error else str(g.health)
        for g in gpus
        if g.error or g.health in {"degraded", "failed"}
    }
    return sick or None


def _pool(heartbeat: Heartbeat, gpu_pool: str, cpu_pool: str) -> str:
    if heartbeat.pool:
        return heartbeat.pool
    metrics = heartbeat.resource_metrics
    return gpu_pool if metrics.gpu_count > 0 or metrics.gpus else cpu_pool


def _check_identity(
    message: Message,
    delivery: Delivery,
    principals: dict[uuid.UUID, str | None],
    require_user_id: bool,
) -> str | None:
    """None when allowed, else why not.

    The agent segment of the routing key must name the body's agent: the broker confines a
    per-agent user to its own routing keys, so this confines it to its own agent. An agent
    bound to a broker identity (``principal``) accepts only that identity; seeing an agent
    binds nothing (credentials are bound when they are created).
    """
    agent_id = message.agent_id
    user_id = delivery.user_id
    keyed = delivery.routing_key.rpartition(".")[2]
    if keyed != str(agent_id):
        return (
            f"routing key {delivery.routing_key!r} names agent {keyed!r}, the body agent {agent_id}"
        )
    if user_id is None and require_user_id:
        return "message carries no broker user_id and ingest.require_user_id is set"
    bound = principals.get(agent_id)
    if bound is not None and user_id != bound:
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
    """Who may write, which rows to store, which transitions to record, given the locked
    registry ``state`` of the batch's agents."""
    principals: dict[uuid.UUID, str | None] = {a: s.principal for a, s in state.items()}
    rejected: list[Rejection] = []
    goodbyes: list[GoodbyeRow] = []
    accepted: list[Decoded] = []
    spells = _Spells()
    samples: list[SampleRow] = []
    gpus: list[GpuRow] = []
    for item in decoded:
        message, delivery = item.message, item.delivery
        refusal = _check_identity(message, delivery, principals, require_user_id)
        if refusal is not None:
            rejected.append(Rejection(delivery, "unauthorised", refusal, "unauthorised"))
        elif isinstance(message, Goodbye):
            goodbyes.append(
                GoodbyeRow(
                    agent_id=message.agent_id,
                    sent_at=message.sent_at,
                    received_at=delivery.received_at,
                )
            )
        else:
            accepted.append(item)
            pool = _pool(message, gpu_pool, cpu_pool)
            samples.append(_sample_row(message, delivery, pool))
            gpus.extend(_gpu_rows(message))
            spells.see(message, delivery, pool)
    agents = sorted(spells.newest)
    registry = [spells.registry_row(a, principals.get(a)) for a in agents]
    events = [e for a in agents for e in spells.events(a, state.get(a))]
    write = BatchWrite(samples, gpus, registry, events, goodbyes)
    return Plan(write, rejected, accepted, len(goodbyes))


def _sample_row(message: Heartbeat, delivery: Delivery, pool: str) -> SampleRow:
    metrics = message.resource_metrics
    return SampleRow(
        agent_id=message.agent_id,
        sampled_at=message.sampled_at,
        received_at=delivery.received_at,
        seq=message.seq,
        hostname=message.hostname,
        pool_name=pool,
        work_state=message.work_status.state,
        running_jobs=message.work_status.running_jobs,
        cpu_load_1m=metrics.cpu_load_1m,
        cpu_load_5m=metrics.cpu_load_5m,
        cpu_load_15m=metrics.cpu_load_15m,
        cpu_cores=metrics.cpu_cores,
        cpu_available_cores=metrics.cpu_available_cores,
        mem_total_gb=metrics.mem_total_gb,
        mem_available_gb=metrics.mem_available_gb,
        gpu_type=metrics.gpu_type,
        gpu_count=metrics.gpu_count,
        gpu_vram_total_gb=metrics.gpu_vram_total_gb,
        gpu_vram_available_gb=metrics.gpu_vram_available_gb,
        errors=pg_text_array(metrics.errors),
    )


def _gpu_rows(message: Heartbeat) -> list[GpuRow]:
    return [
        GpuRow(
            agent_id=message.agent_id,
            sampled_at=message.sampled_at,
            gpu_index=gpu.index,
            gpu_uuid=gpu.uuid,
            name=gpu.name,
            vram_total_gb=gpu.vram_total_gb,
            vram_free_gb=gpu.vram_free_gb,
            util_pct=gpu.util_pct,
            temp_c=gpu.temp_c,
            power_w=gpu.power_w,
            error=gpu.error,
        )
        for gpu in message.resource_metrics.gpus
    ]


@dataclass(slots=True)
class _Spells:
    """Per agent within a batch: its newest heartbeat and the span of receive times."""

    newest: dict[uuid.UUID, tuple[Heartbeat, str]] = field(default_factory=dict)
    newest_received: dict[uuid.UUID, datetime] = field(default_factory=dict)
    first_received: dict[uuid.UUID, datetime] = field(default_factory=dict)
    last_received: dict[uuid.UUID, datetime] = field(default_factory=dict)

    def see(self, message: Heartbeat, delivery: Delivery, pool: str) -> None:
        agent_id, received = message.agent_id, delivery.received_at
        seen = self.newest.get(agent_id)
        if seen is None:
            self.newest[agent_id] = (message, pool)
            self.newest_received[agent_id] = received
            self.first_received[agent_id] = self.last_received[agent_id] = received
            return
        if message.sampled_at > seen[0].sampled_at:
            self.newest[agent_id] = (message, pool)
            self.newest_received[agent_id] = received
        if received < self.first_received[agent_id]:
            self.first_received[agent_id] = received
        if received > self.last_received[agent_id]:
            self.last_received[agent_id] = received

    def registry_row(self, agent_id: uuid.UUID, principal: str | None) -> RegistryRow:
        message, pool = self.newest[agent_id]
        metrics = message.resource_metrics
        stats = message.agent_stats
        presence = message.presence
        health = gpu_health_summary(metrics.gpus)
        return RegistryRow(
            agent_id=agent_id,
            hostname=message.hostname,
            pool_name=pool,
            first_received_at=self.first_received[agent_id],
            received_at=self.last_received[agent_id],
            sampled_at=message.sampled_at,
            seq=message.seq,
            agent_version=message.agent_version,
            principal=principal,
            work_state=message.work_status.state,
            cpu_cores=metrics.cpu_cores,
            cpu_available_cores=metrics.cpu_available_cores,
            cpu_load_1m=metrics.cpu_load_1m,
            mem_total_gb=metrics.mem_total_gb,
            mem_available_gb=metrics.mem_available_gb,
            gpu_type=metrics.gpu_type,
            gpu_count=metrics.gpu_count,
            gpu_vram_total_gb=metrics.gpu_vram_total_gb,
            gpu_vram_available_gb=metrics.gpu_vram_available_gb,
            resource_metrics=_json.encode(metrics).decode(),
            agent_stats=None if stats is None else _json.encode(stats).decode(),
            user_idle_s=None if presence is None else presence.user_idle_s,
            presence_locked=None if presence is None else presence.locked,
            presence_source=None if presence is None else presence.source,
            offered=True if presence is None else presence.offered,
            withheld_reason=None if presence is None else presence.withheld_reason,
            gpu_health=None if health is None else _json.encode(health).decode(),
        )

    def events(self, agent_id: uuid.UUID, before: AgentState | None) -> list[EventRow]:
        """The batch's events of this agent: coming (back) online, then, when its newest
        heartbeat is newer than what the registry holds, a change of offer or GPU health."""
        found: list[EventRow] = []
        online = self.transition(agent_id, before)
        if online is not None:
            found.append(online)
        message, _pool = self.newest[agent_id]
        stored = None if before is None else before.last_sampled_at
        if stored is not None and message.sampled_at <= stored:
            return found  # a late replay changes nothing the registry shows
        at = self.newest_received[agent_id]
        presence = message.presence
        offered = True if presence is None else presence.offered
        if offered != (True if before is None else before.offered):
            reason = "offered" if offered else "withheld"
            found.append(EventRow(agent_id, at, "online", "online", reason))
        health = gpu_health_summary(message.resource_metrics.gpus)
        if health != (None if before is None else before.gpu_health):
            found.append(EventRow(agent_id, at, "online", "online", "gpu_health"))
        return found

    def transition(self, agent_id: uuid.UUID, before: AgentState | None) -> EventRow | None:
        """The event of an agent coming (back) online in this batch, if it does."""
        if before is not None and before.status == "online":
            return None
        return EventRow(
            agent_id=agent_id,
            at=self.first_received[agent_id],
            from_status=None if before is None else before.status,
            to_status="online",
            reason="first_heartbeat" if before is None else "heartbeat",
        )
