"""The ingest write path: one transaction per batch, idempotent, newest sample wins.

The caller holds a batch's registry rows locked as a context, plans against them with its
pure core, then writes what it planned, in that order::

    async with locked_batch(conn, agent_ids) as batch:
        rows = plan(batch.state)  # identity checks and transitions decided there
        result = await batch.write(rows)

Rows (:mod:`fleetpulse.store.rows`) go to session temp tables in binary COPY (formatted
in C, no per-element array dumping in Python), then one set-based statement per target
table with ``ON CONFLICT DO NOTHING``, so a redelivered or replayed sample is stored once.
Every column list and type here is derived from the row classes.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any, Final

import psycopg
from psycopg.rows import TupleRow

from fleetpulse.store.rows import (
    AgentState,
    BatchWrite,
    EventRow,
    GoodbyeRow,
    GpuRow,
    PgType,
    RegistryRow,
    SampleRow,
    WriteResult,
    columns,
)

__all__ = ["REPLAN_ATTEMPTS", "LockedBatch", "locked_batch"]

Conn = psycopg.AsyncConnection[TupleRow]

# How often a batch is planned again because its new agents kept being registered by
# concurrent transactions before the caller gives up (and retries later).
REPLAN_ATTEMPTS: Final = 5


def _value(name: str, pg: PgType, prefix: str = "") -> str:
    """A staged column as the target table stores it."""
    return f"{prefix}{name}::{pg.cast}" if pg.cast else f"{prefix}{name}"


def _stage(table: str, cols: Sequence[tuple[str, PgType]]) -> str:
    typed = ", ".join(f"{name} {pg.name}" for name, pg in cols)
    return f"CREATE TEMP TABLE IF NOT EXISTS {table} ({typed}) ON COMMIT DELETE ROWS"


def _copy(table: str) -> str:
    return f"COPY {table} FROM STDIN (FORMAT BINARY)"


def _staged_insert(target: str, stage: str, cols: Sequence[tuple[str, PgType]], key: str) -> str:
    return (
        f"INSERT INTO {target} ({', '.join(name for name, _ in cols)})"
        f" SELECT {', '.join(_value(name, pg) for name, pg in cols)} FROM {stage}"
        f" ON CONFLICT ({key}) DO NOTHING"
    )


def _unnest(cols: Sequence[tuple[str, PgType]]) -> str:
    arrays = ", ".join(f"%s::{pg.name}[]" for _, pg in cols)
    return f"unnest({arrays}) AS t({', '.join(name for name, _ in cols)})"


_SAMPLE: Final = columns(SampleRow)
_GPU: Final = columns(GpuRow)
_REGISTRY: Final = columns(RegistryRow)
_EVENT: Final = columns(EventRow)
_GOODBYE: Final = columns(GoodbyeRow)

_SAMPLE_TYPES: Final = [pg.name for _, pg in _SAMPLE]
_GPU_TYPES: Final = [pg.name for _, pg in _GPU]
# The staged registry row says whether its agent was absent when the batch locked.
_REGISTRY_STAGE: Final = (*_REGISTRY, ("is_new", PgType("bool")))
_REGISTRY_TYPES: Final = [pg.name for _, pg in _REGISTRY_STAGE]

_STAGE_DDL: Final = ";".join(
    (
        _stage("fp_stage_samples", _SAMPLE),
        _stage("fp_stage_gpus", _GPU),
        _stage("fp_stage_registry", _REGISTRY_STAGE),
    )
)
_STAGED_SAMPLES: Final = _staged_insert(
    "agent_samples", "fp_stage_samples", _SAMPLE, "agent_id, sampled_at, incarnation"
)
_STAGED_GPUS: Final = _staged_insert(
    "gpu_samples", "fp_stage_gpus", _GPU, "agent_id, gpu_index, sampled_at, incarnation"
)

# Where a registry row's field lands in agent_registry when the name there differs.
# ``first_received_at`` is not among them: it opens an online spell (status_changed_at)
# and, for a new agent, is its first_seen_at.
_REGISTRY_TARGET: Final = {
    "received_at": "last_heartbeat_at",
    "sampled_at": "last_sampled_at",
    "seq": "last_seq",
}
# Whether the staged message ``t`` is newer than the state in row ``r`` (the same rule as the
# planner's within a batch): within one incarnation of the agent by ``seq``; between two, by
# receive order; an agent that sends no incarnation (older agents) by its ``sampled_at``,
# which ingest bounds around the receive time. The agent's clock alone never decides.
_NEWER: Final = (
    "(r.last_sampled_at IS NULL"
    " OR (t.incarnation = r.incarnation AND t.seq > r.last_seq)"
    " OR (t.incarnation IS DISTINCT FROM r.incarnation"
    " AND t.{received} >= COALESCE(r.state_received_at, r.last_heartbeat_at)"
    # a late copy of what the run before sent (a redelivery after a restart) is not newer
    " AND NOT COALESCE(t.incarnation = r.other_incarnation AND t.seq <= r.other_seq, false))"
    " OR (t.incarnation IS NULL AND r.incarnation IS NULL AND t.{sampled} > r.last_sampled_at))"
)
_REGISTRY_PLAIN: Final = [(n, pg) for n, pg in _REGISTRY if n != "first_received_at"]
# Columns that follow the newest sample only; a late replay leaves them alone. The
# heartbeat time only moves forward and a bound principal is never replaced.
_CLASH: Final = ("other_incarnation", "other_seq", "other_seen_at", "identity_clash_since")
_REGISTRY_LATEST: Final = [
    (n, pg)
    for n, pg in _REGISTRY_PLAIN
    if n not in {"agent_id", "received_at", "principal", *_CLASH}
]

# DO NOTHING: an agent registered by a concurrent batch since our lock is not ours to
# overwrite; the writer sees the shortfall and the caller plans again against that row.
_STAGED_REGISTRY_INSERT: Final = (
    "INSERT INTO agent_registry (status, status_changed_at, first_seen_at, updated_at, "
    + ", ".join(_REGISTRY_TARGET.get(n, n) for n, _ in _REGISTRY_PLAIN)
    + ") SELECT 'online', t.first_received_at, t.first_received_at, now(), "
    + ", ".join(_value(n, pg, "t.") for n, pg in _REGISTRY_PLAIN)
    + " FROM fp_stage_registry t WHERE t.is_new ORDER BY t.agent_id"
    " ON CONFLICT (agent_id) DO NOTHING"
)
_STAGED_REGISTRY_UPDATE: Final = (
    "UPDATE agent_registry r SET"
    " status = 'online',"
    " status_changed_at = CASE WHEN r.status = 'online' THEN r.status_changed_at"
    " ELSE t.first_received_at END,"
    " last_heartbeat_at = GREATEST(r.last_heartbeat_at, t.received_at),"
    " principal = COALESCE(r.principal, t.principal),"
    " updated_at = now(), "
    + "".join(f"{n} = t.{n}, " for n in _CLASH)
    + ", ".join(
        f"{_REGISTRY_TARGET.get(n, n)} = CASE WHEN"
        f" {_NEWER.format(received='state_received_at', sampled='sampled_at')}"
        f" THEN {_value(n, pg, 't.')} ELSE r.{_REGISTRY_TARGET.get(n, n)} END"
        for n, pg in _REGISTRY_LATEST
    )
    + " FROM fp_stage_registry t WHERE r.agent_id = t.agent_id AND NOT t.is_new"
)

_EVENT_SQL: Final = (
    f"INSERT INTO agent_status_events ({', '.join(n for n, _ in _EVENT)})"
    f" SELECT * FROM {_unnest(_EVENT)}"
)
# A goodbye ends an agent's online spell unless a sample newer than it is already stored
# (newer by the same rule as samples: its own clock does not decide for an agent that sends
# an incarnation).
_GOODBYE_SQL: Final = (
    f"WITH bye AS (SELECT * FROM {_unnest(_GOODBYE)}),"
    " gone AS (UPDATE agent_registry r SET status = 'offline',"
    " status_changed_at = t.received_at, updated_at = now()"
    " FROM bye t WHERE r.agent_id = t.agent_id AND r.status = 'online'"
    " AND (r.last_sampled_at IS NULL"
    " OR (t.incarnation = r.incarnation AND t.seq >= r.last_seq)"
    " OR (t.incarnation IS DISTINCT FROM r.incarnation"
    " AND t.received_at >= COALESCE(r.state_received_at, r.last_heartbeat_at))"
    " OR (t.incarnation IS NULL AND r.incarnation IS NULL AND r.last_sampled_at <= t.sent_at))"
    " RETURNING r.agent_id, t.received_at)"
    f" INSERT INTO agent_status_events ({', '.join(n for n, _ in _EVENT)})"
    " SELECT agent_id, received_at, 'online', 'offline', 'shutdown' FROM gone"
)

# First key of pg_advisory_xact_lock(int, int) for agents not registered yet ('FPAG');
# the second is the agent. A row lock cannot hold an agent that has no row: without this
# a batch could plan against "absent" while a concurrent one registers the agent, and
# (say) drop that agent's goodbye. Taken, in agent order, before any row lock, so the two
# kinds of lock cannot wait on each other in a cycle.
NEW_AGENT_LOCK_CLASS: Final = 0x46504147
_LOCK_NEW_SQL: Final = (
    "SELECT pg_advisory_xact_lock(%s, hashtext(a.id::text)) FROM"
    " (SELECT id FROM unnest(%s::uuid[]) AS u(id) WHERE NOT EXISTS"
    " (SELECT 1 FROM agent_registry r WHERE r.agent_id = u.id) ORDER BY id) a"
)
_LOCK_SQL: Final = (
    "SELECT agent_id, status, principal, last_sampled_at, offered, gpu_health, incarnation,"
    " last_seq, state_received_at, clock_offset_s, other_incarnation, other_seq, other_seen_at,"
    " identity_clash_since FROM agent_registry"
    " WHERE agent_id = ANY(%s::uuid[]) ORDER BY agent_id FOR UPDATE"
)


def _arrays(rows: Sequence[tuple[Any, ...]]) -> list[list[Any]]:
    return [list(col) for col in zip(*rows, strict=True)]


class _Replan(Exception):
    """A new agent of this batch was registered by a concurrent transaction meanwhile."""


class LockedBatch:
    """The registry state of a batch's agents, locked inside the batch's transaction."""

    def __init__(self, conn: Conn, state: dict[uuid.UUID, AgentState]) -> None:
        self.state = state
        self.replan = False  # set by write: roll back, lock and plan again
        self._conn = conn

    async def write(self, batch: BatchWrite) -> WriteResult | None:
        """Write rows planned against :attr:`state`. None when an agent this batch found
        absent was registered by a concurrent transaction since the lock: the transaction
        is rolled back when the context exits; lock and plan again."""
        async with self._conn.cursor() as cur:
            await cur.execute(_STAGE_DDL)
            # Registry first: a concurrent registration is found before the heavy inserts.
            if batch.registry and not await self._write_registry(cur, batch.registry):
                self.replan = True
                return None
            stored = 0
            if batch.samples:
                await _copy_rows(cur, "fp_stage_samples", _SAMPLE_TYPES, batch.samples)
                await cur.execute(_STAGED_SAMPLES)
                stored = cur.rowcount
            if batch.gpus:
                await _copy_rows(cur, "fp_stage_gpus", _GPU_TYPES, batch.gpus)
                await cur.execute(_STAGED_GPUS)
            if batch.events:
                await cur.execute(_EVENT_SQL, _arrays(batch.events), binary=True)
            shutdowns = 0
            if batch.goodbyes:
                await cur.execute(_GOODBYE_SQL, _arrays(batch.goodbyes), binary=True)
                shutdowns = cur.rowcount
        duplicates = len(batch.samples) - stored
        return WriteResult(stored, duplicates, len(batch.events) + max(shutdowns, 0))

    async def _write_registry(
        self, cur: psycopg.AsyncCursor[TupleRow], registry: Sequence[RegistryRow]
    ) -> bool:
        """Insert the new agents, update the known; False when a new one was taken."""
        staged = [(*row, row.agent_id not in self.state) for row in registry]
        await _copy_rows(cur, "fp_stage_registry", _REGISTRY_TYPES, staged)
        new = sum(1 for row in staged if row[-1])
        if new:
            await cur.execute(_STAGED_REGISTRY_INSERT)
            if cur.rowcount < new:
                return False
        if new < len(registry):
            await cur.execute(_STAGED_REGISTRY_UPDATE)
        return True


async def _copy_rows(
    cur: psycopg.AsyncCursor[TupleRow],
    table: str,
    types: Sequence[str],
    rows: Sequence[tuple[Any, ...]],
) -> None:
    async with cur.copy(_copy(table)) as copy:
        copy.set_types(types)
        for row in rows:
            await copy.write_row(row)


@contextlib.asynccontextmanager
async def locked_batch(conn: Conn, agent_ids: Sequence[uuid.UUID]) -> AsyncIterator[LockedBatch]:
    """Open the batch's transaction and lock its agents (in ``agent_id`` order, so
    concurrent workers do not deadlock): the registry rows of the known ones, an advisory
    lock for those not registered yet; commit at exit.

    When :meth:`LockedBatch.write` found a concurrent registration the transaction is
    rolled back instead and the context exits quietly with ``batch.replan`` set. Errors
    are the caller's to map (``Database.connection`` maps them).
    """
    with contextlib.suppress(_Replan):
        async with conn.transaction():
            batch = LockedBatch(conn, await _lock(conn, agent_ids) if agent_ids else {})
            yield batch
            if batch.replan:
                raise _Replan  # rolls the transaction back


async def _lock(conn: Conn, agent_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, AgentState]:
    # One array literal: PostgreSQL parses it faster than psycopg dumps a list of UUIDs.
    literal = "{" + ",".join(map(str, agent_ids)) + "}"
    # Waits while a concurrent batch registering one of them is open; then the row
    # lock below sees the committed row.
    await conn.execute(_LOCK_NEW_SQL, (NEW_AGENT_LOCK_CLASS, literal))
    cur = await conn.execute(_LOCK_SQL, (literal,))
    return {row[0]: AgentState(*row[1:]) for row in await cur.fetchall()}
