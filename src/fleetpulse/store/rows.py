"""The rows of the ingest write path, each table's columns declared once. No psycopg here.

Each row is a NamedTuple whose fields are the columns, in order, each annotated with its
PostgreSQL type (:class:`PgType`): the COPY types, the staging tables' DDL and the
``unnest`` casts of :mod:`fleetpulse.store.writes` are derived from these classes by
:func:`columns`, and the planner builds rows by keyword. The migrations state the tables
once more, as history; they are not derived from here.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, NamedTuple, Union, get_args, get_origin, get_type_hints

__all__ = [
    "AgentState",
    "BatchWrite",
    "EventRow",
    "GoodbyeRow",
    "GpuRow",
    "PgType",
    "RegistryRow",
    "SampleRow",
    "WriteResult",
    "columns",
]


@dataclass(frozen=True, slots=True)
class PgType:
    """How a column travels (``name``: COPY, staging, ``unnest`` arrays) and, when the
    table stores it as something else, the cast that lands it there (``cast``)."""

    name: str
    cast: str | None = None


Uuid = Annotated[uuid.UUID, PgType("uuid")]
Timestamptz = Annotated[datetime, PgType("timestamptz")]
Int2 = Annotated[int, PgType("int2")]
Int4 = Annotated[int, PgType("int4")]
Int8 = Annotated[int, PgType("int8")]
Float8 = Annotated[float, PgType("float8")]
Bool = Annotated[bool, PgType("bool")]
Text = Annotated[str, PgType("text")]
# A PostgreSQL text[] literal, e.g. '{}' or '{"gpu: timeout after 2.0s"}'.
TextArrayLiteral = Annotated[str, PgType("text", "text[]")]
JsonText = Annotated[str, PgType("text", "jsonb")]


class SampleRow(NamedTuple):
    """One row of ``agent_samples``."""

    agent_id: Uuid
    sampled_at: Timestamptz
    received_at: Timestamptz
    seq: Int8
    hostname: Text
    pool_name: Text
    work_state: Text
    running_jobs: Int4
    cpu_load_1m: Float8
    cpu_load_5m: Float8
    cpu_load_15m: Float8
    cpu_cores: Int4
    cpu_available_cores: Int4
    mem_total_gb: Float8
    mem_available_gb: Float8
    gpu_type: Text
    gpu_count: Int4
    gpu_vram_total_gb: Float8
    gpu_vram_available_gb: Float8
    errors: TextArrayLiteral
    # The agent's sampled_at lay outside what ingest accepts around the receive time: the
    # row is keyed at the receive time instead, and says so.
    clock_skewed: Bool
    # The run of the agent (the nil UUID for agents that send none): two machines with one
    # agent_id keep both their samples.
    incarnation: Uuid


class GpuRow(NamedTuple):
    """One row of ``gpu_samples``."""

    agent_id: Uuid
    sampled_at: Timestamptz
    gpu_index: Int2
    gpu_uuid: Text
    name: Text
    vram_total_gb: Float8
    vram_free_gb: Float8
    util_pct: Float8 | None
    temp_c: Float8 | None
    power_w: Float8 | None
    error: Text | None
    incarnation: Uuid


class RegistryRow(NamedTuple):
    """The newest state of one agent within a batch (at most one per agent per batch)."""

    agent_id: Uuid
    hostname: Text
    pool_name: Text
    first_received_at: Timestamptz
    received_at: Timestamptz
    sampled_at: Timestamptz
    seq: Int8
    agent_version: Text
    principal: Text | None
    work_state: Text
    cpu_cores: Int4
    cpu_available_cores: Int4
    cpu_load_1m: Float8
    mem_total_gb: Float8
    mem_available_gb: Float8
    gpu_type: Text
    gpu_count: Int4
    gpu_vram_total_gb: Float8
    gpu_vram_available_gb: Float8
    resource_metrics: JsonText
    agent_stats: JsonText | None
    user_idle_s: Float8 | None
    presence_locked: Bool | None
    presence_source: Text | None
    offered: Bool
    withheld_reason: Text | None
    gpu_health: JsonText | None
    incarnation: Uuid | None
    state_received_at: Timestamptz  # when the message this state comes from was received
    clock_offset_s: Float8  # the agent's clock minus ingest's (sent_at - receive time)
    # Identity clash (two machines with one agent_id): the other run heard lately, and
    # since when both are heard interleaved. Written as planned, not by newest-wins.
    other_incarnation: Uuid | None
    other_seq: Int8 | None
    other_seen_at: Timestamptz | None
    identity_clash_since: Timestamptz | None


class GoodbyeRow(NamedTuple):
    """A graceful stop: offline at once, unless a newer sample is already stored."""

    agent_id: Uuid
    sent_at: Timestamptz
    received_at: Timestamptz
    incarnation: Uuid | None
    seq: Int8


class EventRow(NamedTuple):
    """One row of ``agent_status_events`` (its ``id`` is the table's own)."""

    agent_id: Uuid
    at: Timestamptz
    from_status: Text | None
    to_status: Text
    reason: Text


class AgentState(NamedTuple):
    """What the registry holds about an agent, as locked at the start of a batch."""

    status: str
    principal: str | None
    last_sampled_at: datetime | None
    offered: bool = True
    gpu_health: dict[str, str] | None = None
    incarnation: uuid.UUID | None = None
    last_seq: int = 0
    state_received_at: datetime | None = None
    clock_offset_s: float | None = None
    other_incarnation: uuid.UUID | None = None
    other_seq: int | None = None
    other_seen_at: datetime | None = None
    identity_clash_since: datetime | None = None


class BatchWrite(NamedTuple):
    samples: Sequence[SampleRow]
    gpus: Sequence[GpuRow]
    registry: Sequence[RegistryRow]
    events: Sequence[EventRow]
    goodbyes: Sequence[GoodbyeRow]


class WriteResult(NamedTuple):
    samples_stored: int
    samples_duplicate: int
    events: int


def _pg_type(hint: Any) -> PgType:
    if get_origin(hint) is Union:  # Optional[...]: the type of the non-None member
        hint = next(arg for arg in get_args(hint) if arg is not type(None))
    found = [m for m in getattr(hint, "__metadata__", ()) if isinstance(m, PgType)]
    if not found:
        raise TypeError(f"{hint!r} carries no PgType")
    return found[0]


def columns(row: type[tuple[Any, ...]]) -> tuple[tuple[str, PgType], ...]:
    """The (name, type) pairs of a row class, in field order."""
    hints = get_type_hints(row, include_extras=True)
    return tuple((name, _pg_type(hints[name])) for name in row._fields)  # type: ignore[attr-defined]
