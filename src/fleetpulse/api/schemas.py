"""Response bodies of the HTTP API (msgspec structs; the OpenAPI document is built from them)."""

from __future__ import annotations

import time
import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec

from fleetpulse.store import (
    AgentRecord,
    Allotment,
    CapacityMatch,
    CordonRecord,
    GpuBucket,
    HostBucket,
    StatusEvent,
)

__all__ = [
    "Agent",
    "AgentList",
    "Capacity",
    "CapacityList",
    "Claim",
    "ClaimBody",
    "ClaimFilter",
    "ClaimList",
    "ClaimedGpu",
    "Cordon",
    "CordonBody",
    "CordonList",
    "CordonNote",
    "ErrorBody",
    "Event",
    "EventList",
    "Gpu",
    "Health",
    "History",
    "HistoryGpu",
    "HistoryPoint",
    "RenewBody",
    "Stat",
    "agent_of",
    "capacity_of",
    "event_of",
    "history_points",
]

Status = Literal["online", "offline"]


class ErrorBody(msgspec.Struct, kw_only=True):
    """Every error answer: ``detail`` names the offending parameter where there is one."""

    status_code: int
    detail: str
    extra: list[dict[str, Any]] | None = None


class Health(msgspec.Struct, kw_only=True):
    status: Literal["ok", "unavailable"]
    detail: str | None = None


class CordonNote(msgspec.Struct, kw_only=True):
    """Who took an agent or GPU out of the offer, why and since when."""

    reason: str
    by: str
    at: datetime


# The claim fields below appear only on agents with active claims or a cordon (omitted
# defaults): without claims every answer is byte for byte what it was before claims existed.
class Gpu(msgspec.Struct, kw_only=True, omit_defaults=True):
    index: int
    uuid: str
    name: str
    vram_total_gb: float
    vram_free_gb: float
    util_pct: float | None
    temp_c: float | None
    power_w: float | None
    error: str | None
    # health as the agent's NVML probe judged it; None from agents that predate it
    health: str | None = None
    health_reasons: list[str] = []
    xid_events: list[int] = []
    throttle_reasons: list[str] = []
    retired_pages: int | None = None
    retired_pages_pending: bool | None = None
    ecc_uncorrected: int | None = None
    vram_held_gb: float | None = None
    vram_claimable_gb: float | None = None  # min(free, total - held); 0 if cordoned
    cordon: CordonNote | None = None


class Presence(msgspec.Struct, kw_only=True):
    """The person at the machine, as its latest heartbeat reported: idle seconds (None:
    unknown), whether the session is locked, and where the figure came from."""

    user_idle_s: float | None
    locked: bool | None
    source: str


class Agent(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One agent's latest state, numbers exactly as its latest heartbeat reported them.

    With active claims or a cordon, also: ``schedulable`` (false when cordoned, with
    ``cordon``), ``claims`` (active), what they hold and what is left to claim
    (min(observed, total − held)) for cores, memory and VRAM (per GPU in ``gpus``).
    From agents that report presence, ``presence``; ``offered`` (false) and
    ``withheld_reason`` while the owner withholds the machine. GPUs carry ``health`` and
    its signals where the agent reports them (fields left out are their defaults)."""

    agent_id: uuid.UUID
    hostname: str
    pool_name: str
    status: Status
    status_changed_at: datetime
    first_seen_at: datetime
    last_heartbeat_at: datetime
    last_sampled_at: datetime | None
    sample_age_s: float | None
    agent_version: str
    work_state: str
    cpu_cores: int
    cpu_available_cores: int
    cpu_load_1m: float
    mem_total_gb: float
    mem_available_gb: float
    gpu_type: str
    gpu_count: int
    gpu_vram_total_gb: float
    gpu_vram_available_gb: float
    gpus: list[Gpu]
    errors: list[str]
    reliability_30d: float | None
    schedulable: bool | None = None
    cordon: CordonNote | None = None
    claims: int | None = None
    cpu_held_cores: int | None = None
    cpu_claimable_cores: int | None = None
    mem_held_gb: float | None = None
    mem_claimable_gb: float | None = None
    gpu_vram_claimable_gb: float | None = None
    # whether the owner offers the machine now (older agents: always), and why not
    offered: bool = True
    withheld_reason: str | None = None
    presence: Presence | None = None
    # The agent's clock minus ingest's at its last heartbeat (positive: ahead), seconds;
    # null until an agent is heard after the upgrade. last_sampled_at is never later than
    # the receive time, so sample_age_s cannot be pushed into the future by the agent.
    clock_offset_s: float | None = None
    # Set while two machines send as this agent (a cloned disk, a copied state dir): since
    # when both are heard; both keep their samples, the row follows whichever spoke last.
    identity_clash_since: datetime | None = None


class Capacity(Agent, kw_only=True):
    """An agent's capacity; ``matching_gpus`` are the GPU indexes that satisfy the query."""

    matching_gpus: list[int]


class AgentList(msgspec.Struct, kw_only=True):
    items: list[Agent]
    count: int
    as_of: datetime
    next_after: uuid.UUID | None = None


class CapacityList(msgspec.Struct, kw_only=True):
    """``as_of``: when the in-process registry index last read the database."""

    items: list[Capacity]
    count: int
    as_of: datetime


class Event(msgspec.Struct, kw_only=True, omit_defaults=True):
    """A status transition; claim and cordon changes (``from_status`` = ``to_status``) also
    carry ``detail``: which claim or GPU, who and why."""

    id: int
    agent_id: uuid.UUID
    hostname: str
    pool_name: str
    at: datetime
    from_status: Status | None
    to_status: Status
    reason: str
    detail: dict[str, Any] | None = None


class EventList(msgspec.Struct, kw_only=True):
    items: list[Event]
    count: int
    as_of: datetime


class Stat(msgspec.Struct, kw_only=True):
    avg: float | None
    min: float | None
    max: float | None


class HistoryGpu(msgspec.Struct, kw_only=True):
    index: int
    samples: int
    vram_free_gb: Stat
    util_pct_avg: float | None


class HistoryPoint(msgspec.Struct, kw_only=True):
    bucket: datetime
    samples: int
    cpu_load_1m: Stat
    cpu_available_cores: Stat
    mem_available_gb: Stat
    gpu_vram_available_gb: Stat
    gpus: list[HistoryGpu]


class History(msgspec.Struct, kw_only=True):
    agent_id: uuid.UUID
    since: datetime
    until: datetime
    bucket_s: float
    points: list[HistoryPoint]
    count: int


def _gpus(record: AgentRecord, allotment: Allotment | None = None) -> list[Gpu]:
    """The store's GPU states as response structs (the same fields, one schema per layer)."""
    gpus = msgspec.convert(record.gpus, list[Gpu], from_attributes=True)
    if allotment is not None:
        for gpu, a in zip(gpus, allotment.gpus, strict=True):
            gpu.vram_held_gb = a.vram_held_gb
            gpu.vram_claimable_gb = a.vram_claimable_gb
            gpu.cordon = _note(a.cordon)
    return gpus


def _note(cordon: CordonRecord | None) -> CordonNote | None:
    return None if cordon is None else CordonNote(reason=cordon.reason, by=cordon.by, at=cordon.at)


def _claim_fields(allotment: Allotment | None) -> dict[str, Any]:
    if allotment is None:
        return {}
    return {
        "schedulable": allotment.schedulable,
        "cordon": _note(allotment.cordon),
        "claims": allotment.claims,
        "cpu_held_cores": allotment.cpu_held_cores,
        "cpu_claimable_cores": allotment.cpu_claimable_cores,
        "mem_held_gb": allotment.mem_held_gb,
        "mem_claimable_gb": allotment.mem_claimable_gb,
        "gpu_vram_claimable_gb": allotment.gpu_vram_claimable_gb,
    }


def _fields(
    record: AgentRecord, reliability: float | None, now: float, allotment: Allotment | None = None
) -> dict[str, Any]:
    sampled = record.last_sampled_at
    return {
        "agent_id": record.agent_id,
        "hostname": record.hostname,
        "pool_name": record.pool_name,
        "status": record.status,
        "status_changed_at": record.status_changed_at,
        "first_seen_at": record.first_seen_at,
        "last_heartbeat_at": record.last_heartbeat_at,
        "last_sampled_at": sampled,
        "sample_age_s": None if sampled is None else round(max(0.0, now - sampled.timestamp()), 3),
        "agent_version": record.agent_version,
        "work_state": record.work_state,
        "cpu_cores": record.cpu_cores,
        "cpu_available_cores": record.cpu_available_cores,
        "cpu_load_1m": record.cpu_load_1m,
        "mem_total_gb": record.mem_total_gb,
        "mem_available_gb": record.mem_available_gb,
        "gpu_type": record.gpu_type,
        "gpu_count": record.gpu_count,
        "gpu_vram_total_gb": record.gpu_vram_total_gb,
        "gpu_vram_available_gb": record.gpu_vram_available_gb,
        "gpus": _gpus(record, allotment),
        "errors": list(record.errors),
        "reliability_30d": reliability,
        **_claim_fields(allotment),
        "offered": record.offered,
        "withheld_reason": record.withheld_reason,
        "presence": None
        if record.presence_source is None
        else Presence(
            user_idle_s=record.user_idle_s,
            locked=record.presence_locked,
            source=record.presence_source,
        ),
        "clock_offset_s": record.clock_offset_s,
        "identity_clash_since": record.identity_clash_since,
    }


def agent_of(
    record: AgentRecord,
    reliability: float | None,
    now: float | None = None,
    allotment: Allotment | None = None,
) -> Agent:
    return Agent(**_fields(record, reliability, time.time() if now is None else now, allotment))


def capacity_of(match: CapacityMatch, now: float | None = None) -> Capacity:
    fields = _fields(
        match.record,
        match.reliability_30d,
        time.time() if now is None else now,
        match.allotment,
    )
    return Capacity(**fields, matching_gpus=list(match.matching_gpus))


def event_of(event: StatusEvent) -> Event:
    return msgspec.convert(event, Event, from_attributes=True)


def history_points(hosts: list[HostBucket], gpus: list[GpuBucket]) -> list[HistoryPoint]:
    """Join host buckets with the per-GPU buckets of the same time."""
    by_time: dict[datetime, list[HistoryGpu]] = {}
    for g in gpus:
        by_time.setdefault(g.bucket, []).append(
            HistoryGpu(
                index=g.gpu_index,
                samples=g.samples,
                vram_free_gb=Stat(
                    avg=g.vram_free_gb_avg, min=g.vram_free_gb_min, max=g.vram_free_gb_max
                ),
                util_pct_avg=g.util_pct_avg,
            )
        )
    return [
        HistoryPoint(
            bucket=h.bucket,
            samples=h.samples,
            cpu_load_1m=Stat(avg=h.cpu_load_1m_avg, min=h.cpu_load_1m_min, max=h.cpu_load_1m_max),
            cpu_available_cores=Stat(
                avg=h.cpu_available_cores_avg,
                min=h.cpu_available_cores_min,
                max=h.cpu_available_cores_max,
            ),
            mem_available_gb=Stat(
                avg=h.mem_available_gb_avg, min=h.mem_available_gb_min, max=h.mem_available_gb_max
            ),
            gpu_vram_available_gb=Stat(
                avg=h.gpu_vram_available_gb_avg,
                min=h.gpu_vram_available_gb_min,
                max=h.gpu_vram_available_gb_max,
            ),
            gpus=by_time.get(h.bucket, []),
        )
        for h in hosts
    ]


# Claims and cordons ------------------------------------------------------------------------

MAX_GB = 1e7
MAX_CORES = 65_536
MAX_TTL_S = 86_400.0
Gb = Annotated[float, msgspec.Meta(ge=0, le=MAX_GB)]
Cores = Annotated[int, msgspec.Meta(ge=0, le=MAX_CORES)]
# PostgreSQL text cannot hold NUL: a string that would go to it with one is a 400, not a 500.
NO_NUL = r"^[^\x00]*$"
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=255, pattern=NO_NUL)]
GpuSelector = (
    Annotated[int, msgspec.Meta(ge=0, le=1023)]
    | Annotated[str, msgspec.Meta(min_length=1, max_length=255, pattern=NO_NUL)]
)


class ClaimFilter(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """The parameters of ``available-capacity``; the server claims on the first agent (and
    its first GPUs) that answer would list and that still fits when the claim is decided."""

    min_gpu_vram_gb: Gb = 0.0
    min_cpu_cores: Cores = 0
    min_mem_gb: Gb = 0.0
    min_gpu_count: Annotated[int, msgspec.Meta(ge=0, le=256)] = 0
    gpu_type: Annotated[str, msgspec.Meta(max_length=255, pattern=NO_NUL)] | None = None
    pool: Annotated[str, msgspec.Meta(max_length=255, pattern=NO_NUL)] | None = None
    max_sample_age_s: Annotated[float, msgspec.Meta(gt=0, le=1e9)] | None = None
    min_reliability: Annotated[float, msgspec.Meta(ge=0, le=1)] | None = None


class ClaimBody(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Hold capacity for ``holder`` for ``ttl_s``: on ``agent_id`` (optionally the GPUs in
    ``gpus``, by uuid or index) or on the best agent matching ``filter``. Amounts default to
    the filter's minimums; ``gpu_count`` defaults to the GPUs named, else 1 when ``vram_gb``
    is above 0, else 0."""

    holder: Name
    ttl_s: Annotated[float, msgspec.Meta(ge=1, le=MAX_TTL_S)]
    agent_id: uuid.UUID | None = None
    filter: ClaimFilter | None = None
    gpus: Annotated[list[GpuSelector], msgspec.Meta(max_length=256)] | None = None
    vram_gb: Gb | None = None
    gpu_count: Annotated[int, msgspec.Meta(ge=0, le=256)] | None = None
    cpu_cores: Cores | None = None
    mem_gb: Gb | None = None


class RenewBody(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    ttl_s: Annotated[float, msgspec.Meta(ge=1, le=MAX_TTL_S)]


class ClaimedGpu(msgspec.Struct, kw_only=True):
    index: int
    uuid: str
    vram_gb: float


class Claim(msgspec.Struct, kw_only=True):
    claim_id: uuid.UUID
    agent_id: uuid.UUID
    hostname: str
    pool_name: str
    holder: str
    gpus: list[ClaimedGpu]
    cpu_cores: int
    mem_gb: float
    created_at: datetime
    expires_at: datetime


class ClaimList(msgspec.Struct, kw_only=True):
    items: list[Claim]
    count: int
    as_of: datetime


class CordonBody(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    reason: Annotated[str, msgspec.Meta(min_length=1, max_length=1000, pattern=NO_NUL)]
    by: Name


class Cordon(msgspec.Struct, kw_only=True):
    """An agent (``gpu_uuid`` null) or one GPU out of the offer: who, why, since when."""

    agent_id: uuid.UUID
    hostname: str
    gpu_uuid: str | None
    reason: str
    by: str
    at: datetime


class CordonList(msgspec.Struct, kw_only=True):
    items: list[Cordon]
    count: int
    as_of: datetime
