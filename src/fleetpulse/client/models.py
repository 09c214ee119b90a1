"""What the HTTP API answers, as msgspec structs with the JSON's own field names.

Unknown fields are ignored when decoding, so a client keeps working against a newer API
(the wire changes only additively). A test checks every struct here against the API's
OpenAPI document, so a field added on one side only fails it.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

import msgspec

__all__ = [
    "Agent",
    "AgentList",
    "Capacity",
    "CapacityList",
    "Event",
    "EventList",
    "Gpu",
    "Health",
    "History",
    "HistoryGpu",
    "HistoryPoint",
    "Stat",
]

Status = Literal["online", "offline"]


class Health(msgspec.Struct, kw_only=True, frozen=True):
    status: Literal["ok", "unavailable"]
    detail: str | None = None


class Gpu(msgspec.Struct, kw_only=True, frozen=True):
    index: int
    uuid: str
    name: str
    vram_total_gb: float
    vram_free_gb: float
    util_pct: float | None
    temp_c: float | None
    power_w: float | None
    error: str | None


class Agent(msgspec.Struct, kw_only=True, frozen=True):
    """One agent's latest state, numbers exactly as its latest heartbeat reported them."""

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
    """A status transition; ``id`` grows in the order they were decided."""

    id: int
    agent_id: uuid.UUID
    hostname: str
    pool_name: str
    at: datetime
    from_status: Status | None
    to_status: Status
    reason: str


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
