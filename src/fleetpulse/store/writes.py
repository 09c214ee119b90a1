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
from typing import TYPE_CHECKING, Final, Literal, NamedTuple

from fleetpulse.errors import StoreError

if TYPE_CHECKING:  # annotations only: the planner imports the row types without the driver
    import psycopg
    from psycopg.rows import TupleRow

__all__ = [
    "AgentState",
    "BatchWrite",
    "EventRow",
    "GoodbyeRow",
    "GpuRow",
    "RegistryRow",
    "SampleRow",
    "WriteMethod",
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


class EventRow(NamedTuple):
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
    events: Sequence[EventRow]
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
_UNNEST_REGISTRY: Final = (
    "unnest("
    + ", ".join(f"%s::{t}[]" for t in _REGISTRY_TYPES)
    + ") AS t("
    + ", ".join(RegistryRow._fields)
    + ")"
)


def _registry_insert(source: str, where: str = "") -> str:
    # DO NOTHING: an agent registered by a concurrent batch since our lock is not ours to
    # overwrite; the caller sees the shortfall and re-plans against the committed row.
    return (
        "INSERT INTO agent_registry (agent_id, hostname, pool_name, status,"
        " status_changed_at, first_seen_at, last_heartbeat_at, last_sampled_at, last_seq,"
        " agent_version, principal, work_state, cpu_cores, cpu_available_cores, cpu_load_1m,"
        " mem_total_gb, mem_available_gb, gpu_type, gpu_count, gpu_vram_total_gb,"
        " gpu_vram_available_gb, resource_metrics, agent_stats, updated_at)"
        " SELECT agent_id, hostname, pool_name, 'online', first_received_at, first_received_at,"
        " received_at, sampled_at, seq, agent_version, principal, work_state, cpu_cores,"
        " cpu_available_cores, cpu_load_1m, mem_total_gb, mem_available_gb, gpu_type, gpu_count,"
        " gpu_vram_total_gb, gpu_vram_available_gb, resource_metrics::jsonb, agent_stats::jsonb,"
        f" now() FROM {source} {where} ORDER BY agent_id"
        " ON CONFLICT (agent_id) DO NOTHING"
    )


_SOURCE: Final = {
    "last_sampled_at": "t.sampled_at",
    "last_seq": "t.seq",
    "resource_metrics": "t.resource_metrics::jsonb",
    "agent_stats": "t.agent_stats::jsonb",
}


def _registry_update(source: str, where: str = "") -> str:
    return (
        "UPDATE agent_registry r SET"
        " status = 'online',"
        " status_changed_at = CASE WHEN r.status = 'online' THEN r.status_changed_at"
        " ELSE t.first_received_at END,"
        " last_heartbeat_at = GREATEST(r.last_heartbeat_at, t.received_at),"
        " principal = COALESCE(r.principal, t.principal),"
        " updated_at = now(), "
        + ", ".join(
            f"{col} = CASE WHEN (r.last_sampled_at IS NULL OR t.sampled_at > r.last_sampled_at)"
            f" THEN {_SOURCE.get(col, 't.' + col)} ELSE r.{col} END"
            for col in _LATEST
        )
        + f" FROM {source} WHERE r.agent_id = t.agent_id {where}"
    )


_REGISTRY_SQL: Final = _registry_insert(_UNNEST_REGISTRY)
_REGISTRY_UPDATE_SQL: Final = _registry_update(_UNNEST_REGISTRY)

# The COPY path: rows go to session temp tables in binary COPY (formatted in C, no
# per-element array dumping in Python), then one set-based statement per target table.
_STAGE_DDL: Final = (
    "CREATE TEMP TABLE IF NOT EXISTS fp_stage_samples ("
    "agent_id uuid, sampled_at timestamptz, received_at timestamptz, seq int8, hostname text,"
    " pool_name text, work_state text, running_jobs int4, cpu_load_1m float8, cpu_load_5m float8,"
    " cpu_load_15m float8, cpu_cores int4, cpu_available_cores int4, mem_total_gb float8,"
    " mem_available_gb float8, gpu_type text, gpu_count int4, gpu_vram_total_gb float8,"
    " gpu_vram_available_gb float8, errors text) ON COMMIT DELETE ROWS;"
    "CREATE TEMP TABLE IF NOT EXISTS fp_stage_gpus ("
    "agent_id uuid, sampled_at timestamptz, gpu_index int2, gpu_uuid text, name text,"
    " vram_total_gb float8, vram_free_gb float8, util_pct float8, temp_c float8, power_w float8,"
    " error text) ON COMMIT DELETE ROWS;"
    "CREATE TEMP TABLE IF NOT EXISTS fp_stage_registry ("
    "agent_id uuid, hostname text, pool_name text, first_received_at timestamptz,"
    " received_at timestamptz, sampled_at timestamptz, seq int8, agent_version text,"
    " principal text, work_state text, cpu_cores int4, cpu_available_cores int4,"
    " cpu_load_1m float8, mem_total_gb float8, mem_available_gb float8, gpu_type text,"
    " gpu_count int4, gpu_vram_total_gb float8, gpu_vram_available_gb float8,"
    " resource_metrics text, agent_stats text, is_new bool) ON COMMIT DELETE ROWS"
)
_COPY_SAMPLES: Final = "COPY fp_stage_samples FROM STDIN (FORMAT BINARY)"
_COPY_GPUS: Final = "COPY fp_stage_gpus FROM STDIN (FORMAT BINARY)"
_COPY_REGISTRY: Final = "COPY fp_stage_registry FROM STDIN (FORMAT BINARY)"
_STAGED_SAMPLES: Final = (
    "INSERT INTO agent_samples ("
    + ", ".join(SampleRow._fields)
    + ") SELECT "
    + ", ".join(SampleRow._fields[:-1])
    + ", errors::text[] FROM fp_stage_samples ON CONFLICT (agent_id, sampled_at) DO NOTHING"
)
_STAGED_GPUS: Final = (
    "INSERT INTO gpu_samples ("
    + ", ".join(GpuRow._fields)
    + ") SELECT * FROM fp_stage_gpus ON CONFLICT (agent_id, gpu_index, sampled_at) DO NOTHING"
)
_STAGED_REGISTRY_UPDATE: Final = _registry_update("fp_stage_registry t", "AND NOT t.is_new")
_STAGED_REGISTRY_INSERT: Final = _registry_insert("fp_stage_registry", "WHERE is_new")
_SAMPLE_COPY_TYPES: Final = (*_SAMPLE_TYPES[:-1], "text")
_REGISTRY_COPY_TYPES: Final = (*_REGISTRY_TYPES, "bool")

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
WriteMethod = Literal["copy", "unnest"]


async def lock_agents(
    conn: psycopg.AsyncConnection[TupleRow], agent_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, AgentState]:
    """Lock the registry rows of these agents (inside a transaction) and return their state.

    Locking in ``agent_id`` order keeps concurrent ingest workers from deadlocking.
    """
    # One array literal: PostgreSQL parses it faster than psycopg dumps a list of UUIDs.
    literal = "{" + ",".join(map(str, agent_ids)) + "}"
    cur = await conn.execute(_LOCK_SQL, (literal,))
    return {row[0]: AgentState(row[1], row[2], row[3]) for row in await cur.fetchall()}


async def write_batch(
    conn: psycopg.AsyncConnection[TupleRow],
    agent_ids: Sequence[uuid.UUID],
    plan: Callable[[dict[uuid.UUID, AgentState]], BatchWrite],
    *,
    method: WriteMethod = "copy",
) -> tuple[BatchWrite, WriteResult]:
    """Write one batch in one transaction.

    ``plan`` is the caller's pure core: given the locked state of the batch's agents it
    returns the rows to write (identity checks and transitions decided there).
    ``method`` picks binary COPY through staging tables (default, fastest measured) or
    ``unnest`` of array parameters. Errors are the caller's to map
    (``Database.connection`` maps them).
    """
    for _ in range(_REPLAN_ATTEMPTS):
        try:
            return await _write_once(conn, agent_ids, plan, method)
        except _Replan:
            continue  # rolled back; the lock now sees the concurrently registered agents
    raise StoreError("agents kept being registered concurrently while writing a batch")


class _Replan(Exception):
    """A new agent of this batch was registered by a concurrent transaction meanwhile."""


_REPLAN_ATTEMPTS: Final = 5


async def _write_once(
    conn: psycopg.AsyncConnection[TupleRow],
    agent_ids: Sequence[uuid.UUID],
    plan: Callable[[dict[uuid.UUID, AgentState]], BatchWrite],
    method: WriteMethod,
) -> tuple[BatchWrite, WriteResult]:
    async with conn.transaction():
        state = await lock_agents(conn, agent_ids) if agent_ids else {}
        batch = plan(state)
        stored = 0
        async with conn.cursor() as cur:
            if method == "copy":
                stored = await _write_staged(cur, batch, state)
            else:
                stored = await _write_unnest(cur, batch, state)
            if batch.events:
                await cur.execute(_EVENT_SQL, _columns(batch.events, 5), binary=True)
            shutdowns = 0
            if batch.goodbyes:
                await cur.execute(_GOODBYE_SQL, _columns(batch.goodbyes, 3), binary=True)
                shutdowns = cur.rowcount
    duplicates = len(batch.samples) - stored
    return batch, WriteResult(stored, duplicates, len(batch.events) + max(shutdowns, 0))


async def _write_staged(
    cur: psycopg.AsyncCursor[TupleRow], batch: BatchWrite, state: dict[uuid.UUID, AgentState]
) -> int:
    await cur.execute(_STAGE_DDL)
    if batch.registry:
        # Registry first: a concurrent registration is found before the heavy inserts.
        async with cur.copy(_COPY_REGISTRY) as copy:
            copy.set_types(_REGISTRY_COPY_TYPES)
            for row in batch.registry:
                await copy.write_row((*row, row.agent_id not in state))
        new = sum(1 for row in batch.registry if row.agent_id not in state)
        if new:
            await cur.execute(_STAGED_REGISTRY_INSERT)
            if cur.rowcount < new:
                raise _Replan
        if new < len(batch.registry):
            await cur.execute(_STAGED_REGISTRY_UPDATE)
    stored = 0
    if batch.samples:
        async with cur.copy(_COPY_SAMPLES) as copy:
            copy.set_types(_SAMPLE_COPY_TYPES)
            for sample in batch.samples:
                await copy.write_row(sample)
        await cur.execute(_STAGED_SAMPLES)
        stored = cur.rowcount
    if batch.gpus:
        async with cur.copy(_COPY_GPUS) as copy:
            copy.set_types(_GPU_TYPES)
            for gpu in batch.gpus:
                await copy.write_row(gpu)
        await cur.execute(_STAGED_GPUS)
    return stored


async def _write_unnest(
    cur: psycopg.AsyncCursor[TupleRow], batch: BatchWrite, state: dict[uuid.UUID, AgentState]
) -> int:
    known = [row for row in batch.registry if row.agent_id in state]
    new = [row for row in batch.registry if row.agent_id not in state]
    if new:
        await cur.execute(_REGISTRY_SQL, _columns(new, 21), binary=True)
        if cur.rowcount < len(new):
            raise _Replan
    if known:
        await cur.execute(_REGISTRY_UPDATE_SQL, _columns(known, 21), binary=True)
    stored = 0
    if batch.samples:
        await cur.execute(_SAMPLE_SQL, _columns(batch.samples, 20), binary=True)
        stored = cur.rowcount
    if batch.gpus:
        await cur.execute(_GPU_SQL, _columns(batch.gpus, 11), binary=True)
    return stored
