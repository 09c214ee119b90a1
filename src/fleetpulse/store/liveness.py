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

# Both forms leave ``updated_at`` and every indexed column alone, so each row changes in place
# (a heap-only update: no index entry, no new page); readers following the registry learn of
# these transitions from their ``silence`` events. Each marked agent gets its event in the
# same statement. A row a batch is writing is waited for and then re-checked: a fresh
# heartbeat takes it out of the sweep.
#
# The usual form walks only the slice of agent_registry_heartbeat that crossed the threshold
# since the previous sweep (``since``), so agents already offline are not visited again.
_SWEEP_SQL: Final = """
WITH silent AS (
    UPDATE agent_registry
       SET status = 'offline', status_changed_at = %(now)s
     WHERE last_heartbeat_at >= %(since)s AND last_heartbeat_at < %(cutoff)s
       AND status = 'online'
 RETURNING agent_id
)
INSERT INTO agent_status_events (agent_id, at, from_status, to_status, reason)
SELECT agent_id, %(now)s, 'online', 'offline', 'silence' FROM silent
"""
# The full form (a new leader, and now and then as a safety net) looks at every heartbeat
# older than the threshold, at most ``limit`` online rows per statement; the row addresses
# go through an array so the UPDATE fetches each directly.
_FULL_SWEEP_SQL: Final = """
WITH silent AS (
    UPDATE agent_registry r
       SET status = 'offline', status_changed_at = %(now)s
     WHERE r.ctid = ANY(ARRAY(
            SELECT ctid FROM agent_registry
             WHERE last_heartbeat_at < %(cutoff)s AND status = 'online'
             LIMIT %(limit)s))
       AND r.last_heartbeat_at < %(cutoff)s AND r.status = 'online'
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
    since: datetime | None = None,
    limit: int = 10_000,
) -> int:
    """Mark online agents last heard before ``now - offline_after_s`` offline; return how many.

    ``now`` is the receive-side clock (never an agent's ``sampled_at``). With ``since``, only
    agents last heard at or after it are looked at (the previous sweep's threshold, less a
    margin); without, every one, ``limit`` at most: after a long outage the next full sweep
    takes the rest.
    """
    cutoff = now - timedelta(seconds=offline_after_s)
    async with conn.transaction():
        params = {"now": now, "cutoff": cutoff, "since": since, "limit": limit}
        cur = await conn.execute(_FULL_SWEEP_SQL if since is None else _SWEEP_SQL, params)
        return max(cur.rowcount, 0)


async def try_detector_lock(conn: psycopg.AsyncConnection[TupleRow]) -> bool:
    """Take the detector's session advisory lock if free; it is released when the session ends."""
    cur = await conn.execute("SELECT pg_try_advisory_lock(%s)", (DETECTOR_LOCK_KEY,))
    row = await cur.fetchone()
    return bool(row and row[0])


async def release_detector_lock(conn: psycopg.AsyncConnection[TupleRow]) -> None:
    await conn.execute("SELECT pg_advisory_unlock(%s)", (DETECTOR_LOCK_KEY,))
