"""Read queries of the API: registry rows, reliability, history buckets, status events.

Every function takes an open connection and returns immutable structs; SQL stays here.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, Final, Literal, TypeVar

import msgspec
import psycopg
from psycopg.rows import TupleRow, class_row

__all__ = [
    "RELIABILITY_WINDOW",
    "AgentRecord",
    "GpuBucket",
    "GpuState",
    "HostBucket",
    "StatusEvent",
    "fetch_agent",
    "fetch_agents",
    "fetch_events",
    "fetch_history",
    "fetch_registry",
    "fetch_reliability",
    "fetch_silenced",
    "latest_event_id",
    "ping",
]

Conn = psycopg.AsyncConnection[TupleRow]
_Row = TypeVar("_Row", bound=msgspec.Struct)
AgentStatus = Literal["online", "offline"]
RELIABILITY_WINDOW: Final = timedelta(days=30)


class GpuState(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """One GPU as the latest heartbeat reported it; ``error`` set means not capacity."""

    index: int
    uuid: str = ""
    name: str = ""
    vram_total_gb: float = 0.0
    vram_free_gb: float = 0.0
    util_pct: float | None = None
    temp_c: float | None = None
    power_w: float | None = None
    error: str | None = None
    health: str | None = None
    health_reasons: tuple[str, ...] = ()
    xid_events: tuple[int, ...] = ()
    throttle_reasons: tuple[str, ...] = ()
    retired_pages: int | None = None
    retired_pages_pending: bool | None = None
    ecc_uncorrected: int | None = None


class _AgentStats(msgspec.Struct, frozen=True, gc=False):
    gpu_probe_failures_total: int | None = None
    dropped_total: int | None = None


class AgentRecord(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """One registry row: the agent's latest state (untracked by the garbage collector:
    the index holds one per agent, and full collections over them would stall requests)."""

    agent_id: uuid.UUID
    hostname: str
    pool_name: str
    status: AgentStatus
    status_changed_at: datetime
    first_seen_at: datetime
    last_heartbeat_at: datetime
    last_sampled_at: datetime | None
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
    gpus: tuple[GpuState, ...]
    errors: tuple[str, ...]
    gpu_probe_failures_total: int | None
    spool_dropped_total: int | None
    updated_at: datetime
    # presence (migration 0004): None where the agent does not report it; offered unless
    # its owner's policy withholds it
    user_idle_s: float | None = None
    presence_locked: bool | None = None
    presence_source: str | None = None
    offered: bool = True
    withheld_reason: str | None = None
    clock_offset_s: float | None = None  # the agent's clock minus ingest's, last heard
    identity_clash_since: datetime | None = None  # two machines send as this agent since


class HostBucket(msgspec.Struct, frozen=True, kw_only=True):
    bucket: datetime
    samples: int
    cpu_load_1m_avg: float
    cpu_load_1m_min: float
    cpu_load_1m_max: float
    cpu_available_cores_avg: float
    cpu_available_cores_min: int
    cpu_available_cores_max: int
    mem_available_gb_avg: float
    mem_available_gb_min: float
    mem_available_gb_max: float
    gpu_vram_available_gb_avg: float
    gpu_vram_available_gb_min: float
    gpu_vram_available_gb_max: float


class GpuBucket(msgspec.Struct, frozen=True, kw_only=True):
    bucket: datetime
    gpu_index: int
    samples: int
    vram_free_gb_avg: float
    vram_free_gb_min: float
    vram_free_gb_max: float
    util_pct_avg: float | None


class StatusEvent(msgspec.Struct, frozen=True, kw_only=True):
    """A status transition, or (from = to) a claim or cordon change, with its ``detail``."""

    id: int
    agent_id: uuid.UUID
    hostname: str
    pool_name: str
    at: datetime
    from_status: AgentStatus | None
    to_status: AgentStatus
    reason: str
    detail: dict[str, Any] | None = None


_gpus_decoder: Final = msgspec.json.Decoder(list[GpuState])
_errors_decoder: Final = msgspec.json.Decoder(list[str])
_stats_decoder: Final = msgspec.json.Decoder(_AgentStats)

# The registry columns an AgentRecord takes as stored, by its own field names (the table
# uses the same ones); the JSON parts it decodes follow them, in this order.
_DECODED: Final = ("gpus", "errors", "gpu_probe_failures_total", "spool_dropped_total")
_STORED: Final = tuple(f for f in AgentRecord.__struct_fields__ if f not in _DECODED)
_AGENT_ID: Final = _STORED.index("agent_id")
_UPDATED_AT: Final = _STORED.index("updated_at")
REGISTRY_COLUMNS: Final = ", ".join(
    (
        *_STORED,
        "(resource_metrics->'gpus')::text",
        "(resource_metrics->'errors')::text",
        "agent_stats::text",
    )
)


def _decode(decoder: msgspec.json.Decoder[Any], text: str | None, default: Any) -> Any:
    # The jsonb is what the ingest accepted; a shape this reader does not know is no capacity.
    if not text or text == "null":
        return default
    try:
        return decoder.decode(text)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return default


def record_from_row(row: TupleRow) -> AgentRecord:
    """An :class:`AgentRecord` from a row selected with :data:`REGISTRY_COLUMNS`."""
    gpus, errors, stats_text = row[len(_STORED) :]
    stats: _AgentStats = _decode(_stats_decoder, stats_text, _AgentStats())
    return AgentRecord(
        **dict(zip(_STORED, row, strict=False)),
        gpus=tuple(_decode(_gpus_decoder, gpus, [])),
        errors=tuple(_decode(_errors_decoder, errors, [])),
        gpu_probe_failures_total=stats.gpu_probe_failures_total,
        spool_dropped_total=stats.dropped_total,
    )


async def ping(conn: Conn) -> None:
    await conn.execute("SELECT 1")


async def fetch_registry(
    conn: Conn,
    *,
    updated_after: datetime | None = None,
    known: Callable[[uuid.UUID], datetime | None] | None = None,
) -> list[AgentRecord]:
    """Every registry row, or those written after ``updated_after``; rows for which
    ``known(agent_id)`` already returns their ``updated_at`` are not decoded again."""
    if updated_after is None:
        cur = await conn.execute(f"SELECT {REGISTRY_COLUMNS} FROM agent_registry")
    else:
        cur = await conn.execute(
            f"SELECT {REGISTRY_COLUMNS} FROM agent_registry WHERE updated_at > %s",
            (updated_after,),
        )
    rows = await cur.fetchall()
    if known is None:
        return [record_from_row(row) for row in rows]
    return [record_from_row(row) for row in rows if known(row[_AGENT_ID]) != row[_UPDATED_AT]]


async def fetch_silenced(conn: Conn, *, after_id: int) -> tuple[int, list[AgentRecord]]:
    """Registry rows of agents the detector marked offline in events after ``after_id``, and
    the id of the last such event (``after_id`` when none). A sweep leaves ``updated_at``
    alone (its updates stay heap-only), so this is how a follower learns of it. Sweeps run
    one at a time, so their events commit in id order."""
    cur = await conn.execute(
        "SELECT max(id), array_agg(DISTINCT agent_id) FROM agent_status_events"
        " WHERE id > %s AND reason = 'silence'",
        (after_id,),
    )
    row = await cur.fetchone()
    if row is None or row[0] is None:
        return after_id, []
    last_id, agent_ids = int(row[0]), row[1]
    cur = await conn.execute(
        f"SELECT {REGISTRY_COLUMNS} FROM agent_registry WHERE agent_id = ANY(%s)", (agent_ids,)
    )
    return last_id, [record_from_row(r) for r in await cur.fetchall()]


async def fetch_agent(conn: Conn, agent_id: uuid.UUID) -> AgentRecord | None:
    cur = await conn.execute(
        f"SELECT {REGISTRY_COLUMNS} FROM agent_registry WHERE agent_id = %s", (agent_id,)
    )
    row = await cur.fetchone()
    return None if row is None else record_from_row(row)


async def fetch_agents(
    conn: Conn,
    *,
    status: AgentStatus | None = None,
    pool: str | None = None,
    limit: int = 1000,
    after: uuid.UUID | None = None,
) -> list[AgentRecord]:
    """Registry rows by agent_id; page with ``after`` = the last agent_id seen."""
    cur = await conn.execute(
        f"SELECT {REGISTRY_COLUMNS} FROM agent_registry"
        " WHERE (%(status)s::text IS NULL OR status = %(status)s)"
        "   AND (%(pool)s::text IS NULL OR pool_name = %(pool)s)"
        "   AND (%(after)s::uuid IS NULL OR agent_id > %(after)s)"
        " ORDER BY agent_id LIMIT %(limit)s",
        {"status": status, "pool": pool, "after": after, "limit": limit},
    )
    return [record_from_row(row) for row in await cur.fetchall()]


# Online share over the part of the window the agent has been known in: the state at the
# window's start comes from the last event before it; time between events belongs to the
# state the earlier one entered.
_RELIABILITY_SQL: Final = """
WITH bounds AS (
    SELECT %(now)s::timestamptz - %(window)s::interval AS lo, %(now)s::timestamptz AS hi
), seed AS (
    SELECT DISTINCT ON (e.agent_id) e.agent_id, b.lo AS at, e.to_status, 0::bigint AS id
      FROM agent_status_events e, bounds b
     WHERE e.at < b.lo AND (%(agent)s::uuid IS NULL OR e.agent_id = %(agent)s)
     ORDER BY e.agent_id, e.at DESC, e.id DESC
), inside AS (
    SELECT e.agent_id, e.at, e.to_status, e.id
      FROM agent_status_events e, bounds b
     WHERE e.at >= b.lo AND e.at <= b.hi AND (%(agent)s::uuid IS NULL OR e.agent_id = %(agent)s)
), spans AS (
    SELECT agent_id, to_status,
           extract(epoch FROM lead(at, 1, (SELECT hi FROM bounds))
                   OVER (PARTITION BY agent_id ORDER BY at, id) - at) AS seconds
      FROM (SELECT * FROM seed UNION ALL SELECT * FROM inside) AS events
)
SELECT agent_id,
       sum(seconds) FILTER (WHERE to_status = 'online') AS online_s,
       sum(seconds) AS known_s
  FROM spans GROUP BY agent_id
"""


async def fetch_reliability(
    conn: Conn,
    *,
    now: datetime,
    agent_id: uuid.UUID | None = None,
    window: timedelta = RELIABILITY_WINDOW,
) -> dict[uuid.UUID, float]:
    """Share of the window each agent was online, from its status events.

    Agents without events, or known for no measurable time, are absent (reliability unknown).
    """
    cur = await conn.execute(_RELIABILITY_SQL, {"now": now, "window": window, "agent": agent_id})
    result: dict[uuid.UUID, float] = {}
    for agent, online_s, known_s in await cur.fetchall():
        if known_s is not None and float(known_s) > 0:
            result[agent] = round(min(1.0, float(online_s or 0) / float(known_s)), 6)
    return result


def _aggregates(column: str, cast: str = "") -> str:
    """avg/min/max of a column, named as the bucket's fields are."""
    return (
        f"avg({column}){cast} AS {column}_avg, min({column}) AS {column}_min,"
        f" max({column}) AS {column}_max"
    )


_HOST_BUCKETS: Final = (
    "SELECT time_bucket(%(bucket)s::interval, sampled_at) AS bucket, count(*) AS samples, "
    + ", ".join(
        (
            _aggregates("cpu_load_1m"),
            _aggregates("cpu_available_cores", "::float8"),
            _aggregates("mem_available_gb"),
            _aggregates("gpu_vram_available_gb"),
        )
    )
    + " FROM agent_samples WHERE agent_id = %(agent)s"
    "  AND sampled_at >= %(since)s AND sampled_at < %(until)s"
    " GROUP BY 1 ORDER BY 1"
)
_GPU_BUCKETS: Final = (
    "SELECT time_bucket(%(bucket)s::interval, sampled_at) AS bucket, gpu_index,"
    f" count(*) AS samples, {_aggregates('vram_free_gb')}, avg(util_pct) AS util_pct_avg"
    " FROM gpu_samples WHERE agent_id = %(agent)s"
    "  AND sampled_at >= %(since)s AND sampled_at < %(until)s"
    " GROUP BY 1, gpu_index ORDER BY 1, gpu_index"
)


async def _fetch_as(
    conn: Conn, struct: type[_Row], query: str, params: dict[str, Any]
) -> list[_Row]:
    """Rows as ``struct``, each field from the result column of its name."""
    async with conn.cursor(row_factory=class_row(struct)) as cur:
        await cur.execute(query, params)
        return await cur.fetchall()


async def fetch_history(
    conn: Conn, agent_id: uuid.UUID, *, since: datetime, until: datetime, bucket: timedelta
) -> tuple[list[HostBucket], list[GpuBucket]]:
    """``time_bucket`` aggregates of one agent's samples in ``[since, until)``."""
    params = {"agent": agent_id, "since": since, "until": until, "bucket": bucket}
    hosts = await _fetch_as(conn, HostBucket, _HOST_BUCKETS, params)
    gpus = await _fetch_as(conn, GpuBucket, _GPU_BUCKETS, params)
    return hosts, gpus


_EVENT_COLUMNS: Final = (
    "e.id, e.agent_id, r.hostname, r.pool_name, e.at, e.from_status, e.to_status, e.reason,"
    " e.detail"
)


async def fetch_events(
    conn: Conn,
    *,
    agent_id: uuid.UUID | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    after_id: int | None = None,
    limit: int = 100,
) -> list[StatusEvent]:
    """Status transitions in id order (the order they were decided)."""
    return await _fetch_as(
        conn,
        StatusEvent,
        f"SELECT {_EVENT_COLUMNS} FROM agent_status_events e"
        " JOIN agent_registry r USING (agent_id)"
        " WHERE (%(agent)s::uuid IS NULL OR e.agent_id = %(agent)s)"
        "   AND (%(since)s::timestamptz IS NULL OR e.at >= %(since)s)"
        "   AND (%(until)s::timestamptz IS NULL OR e.at < %(until)s)"
        "   AND (%(after)s::bigint IS NULL OR e.id > %(after)s)"
        " ORDER BY e.id LIMIT %(limit)s",
        {"agent": agent_id, "since": since, "until": until, "after": after_id, "limit": limit},
    )


async def latest_event_id(conn: Conn) -> int:
    cur = await conn.execute("SELECT coalesce(max(id), 0) FROM agent_status_events")
    row = await cur.fetchone()
    return int(row[0]) if row else 0
