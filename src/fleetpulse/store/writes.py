"""The ingest write path: one transaction per batch, idempotent, newest sample wins.

Ingest hands plain row tuples to :func:`write_batch`; nothing here knows the wire
format. Samples go in through ``unnest`` of binary arrays with ``ON CONFLICT DO
NOTHING`` (one statement per table, no staging table), so a redelivered or replayed
sample is stored once. Registry rows are locked in ``agent_id`` order first, which
also hands back each agent's bound principal and status for the identity check and
the status transitions, decided by the caller's pure core.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Final, NamedTuple

import psycopg
from psycopg.rows import TupleRow

__all__ = [
    "AgentState",
    "BatchWrite",
    "GoodbyeRow",
    "GpuRow",
    "RegistryRow",
    "SampleRow",
    "StatusEvent",
    "WriteResult",
    "lock_agents",
    "write_batch",
]


class SampleRow(NamedTuple):
    """One row of ``agent_samples``."""

    agent_id: uuid.UUID
    sampled_at: datetime
    received_at: datetime
    seq: int
    hostname: str
    pool_name: str
    work_state: str
    running_jobs: int
    cpu_load_1m: float
    cpu_load_5m: float
    cpu_load_15m: float
    cpu_cores: int
    cpu_available_cores: int
    mem_total_gb: float
    mem_available_gb: float
    gpu_type: str
    gpu_count: int
    gpu_vram_total_gb: float
    gpu_vram_available_gb: float
    errors: str  # a PostgreSQL text[] literal, e.g. '{}' or '{"gpu: timeout after 2.0s"}'


class GpuRow(NamedTuple):
    """One row of ``gpu_samples``."""

    agent_id: uuid.UUID
    sampled_at: datetime
    gpu_index: int
    gpu_uuid: str
    name: str
    vram_total_gb: float
    vram_free_gb: float
    util_pct: float | None
    temp_c: float | None
    power_w: float | None
    error: str | None


class RegistryRow(NamedTuple):
    """The newest state of one agent within a batch (at most one per agent per batch)."""

    agent_id: uuid.UUID
    hostname: str
    pool_name: str
    first_received_at: datetime
    received_at: datetime
    sampled_at: datetime
    seq: int
    agent_version: str
    principal: str | None
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
    resource_metrics: str  # JSON text
    agent_stats: str | None  # JSON text


class GoodbyeRow(NamedTuple):
    """A graceful stop: offline at once, unless a newer sample is already stored."""

    agent_id: uuid.UUID
    sent_at: datetime
    received_at: datetime


class StatusEvent(NamedTuple):
    agent_id: uuid.UUID
    at: datetime
    from_status: str | None
    to_status: str
    reason: str


class AgentState(NamedTuple):
    """What the registry holds about an agent, as locked at the start of a batch."""

    status: str
    principal: str | None
    last_sampled_at: datetime | None


class BatchWrite(NamedTuple):
    samples: Sequence[SampleRow]
    gpus: Sequence[GpuRow]
    registry: Sequence[RegistryRow]
    events: Sequence[StatusEvent]
    goodbyes: Sequence[GoodbyeRow]


class WriteResult(NamedTuple):
    samples_stored: int
    samples_duplicate: int
    events: int


def _columns(rows: Sequence[tuple[object, ...]], width: int) -> list[list[object]]:
    return [list(col) for col in zip(*rows, strict=True)] if rows else [[] for _ in range(width)]


_SAMPLE_TYPES: Final = (
    "uuid",
    "timestamptz",
    "timestamptz",
    "int8",
    "text",
    "text",
    "text",
    "int4",
    "float8",
    "float8",
    "float8",
    "int4",
    "int4",
    "float8",
    "float8",
    "text",
    "int4",
    "float8",
    "float8",
    "text",
)
_SAMPLE_SQL: Final = (
    "INSERT INTO agent_samples ("
    + ", ".join(SampleRow._fields[:-1])
    + ", errors) SELECT "
    + ", ".join(SampleRow._fields[:-1])
    + ", errors::text[] FROM unnest("
    + ", ".join(f"%s::{t}[]" for t in _SAMPLE_TYPES)
    + ") AS t("
    + ", ".join(SampleRow._fields)
    + ") ON CONFLICT (agent_id, sampled_at) DO NOTHING"
)

_GPU_TYPES: Final = [
    "uuid",
    "timestamptz",
    "int2",
    "text",
    "text",
    "float8",
    "float8",
    "float8",
    "float8",
    "float8",
    "text",
]
_GPU_SQL: Final = (
    "INSERT INTO gpu_samples ("
    + ", ".join(GpuRow._fields)
    + ") SELECT * FROM unnest("
    + ", ".join(f"%s::{t}[]" for t in _GPU_TYPES)
    + ") ON CONFLICT (agent_id, gpu_index, sampled_at) DO NOTHING"
)

# Typed columns that follow the newest sample only; a late replay leaves them alone.
_LATEST: Final = (
    "hostname",
    "pool_name",
    "last_sampled_at",
    "last_seq",
    "agent_version",
    "work_state",
    "cpu_cores",
    "cpu_available_cores",
    "cpu_load_1m",
    "mem_total_gb",
    "mem_available_gb",
    "gpu_type",
    "gpu_count",
    "gpu_vram_total_gb",
    "gpu_vram_available_gb",
    "resource_metrics",
    "agent_stats",
)
_NEWER: Final = "(r.last_sampled_at IS NULL OR EXCLUDED.last_sampled_at > r.last_sampled_at)"
_REGISTRY_TYPES: Final = (
    "uuid",
    "text",
    "text",
    "timestamptz",
    "timestamptz",
    "timestamptz",
    "int8",
    "text",
    "text",
    "text",
    "int4",
    "int4",
    "float8",
    "float8",
    "float8",
    "text",
    "int4",
    "float8",
    "float8",
    "text",
    "text",
)
_REGISTRY_SQL: Final = (
    "INSERT INTO agent_registry AS r (agent_id, hostname, pool_name, status, status_changed_at,"
    " first_seen_at, last_heartbeat_at, last_sampled_at, last_seq, agent_version, principal,"
    " work_state, cpu_cores, cpu_available_cores, cpu_load_1m, mem_total_gb, mem_available_gb,"
    " gpu_type, gpu_count, gpu_vram_total_gb, gpu_vram_available_gb, resource_metrics,"
    " agent_stats, updated_at)"
    " SELECT agent_id, hostname, pool_name, 'online', first_received_at, first_received_at,"
    " received_at, sampled_at, seq, agent_version, principal, work_state, cpu_cores,"
    " cpu_available_cores, cpu_load_1m, mem_total_gb, mem_available_gb, gpu_type, gpu_count,"
    " gpu_vram_total_gb, gpu_vram_available_gb, resource_metrics::jsonb, agent_stats::jsonb, now()"
    " FROM unnest("
    + ", ".join(f"%s::{t}[]" for t in _REGISTRY_TYPES)
    + ") AS t("
    + ", ".join(RegistryRow._fields)
    + ") ORDER BY agent_id"
    " ON CONFLICT (agent_id) DO UPDATE SET"
    " status = 'online',"
    " status_changed_at = CASE WHEN r.status = 'online' THEN r.status_changed_at"
    " ELSE EXCLUDED.status_changed_at END,"
    " last_heartbeat_at = GREATEST(r.last_heartbeat_at, EXCLUDED.last_heartbeat_at),"
    " principal = COALESCE(r.principal, EXCLUDED.principal),"
    " updated_at = now(), "
    + ", ".join(
        f"{col} = CASE WHEN {_NEWER} THEN EXCLUDED.{col} ELSE r.{col} END" for col in _LATEST
    )
)

_EVENT_SQL: Final = (
    "INSERT INTO agent_status_events (agent_id, at, from_status, to_status, reason)"
    " SELECT * FROM unnest(%s::uuid[], %s::timestamptz[], %s::text[], %s::text[], %s::text[])"
)

# A goodbye ends an agent's online spell unless a sample newer than it is already stored.
_GOODBYE_SQL: Final = (
    "WITH bye AS (SELECT * FROM unnest(%s::uuid[], %s::timestamptz[], %s::timestamptz[])"
    " AS t(agent_id, sent_at, received_at)),"
    " gone AS (UPDATE agent_registry r SET status = 'offline',"
    " status_changed_at = bye.received_at, updated_at = now()"
    " FROM bye WHERE r.agent_id = bye.agent_id AND r.status = 'online'"
    " AND (r.last_sampled_at IS NULL OR r.last_sampled_at <= bye.sent_at)"
    " RETURNING r.agent_id, bye.received_at)"
    " INSERT INTO agent_status_events (agent_id, at, from_status, to_status, reason)"
    " SELECT agent_id, received_at, 'online', 'offline', 'shutdown' FROM gone"
)

_LOCK_SQL: Final = (
    "SELECT agent_id, status, principal, last_sampled_at FROM agent_registry"
    " WHERE agent_id = ANY(%s::uuid[]) ORDER BY agent_id FOR UPDATE"
)


async def lock_agents(
    conn: psycopg.AsyncConnection[TupleRow], agent_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, AgentState]:
    """Lock the registry rows of these agents (inside a transaction) and return their state.

    Locking in ``agent_id`` order keeps concurrent ingest workers from deadlocking.
    """
    cur = await conn.execute(_LOCK_SQL, (list(agent_ids),), binary=True)
    return {row[0]: AgentState(row[1], row[2], row[3]) for row in await cur.fetchall()}


async def write_batch(
    conn: psycopg.AsyncConnection[TupleRow],
    agent_ids: Sequence[uuid.UUID],
    plan: Callable[[dict[uuid.UUID, AgentState]], BatchWrite],
) -> tuple[BatchWrite, WriteResult]:
    """Write one batch in one transaction.

    ``plan`` is the caller's pure core: given the locked state of the batch's agents it
    returns the rows to write (identity checks and transitions decided there).
    Errors are the caller's to map (``Database.connection`` maps them).
    """
    async with conn.transaction():
        state = await lock_agents(conn, agent_ids) if agent_ids else {}
        batch = plan(state)
        stored = 0
        async with conn.cursor() as cur:
            if batch.samples:
                await cur.execute(_SAMPLE_SQL, _columns(batch.samples, 20), binary=True)
                stored = cur.rowcount
            if batch.gpus:
                await cur.execute(_GPU_SQL, _columns(batch.gpus, 11), binary=True)
            if batch.registry:
                await cur.execute(_REGISTRY_SQL, _columns(batch.registry, 21), binary=True)
            if batch.events:
                await cur.execute(_EVENT_SQL, _columns(batch.events, 5), binary=True)
            shutdowns = 0
            if batch.goodbyes:
                await cur.execute(_GOODBYE_SQL, _columns(batch.goodbyes, 3), binary=True)
                shutdowns = cur.rowcount
    duplicates = len(batch.samples) - stored
    return batch, WriteResult(stored, duplicates, len(batch.events) + max(shutdowns, 0))
