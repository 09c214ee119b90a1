"""Silence detection in the database: one statement per sweep, one leader by advisory lock."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Final

import psycopg
from psycopg.rows import TupleRow

__all__ = [
    "DETECTOR_LOCK_KEY",
    "release_detector_lock",
    "sweep_silent",
    "try_detector_lock",
]

# Fixed key of the session-level advisory lock only the acting detector holds.
DETECTOR_LOCK_KEY: Final = 0x666C_7470_6C73_0001  # "fltpls" + 1

# Walks the partial index agent_registry_silence (online rows by last_heartbeat_at), so a
# sweep that finds nobody costs one index probe however large the registry. Rows a batch
# has locked are skipped: that batch is writing a fresh heartbeat for them. The ids go
# through an array (an InitPlan) so the UPDATE probes the primary key per agent instead of
# hash-joining the whole registry. Each marked agent gets its ``silence`` event in the
# same statement.
_SWEEP_SQL: Final = """
WITH silent AS (
    UPDATE agent_registry r
       SET status = 'offline', status_changed_at = %(now)s, updated_at = now()
     WHERE r.agent_id = ANY(ARRAY(
            SELECT agent_id FROM agent_registry
             WHERE status = 'online' AND last_heartbeat_at < %(cutoff)s
             ORDER BY last_heartbeat_at
             LIMIT %(limit)s
             FOR UPDATE SKIP LOCKED))
 RETURNING r.agent_id
)
INSERT INTO agent_status_events (agent_id, at, from_status, to_status, reason)
SELECT agent_id, %(now)s, 'online', 'offline', 'silence' FROM silent
"""


async def sweep_silent(
    conn: psycopg.AsyncConnection[TupleRow],
    *,
    now: datetime,
    offline_after_s: float,
    limit: int = 10_000,
) -> int:
    """Mark online agents last heard before ``now - offline_after_s`` offline; return how many.

    ``now`` is the receive-side clock (never an agent's ``sampled_at``); ``limit`` bounds
    one statement after a long outage, the next sweep takes the rest.
    """
    cutoff = now - timedelta(seconds=offline_after_s)
    async with conn.transaction():
        cur = await conn.execute(_SWEEP_SQL, {"now": now, "cutoff": cutoff, "limit": limit})
        return max(cur.rowcount, 0)


async def try_detector_lock(conn: psycopg.AsyncConnection[TupleRow]) -> bool:
    """Take the detector's session advisory lock if free; it is released when the session ends."""
    cur = await conn.execute("SELECT pg_try_advisory_lock(%s)", (DETECTOR_LOCK_KEY,))
    row = await cur.fetchone()
    return bool(row and row[0])


async def release_detector_lock(conn: psycopg.AsyncConnection[TupleRow]) -> None:
    await conn.execute("SELECT pg_advisory_unlock(%s)", (DETECTOR_LOCK_KEY,))
