"""What the HTTP API answers, as msgspec structs with the JSON's own field names.

Unknown fields are ignored when decoding, so a client keeps working against a newer API
(the wire changes only additively). A test checks every struct here against the API's
OpenAPI document, so a field added on one side only fails it.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

import msgspec

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
    "Event",
    "EventList",
    "Gpu",
    "Health",
    "History",
    "HistoryGpu",
    "HistoryPoint",
    "Presence",
    "RenewBody",
    "Stat",
]

Status = Literal["online", "offline"]


class Health(msgspec.Struct, kw_only=True, frozen=True):
    status: Literal["ok", "unavailable"]
    detail: str | None = None


class CordonNote(msgspec.Struct, kw_only=True, frozen=True):
    """Who took an agent or GPU out of the offer, why and since when."""

    reason: str
    by: str
    at: datetime


class Gpu(msgspec.Struct, kw_only=True, frozen=True):
    """One GPU; the last three fields are set only where something is held or cordoned."""

    index: int
    uuid: str
    name: str
    vram_total_gb: float
    vram_free_gb: float
    util_pct: float | None
    temp_c: float | None
    power_w: float | None
    error: str | None
    vram_held_gb: float | None = None
    vram_claimable_gb: float | None = None
    cordon: CordonNote | None = None
    health: str | None = None
    health_reasons: tuple[str, ...] = ()
    xid_events: tuple[int, ...] = ()
    throttle_reasons: tuple[str, ...] = ()
    retired_pages: int | None = None
    retired_pages_pending: bool | None = None
    ecc_uncorrected: int | None = None


class Presence(msgspec.Struct, kw_only=True, frozen=True):
    """The person at the machine: idle seconds (None: unknown), locked, the source."""

    user_idle_s: float | None
    locked: bool | None
    source: str


class Agent(msgspec.Struct, kw_only=True, frozen=True):
    """One agent's latest state, numbers exactly as its latest heartbeat reported them.

    The fields after ``reliability_30d`` are set (not None) only on agents with active claims
    or a cordon: ``schedulable`` (False when cordoned), ``claims`` (active), what they hold
    and what is left to claim for cores, memory and VRAM."""

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
    gpus: tuple[Gpu, ...]
    errors: tuple[str, ...]
    reliability_30d: float | None
    schedulable: bool | None = None
    cordon: CordonNote | None = None
    claims: int | None = None
    cpu_held_cores: int | None = None
    cpu_claimable_cores: int | None = None
    mem_held_gb: float | None = None
    mem_claimable_gb: float | None = None
    gpu_vram_claimable_gb: float | None = None
    offered: bool = True
    withheld_reason: str | None = None
    presence: Presence | None = None
    clock_offset_s: float | None = None  # the agent's clock minus ingest's, seconds
    identity_clash_since: datetime | None = None  # two machines send as this agent since


class Capacity(Agent, kw_only=True, frozen=True):
    """An agent's capacity; ``matching_gpus`` are the GPU indexes that satisfy the query."""

    matching_gpus: tuple[int, ...]


class AgentList(msgspec.Struct, kw_only=True, frozen=True):
    """One page of agents; pass ``next_after`` as ``after`` for the next (None: last page)."""

    items: tuple[Agent, ...]
    count: int
    as_of: datetime
    next_after: uuid.UUID | None = None


class CapacityList(msgspec.Struct, kw_only=True, frozen=True):
    """``as_of``: when the API's registry index last read the database."""

    items: tuple[Capacity, ...]
    count: int
    as_of: datetime


class Event(msgspec.Struct, kw_only=True, frozen=True):
    """A status transition, or a claim or cordon change (``from_status`` = ``to_status``,
    with ``detail``: which claim or GPU, who, why); ``id`` grows in the order of decision."""

    id: int
    agent_id: uuid.UUID
    hostname: str
    pool_name: str
    at: datetime
    from_status: Status | None
    to_status: Status
    reason: str
    detail: dict[str, Any] | None = None


class EventList(msgspec.Struct, kw_only=True, frozen=True):
    items: tuple[Event, ...]
    count: int
    as_of: datetime


class Stat(msgspec.Struct, kw_only=True, frozen=True):
    avg: float | None
    min: float | None
    max: float | None


class HistoryGpu(msgspec.Struct, kw_only=True, frozen=True):
    index: int
    samples: int
    vram_free_gb: Stat
    util_pct_avg: float | None


class HistoryPoint(msgspec.Struct, kw_only=True, frozen=True):
    bucket: datetime
    samples: int
    cpu_load_1m: Stat
    cpu_available_cores: Stat
    mem_available_gb: Stat
    gpu_vram_available_gb: Stat
    gpus: tuple[HistoryGpu, ...]


class History(msgspec.Struct, kw_only=True, frozen=True):
    agent_id: uuid.UUID
    since: datetime
    until: datetime
    bucket_s: float
    points: tuple[HistoryPoint, ...]
    count: int


class ClaimFilter(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    """The conditions of ``capacity()``: a claim by filter takes the first agent (and its
    first GPUs) that answer would list and that still fits when the claim is decided."""

    min_gpu_vram_gb: float = 0.0
    min_cpu_cores: int = 0
    min_mem_gb: float = 0.0
    min_gpu_count: int = 0
    gpu_type: str | None = None
    pool: str | None = None
    max_sample_age_s: float | None = None
    min_reliability: float | None = None


class ClaimBody(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    """What ``claim()`` sends: on ``agent_id`` (optionally the GPUs in ``gpus``, by uuid or
    index) or on the best agent matching ``filter``; amounts default to the filter's minima."""

    holder: str
    ttl_s: float
    agent_id: uuid.UUID | None = None
    filter: ClaimFilter | None = None
    gpus: tuple[int | str, ...] | None = None
    vram_gb: float | None = None
    gpu_count: int | None = None
    cpu_cores: int | None = None
    mem_gb: float | None = None


class RenewBody(msgspec.Struct, kw_only=True, frozen=True):
    ttl_s: float


class ClaimedGpu(msgspec.Struct, kw_only=True, frozen=True):
    index: int
    uuid: str
    vram_gb: float


class Claim(msgspec.Struct, kw_only=True, frozen=True):
    """Capacity held for ``holder`` on one agent until ``expires_at`` (renew to keep it)."""

    claim_id: uuid.UUID
    agent_id: uuid.UUID
    hostname: str
    pool_name: str
    holder: str
    gpus: tuple[ClaimedGpu, ...]
    cpu_cores: int
    mem_gb: float
    created_at: datetime
    expires_at: datetime


class ClaimList(msgspec.Struct, kw_only=True, frozen=True):
    items: tuple[Claim, ...]
    count: int
    as_of: datetime


class CordonBody(msgspec.Struct, kw_only=True, frozen=True):
    reason: str
    by: str


class Cordon(msgspec.Struct, kw_only=True, frozen=True):
    """An agent (``gpu_uuid`` None) or one GPU out of the offer: who, why, since when."""

    agent_id: uuid.UUID
    hostname: str
    gpu_uuid: str | None
    reason: str
    by: str
    at: datetime


class CordonList(msgspec.Struct, kw_only=True, frozen=True):
    items: tuple[Cordon, ...]
    count: int
    as_of: datetime
