"""The pure core of ingest: deliveries in, rows and verdicts out. No I/O, no clock.

:func:`decode_batch` validates bodies; :func:`plan_batch` is given the registry state of
the batch's agents (locked by the store) and decides, message by message, who may write
(the broker identity bound to each agent), which rows to store and which status
transitions to record. Besides status transitions, an agent's newest heartbeat records
``withheld``/``offered`` when its owner's offer changes (an agent that does not report
presence is offered) and ``gpu_health`` when the set of GPUs that are not ``ok`` changes.
"""

from __future__ import annotations

import math
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
    "ClockBounds",
    "Decoded",
    "Delivery",
    "Plan",
    "Rejection",
    "clock_offset_s",
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
    # (agent, the run now heard, the other run) for each identity clash that began here
    clashes: list[tuple[uuid.UUID, uuid.UUID | None, uuid.UUID | None]] = field(
        default_factory=list
    )


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


@dataclass(frozen=True, slots=True)
class ClockBounds:
    """How far from its receive time an agent's ``sampled_at`` is accepted (behind: spool
    replays after an outage; ahead: clocks a little off), and the clock offset past which
    an agent's row gets a ``clock_skew`` event."""

    max_behind_s: float = 86_400.0
    max_ahead_s: float = 300.0
    skew_event_s: float = 60.0

    def skewed(self, message: Heartbeat, received: datetime) -> bool:
        offset = (message.sampled_at - received).total_seconds()
        return not -self.max_behind_s <= offset <= self.max_ahead_s


_UNBOUNDED: Final = ClockBounds(math.inf, math.inf, math.inf)


def plan_batch(
    decoded: Sequence[Decoded],
    state: dict[uuid.UUID, AgentState],
    *,
    require_user_id: bool = False,
    gpu_pool: str = "gpu",
    cpu_pool: str = "cpu",
    clock: ClockBounds | None = None,
    clash_quiet_s: float = math.inf,
) -> Plan:
    """Who may write, which rows to store, which transitions to record, given the locked
    registry ``state`` of the batch's agents. Without ``clock`` every ``sampled_at`` is
    taken as it is and no clock is judged (ingest passes its settings)."""
    clock = clock or _UNBOUNDED
    runs = {a: _Runs.of(s) for a, s in state.items()}
    principals: dict[uuid.UUID, str | None] = {a: s.principal for a, s in state.items()}
    rejected: list[Rejection] = []
    goodbyes: list[GoodbyeRow] = []
    accepted: list[Decoded] = []
    spells = _Spells(clock)
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
                    incarnation=message.incarnation,
                    seq=message.seq,
                )
            )
        else:
            accepted.append(item)
            pool = _pool(message, gpu_pool, cpu_pool)
            skewed = clock.skewed(message, delivery.received_at)
            # A time outside the bounds is not trusted: the sample is kept at its receive
            # time, flagged, rather than at a time that never was.
            when = delivery.received_at if skewed else message.sampled_at
            samples.append(_sample_row(message, delivery, pool, when, skewed))
            gpus.extend(_gpu_rows(message, when))
            late = runs.setdefault(message.agent_id, _Runs()).hear(
                message, delivery.received_at, clash_quiet_s
            )
            spells.see(message, delivery, pool, when, late=late)
    agents = sorted(spells.newest)
    registry = [spells.registry_row(a, principals.get(a), runs[a]) for a in agents]
    events = [e for a in agents for e in spells.events(a, state.get(a))]
    clashes = [(a, runs[a]) for a in agents if runs[a].began]
    events.extend(
        EventRow(
            agent_id=a,
            at=r.clash_since or spells.first_received[a],
            from_status="online",
            to_status="online",
            reason="identity_clash",
        )
        for a, r in clashes
    )
    write = BatchWrite(samples, gpus, registry, events, goodbyes)
    plan = Plan(write, rejected, accepted, len(goodbyes))
    plan.clashes = [(a, r.current, r.other) for a, r in clashes]
    return plan


def _sample_row(
    message: Heartbeat, delivery: Delivery, pool: str, when: datetime, skewed: bool
) -> SampleRow:
    metrics = message.resource_metrics
    return SampleRow(
        agent_id=message.agent_id,
        sampled_at=when,
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
        clock_skewed=skewed,
        incarnation=message.incarnation or NO_INCARNATION,
    )


def _gpu_rows(message: Heartbeat, when: datetime) -> list[GpuRow]:
    return [
        GpuRow(
            agent_id=message.agent_id,
            sampled_at=when,
            gpu_index=gpu.index,
            gpu_uuid=gpu.uuid,
            name=gpu.name,
            vram_total_gb=gpu.vram_total_gb,
            vram_free_gb=gpu.vram_free_gb,
            util_pct=gpu.util_pct,
            temp_c=gpu.temp_c,
            power_w=gpu.power_w,
            error=gpu.error,
            incarnation=message.incarnation or NO_INCARNATION,
        )
        for gpu in message.resource_metrics.gpus
    ]


# What samples of an agent that sends no incarnation are stored under.
NO_INCARNATION: Final = uuid.UUID(int=0)


@dataclass(slots=True)
class _Runs:
    """The runs (incarnations) an agent is heard from. A run never seen before takes over
    (a restart) and the one before becomes the *other*; the other heard again with a newer
    ``seq`` means two machines send as one agent (a cloned disk, a copied state dir): an
    identity clash, until the other has been quiet for ``quiet_s``."""

    current: uuid.UUID | None = None
    seq: int = 0
    other: uuid.UUID | None = None
    other_seq: int | None = None
    other_seen: datetime | None = None
    clash_since: datetime | None = None
    began: bool = False  # the clash began in this batch

    @classmethod
    def of(cls, state: AgentState) -> _Runs:
        return cls(
            state.incarnation,
            state.last_seq,
            state.other_incarnation,
            state.other_seq,
            state.other_seen_at,
            state.identity_clash_since,
        )

    def hear(self, message: Heartbeat, received: datetime, quiet_s: float) -> bool:
        """Note the message's run; True if it is a late copy of what the run before sent
        (it takes no state)."""
        run = message.incarnation
        if run is None:
            return False
        if self.current is None:
            self.current, self.seq = run, message.seq
        elif run == self.current:
            self.seq = max(self.seq, message.seq)
        elif run == self.other:
            if self.other_seq is not None and message.seq <= self.other_seq:
                return True  # a late copy of what the other run sent before
            if self.clash_since is None:
                self.clash_since, self.began = received, True
            self.current, self.seq, self.other, self.other_seq = (
                run,
                message.seq,
                self.current,
                self.seq,
            )
            self.other_seen = received
            return False
        else:
            self.other, self.other_seq, self.other_seen = self.current, self.seq, received
            self.current, self.seq = run, message.seq
            return False
        quiet = self.other_seen is None or (received - self.other_seen).total_seconds() > quiet_s
        if self.clash_since is not None and quiet:
            self.clash_since = None
        return False


@dataclass(slots=True)
class _Seen:
    message: Heartbeat
    pool: str
    received: datetime
    when: datetime  # sampled_at, or the receive time when that was out of bounds


def newer(incoming: _Seen, seen: _Seen) -> bool:
    """The store's rule for which of two samples of an agent is newer: within one
    incarnation by ``seq``, between two by receive order, for an agent that sends no
    incarnation by its (bounded) sample time. The agent's clock alone never decides."""
    a, b = incoming.message, seen.message
    if a.incarnation is not None and a.incarnation == b.incarnation:
        return a.seq > b.seq
    if a.incarnation != b.incarnation:
        return incoming.received >= seen.received
    return incoming.when > seen.when


@dataclass(slots=True)
class _Spells:
    """Per agent within a batch: its newest heartbeat and the span of receive times."""

    clock: ClockBounds
    newest: dict[uuid.UUID, _Seen] = field(default_factory=dict)
    first_received: dict[uuid.UUID, datetime] = field(default_factory=dict)
    last_received: dict[uuid.UUID, datetime] = field(default_factory=dict)

    def see(
        self, message: Heartbeat, delivery: Delivery, pool: str, when: datetime, *, late: bool
    ) -> None:
        agent_id, received = message.agent_id, delivery.received_at
        incoming = _Seen(message, pool, received, when)
        seen = self.newest.get(agent_id)
        if seen is None:
            self.newest[agent_id] = incoming
            self.first_received[agent_id] = self.last_received[agent_id] = received
            return
        if not late and newer(incoming, seen):
            self.newest[agent_id] = incoming
        if received < self.first_received[agent_id]:
            self.first_received[agent_id] = received
        if received > self.last_received[agent_id]:
            self.last_received[agent_id] = received

    def registry_row(self, agent_id: uuid.UUID, principal: str | None, runs: _Runs) -> RegistryRow:
        seen = self.newest[agent_id]
        message = seen.message
        metrics = message.resource_metrics
        stats = message.agent_stats
        presence = message.presence
        health = gpu_health_summary(metrics.gpus)
        return RegistryRow(
            agent_id=agent_id,
            hostname=message.hostname,
            pool_name=seen.pool,
            first_received_at=self.first_received[agent_id],
            received_at=self.last_received[agent_id],
            # never later than its receive time: ages come from a clock the agent cannot push
            sampled_at=min(seen.when, seen.received),
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
            incarnation=message.incarnation,
            state_received_at=seen.received,
            clock_offset_s=clock_offset_s(message, seen.received),
            other_incarnation=runs.other,
            other_seq=runs.other_seq,
            other_seen_at=runs.other_seen,
            identity_clash_since=runs.clash_since,
        )

    def events(self, agent_id: uuid.UUID, before: AgentState | None) -> list[EventRow]:
        """The batch's events of this agent: coming (back) online, then, when its newest
        heartbeat is newer than what the registry holds, a change of offer or GPU health,
        and its clock going off by more than ``skew_event_s`` (from within it)."""
        found: list[EventRow] = []
        online = self.transition(agent_id, before)
        if online is not None:
            found.append(online)
        seen = self.newest[agent_id]
        message = seen.message
        if before is not None and not _newer_than_state(seen, before):
            return found  # a late replay changes nothing the registry shows
        at = seen.received
        presence = message.presence
        offered = True if presence is None else presence.offered
        if offered != (True if before is None else before.offered):
            reason = "offered" if offered else "withheld"
            found.append(EventRow(agent_id, at, "online", "online", reason))
        health = gpu_health_summary(message.resource_metrics.gpus)
        if health != (None if before is None else before.gpu_health):
            found.append(EventRow(agent_id, at, "online", "online", "gpu_health"))
        limit = self.clock.skew_event_s
        was = None if before is None else before.clock_offset_s
        now_off = abs(clock_offset_s(message, seen.received)) > limit
        if now_off and (was is None or abs(was) <= limit):
            found.append(EventRow(agent_id, at, "online", "online", "clock_skew"))
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


def _newer_than_state(seen: _Seen, before: AgentState) -> bool:
    """The registry statement's rule (``_NEWER`` in the store), for the events."""
    if before.last_sampled_at is None:
        return True
    run = seen.message.incarnation
    if run is not None and run == before.incarnation:
        return seen.message.seq > before.last_seq
    if run != before.incarnation:
        return seen.received >= (before.state_received_at or seen.received)
    return min(seen.when, seen.received) > before.last_sampled_at


def clock_offset_s(message: Heartbeat, received: datetime) -> float:
    """The agent's clock minus ingest's, as far as one message shows it: ``sent_at`` is
    stamped as it leaves the agent, transit takes milliseconds."""
    return round((message.sent_at - received).total_seconds(), 3)
