"""Loading fleetpulse history from TimescaleDB into polars DataFrames.

Two engines read PostgreSQL straight into Arrow memory: connectorx and ADBC. Both are
kept (``engine=``) because their speed depends on the machine; ``bench/polars_load.py``
measures them on a million samples and :data:`DEFAULT_ENGINE` is the faster one there.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Final, Literal

import polars as pl
import psycopg

from fleetpulse.errors import StoreError
from fleetpulse.store import map_db_errors

__all__ = [
    "DEFAULT_ENGINE",
    "ENGINES",
    "Engine",
    "load_agent_samples",
    "load_gpu_samples",
    "load_registry",
    "load_status_events",
    "read_sql",
    "utc",
]

Engine = Literal["connectorx", "adbc"]
ENGINES: Final[tuple[Engine, ...]] = ("connectorx", "adbc")
# bench/polars_load.py, 1,000,000 agent_samples rows, 2 cores, runs interleaved: ADBC's
# median was 8-13 % below connectorx's in each of three runs (1.52-1.89 s vs 1.67-2.18 s).
DEFAULT_ENGINE: Final[Engine] = "adbc"

AGENT_SAMPLE_COLUMNS: Final = (
    "sampled_at, received_at, seq, hostname, pool_name, work_state, running_jobs, "
    "cpu_load_1m, cpu_load_5m, cpu_load_15m, cpu_cores, cpu_available_cores, "
    "mem_total_gb, mem_available_gb, gpu_type, gpu_count, gpu_vram_total_gb, "
    "gpu_vram_available_gb"
)
GPU_SAMPLE_COLUMNS: Final = (
    "sampled_at, gpu_index, gpu_uuid, name, vram_total_gb, vram_free_gb, util_pct, temp_c, "
    "power_w, error"
)


def utc(moment: datetime) -> datetime:
    """An aware UTC datetime; a naive one is taken to be UTC already."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def _literal(moment: datetime) -> str:
    # Rendered from a datetime object, never from caller text, so it cannot inject SQL.
    return f"'{utc(moment).isoformat()}'::timestamptz"


def _time_range(column: str, since: datetime | None, until: datetime | None) -> str:
    clauses = []
    if since is not None:
        clauses.append(f"{column} >= {_literal(since)}")
    if until is not None:
        clauses.append(f"{column} < {_literal(until)}")
    return " AND ".join(clauses) or "TRUE"


def _probe(url: str) -> None:
    with map_db_errors(url):
        psycopg.connect(url, connect_timeout=3).close()


@contextmanager
def _mapped_errors(url: str) -> Iterator[None]:
    """Engines raise their own errors; a failed read is probed once to tell an unreachable
    server (``ServiceUnavailable``) from a refused query (``StoreError``)."""
    try:
        yield
    except Exception as exc:  # connectorx and adbc_driver_manager share no base to name
        _probe(url)
        raise StoreError(f"query failed: {str(exc).strip().splitlines()[0]}") from exc


def _normalise(frame: pl.DataFrame) -> pl.DataFrame:
    """Both engines agree after this: timestamps as microseconds in UTC."""
    casts = [
        pl.col(name).dt.convert_time_zone("UTC").dt.cast_time_unit("us")
        for name, dtype in frame.schema.items()
        if isinstance(dtype, pl.Datetime) and dtype.time_zone is not None
    ]
    return frame.with_columns(casts) if casts else frame


def read_sql(url: str, query: str, *, engine: Engine = DEFAULT_ENGINE) -> pl.DataFrame:
    """Run one query and return its rows as a DataFrame."""
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}, not {engine!r}")
    if engine == "connectorx":
        # connectorx waits 30 s for a server that is not there; one quick probe says so first.
        _probe(url)
    with _mapped_errors(url):
        frame = pl.read_database_uri(query, url, engine=engine)
    return _normalise(frame)


def load_agent_samples(
    url: str,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    engine: Engine = DEFAULT_ENGINE,
) -> pl.DataFrame:
    """Host-level samples with ``since <= sampled_at < until``."""
    query = (
        f"SELECT agent_id::text AS agent_id, {AGENT_SAMPLE_COLUMNS} FROM agent_samples "
        f"WHERE {_time_range('sampled_at', since, until)}"
    )
    return read_sql(url, query, engine=engine)


def load_gpu_samples(
    url: str,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    engine: Engine = DEFAULT_ENGINE,
) -> pl.DataFrame:
    """Per-GPU samples; ``name`` is the GPU type."""
    query = (
        f"SELECT agent_id::text AS agent_id, {GPU_SAMPLE_COLUMNS} FROM gpu_samples "
        f"WHERE {_time_range('sampled_at', since, until)}"
    )
    return read_sql(url, query, engine=engine)


def load_status_events(
    url: str,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    engine: Engine = DEFAULT_ENGINE,
) -> pl.DataFrame:
    """Status transitions, oldest first, with the agent's hostname and pool."""
    query = (
        "SELECT e.agent_id::text AS agent_id, r.hostname, r.pool_name, e.at, e.from_status, "
        "e.to_status, e.reason FROM agent_status_events e JOIN agent_registry r "
        f"USING (agent_id) WHERE {_time_range('e.at', since, until)} "
        "ORDER BY e.agent_id, e.at, e.id"
    )
    return read_sql(url, query, engine=engine)


def load_registry(url: str, *, engine: Engine = DEFAULT_ENGINE) -> pl.DataFrame:
    """One row per agent: identity, status and first sight."""
    query = (
        "SELECT agent_id::text AS agent_id, hostname, pool_name, status, status_changed_at, "
        "first_seen_at, last_heartbeat_at, gpu_type, gpu_count, cpu_cores, mem_total_gb "
        "FROM agent_registry ORDER BY hostname"
    )
    return read_sql(url, query, engine=engine)
