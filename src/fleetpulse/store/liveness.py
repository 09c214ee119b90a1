"""Silence detection in the database: one statement per sweep, one leader by advisory lock.

:class:`DetectorLease` is the silence detector's whole hold on the database (its own
connection, the session advisory lock that makes it the acting one, the edition found at
connect): the detector itself sees only fleetpulse errors.

Silence is judged against what ingest has been able to see, not the wall clock alone. Each
ingest worker reports a watermark to ``ingest_watermarks``: ``seen_through``, a receive time
before which every heartbeat the broker held has been committed (or, with the broker
unreachable, the present: agents could not publish either). The detector's view is the
least watermark of the workers that reported lately; a heartbeat last received before the
view less ``offline_after_s`` is silence. When every report is stale (ingest stopped, the
database or the registry out of reach for ingest) the view holds still, so heartbeats
queued meanwhile are committed before anyone is judged; with no report ever (no ingest
yet) the wall clock is the view.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final, Literal, Self

import psycopg
import psycopg.errors
from psycopg.rows import TupleRow

from fleetpulse.config import DatabaseSettings
from fleetpulse.errors import StoreError
from fleetpulse.store.engine import Edition, map_db_errors, open_session
from fleetpulse.store.retention import apply_retention

__all__ = [
    "DETECTOR_LOCK_KEY",
    "DetectorLease",
    "WatermarkView",
    "read_watermark",
    "report_watermark",
    "sweep_silent",
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
    seen_through: datetime | None = None,
) -> int:
    """Mark online agents last heard before ``view - offline_after_s`` offline (the view:
    ``now``, or ``seen_through`` when earlier); return how many. Events are dated ``now``.

    ``now`` is the receive-side clock (never an agent's ``sampled_at``). With ``since``, only
    agents last heard at or after it are looked at (the previous sweep's threshold, less a
    margin); without, every one, ``limit`` at most: after a long outage the next full sweep
    takes the rest.
    """
    view = now if seen_through is None else min(now, seen_through)
    cutoff = view - timedelta(seconds=offline_after_s)
    async with conn.transaction():
        params = {"now": now, "cutoff": cutoff, "since": since, "limit": limit}
        cur = await conn.execute(_FULL_SWEEP_SQL if since is None else _SWEEP_SQL, params)
        return max(cur.rowcount, 0)


_REPORT_SQL: Final = """
INSERT INTO ingest_watermarks (worker, seen_through, reported_at)
VALUES (%(worker)s, %(seen_through)s, %(at)s)
ON CONFLICT (worker) DO UPDATE
   SET seen_through = GREATEST(ingest_watermarks.seen_through, EXCLUDED.seen_through),
       reported_at = EXCLUDED.reported_at
"""
# Reports of workers gone for a day are forgotten (each process reports under its own name).
_FORGET_SQL: Final = "DELETE FROM ingest_watermarks WHERE reported_at < %(at)s - interval '1 day'"
_VIEW_SQL: Final = """
SELECT count(*), min(seen_through) FILTER (WHERE reported_at >= %(fresh)s)
  FROM ingest_watermarks
"""


@dataclass(frozen=True, slots=True)
class WatermarkView:
    """What the detector may judge: ``seen_through`` (None: hold, judge nobody) and whether
    any ingest has ever reported (``known``; if not, the wall clock is all there is)."""

    seen_through: datetime | None
    known: bool


async def report_watermark(
    conn: psycopg.AsyncConnection[TupleRow], worker: str, seen_through: datetime, at: datetime
) -> None:
    """This worker has committed every heartbeat received before ``seen_through``."""
    async with conn.transaction():
        await conn.execute(_REPORT_SQL, {"worker": worker, "seen_through": seen_through, "at": at})
        await conn.execute(_FORGET_SQL, {"at": at})


async def read_watermark(
    conn: psycopg.AsyncConnection[TupleRow], *, now: datetime, fresh_s: float
) -> WatermarkView:
    """The least watermark of the workers that reported within ``fresh_s`` of ``now``."""
    cur = await conn.execute(_VIEW_SQL, {"fresh": now - timedelta(seconds=fresh_s)})
    row = await cur.fetchone()
    reports, least = (row[0], row[1]) if row else (0, None)
    if not reports:
        return WatermarkView(now, known=False)
    return WatermarkView(least, known=True)


# What PostgreSQL raises when it rolls a transaction back to break a tie (class 40).
_ROLLED_BACK: Final = (
    psycopg.errors.DeadlockDetected,
    psycopg.errors.SerializationFailure,
    psycopg.errors.TransactionRollback,
)


class DetectorLease:
    """``async with DetectorLease(settings) as lease`` (or :meth:`open` / :meth:`close`):
    one connection of its own, on which :meth:`try_lock` takes the detector's session
    advisory lock. The server releases the lock when the session ends, so a holder whose
    process or connection dies hands over to the next one to ask.

    States: new → open → closed. Every method raises fleetpulse errors only.
    """

    def __init__(self, settings: DatabaseSettings) -> None:
        self.settings = settings
        self.url = settings.url
        self.edition: Edition = "apache"
        self.state: Literal["new", "open", "closed"] = "new"
        self._conn: psycopg.AsyncConnection[TupleRow] | None = None

    @property
    def closed(self) -> bool:
        """True unless open on a live connection."""
        return self._conn is None or self._conn.closed

    @property
    def _open_conn(self) -> psycopg.AsyncConnection[TupleRow]:
        if self._conn is None:
            raise StoreError("detector lease is not open")
        return self._conn

    async def open(self) -> None:
        self._conn, self.edition = await open_session(self.settings)
        self.state = "open"

    async def close(self, *, release: bool = True) -> None:
        """Close the connection, releasing the lock first if asked (the end of the session
        releases it anyway); a connection already broken is closed quietly."""
        conn, self._conn = self._conn, None
        self.state = "closed"
        if conn is None:
            return
        try:
            if release and not conn.closed:
                await conn.execute("SELECT pg_advisory_unlock(%s)", (DETECTOR_LOCK_KEY,))
        except psycopg.Error:
            pass
        finally:
            await conn.close()

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def try_lock(self) -> bool:
        """Take the detector's advisory lock if free (held until released or closed)."""
        with map_db_errors(self.url):
            cur = await self._open_conn.execute(
                "SELECT pg_try_advisory_lock(%s)", (DETECTOR_LOCK_KEY,)
            )
            row = await cur.fetchone()
        return bool(row and row[0])

    async def watermark(self, *, now: datetime, fresh_s: float) -> WatermarkView:
        """:func:`read_watermark` on this connection."""
        with map_db_errors(self.url):
            return await read_watermark(self._open_conn, now=now, fresh_s=fresh_s)

    async def sweep(
        self,
        *,
        now: datetime,
        offline_after_s: float,
        since: datetime | None,
        limit: int,
        seen_through: datetime | None = None,
    ) -> int | None:
        """:func:`sweep_silent` on this connection; None when PostgreSQL rolled the sweep
        back to break a deadlock with a batch writing the same rows (nothing was marked)."""
        with map_db_errors(self.url):
            try:
                return await sweep_silent(
                    self._open_conn,
                    now=now,
                    offline_after_s=offline_after_s,
                    since=since,
                    limit=limit,
                    seen_through=seen_through,
                )
            except _ROLLED_BACK:
                return None

    async def retain(self, *, older_than_s: float) -> int:
        """:func:`~fleetpulse.store.retention.apply_retention` for the edition found."""
        with map_db_errors(self.url):
            return await apply_retention(
                self._open_conn, edition=self.edition, older_than_s=older_than_s
            )
