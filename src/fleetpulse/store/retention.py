"""Retention: drop hypertable chunks older than a configured age."""

from __future__ import annotations

from datetime import timedelta
from typing import Final

import psycopg
from psycopg.rows import TupleRow

from fleetpulse.store.engine import Edition

__all__ = ["HYPERTABLES", "apply_retention"]

HYPERTABLES: Final = ("agent_samples", "gpu_samples")


async def apply_retention(
    conn: psycopg.AsyncConnection[TupleRow], *, edition: Edition, older_than_s: float
) -> int:
    """Apache edition: drop old chunks now (returns how many); Community edition: make sure
    a retention policy exists for each hypertable (the job scheduler drops them; returns 0)."""
    age = timedelta(seconds=older_than_s)
    dropped = 0
    for table in HYPERTABLES:
        if edition == "timescale":
            await conn.execute(
                "SELECT add_retention_policy(%s::regclass, drop_after => %s,"
                " if_not_exists => true)",
                (table, age),
            )
            continue
        cur = await conn.execute(
            "SELECT count(*) FROM drop_chunks(%s::regclass, older_than => now() - %s::interval)",
            (table, age),
        )
        row = await cur.fetchone()
        dropped += int(row[0]) if row else 0
    return dropped
