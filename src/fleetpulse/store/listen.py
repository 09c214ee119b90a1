"""One reconnecting LISTEN loop, for every reader that follows the database's notifications
(the registry follower and the event feed)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Final, LiteralString

import psycopg
from psycopg.rows import TupleRow

from fleetpulse.errors import FleetpulseError
from fleetpulse.lifecycle import Backoff, wait_or_stop
from fleetpulse.store.engine import Database, connect, map_db_errors

__all__ = ["TICK_S", "db_now", "follow_channel"]

log = logging.getLogger(__name__)

TICK_S: Final = 0.1  # how often a listening loop looks at its stop flag
RETRY_INITIAL_S: Final = 0.2


async def db_now(conn: psycopg.AsyncConnection[TupleRow]) -> datetime:
    """The database's clock (``now()``: the start of the current transaction)."""
    cur = await conn.execute("SELECT now()")
    row = await cur.fetchone()
    now: datetime = row[0] if row else datetime.now().astimezone()
    return now


async def follow_channel(
    db: Database,
    channel: LiteralString,
    *,
    stop: asyncio.Event,
    on_connect: Callable[[], Awaitable[object]],
    on_notify: Callable[[], Awaitable[object]],
    poll_interval_s: float,
    min_interval_s: float = 0.0,
    retry_max_s: float = 10.0,
    name: str,
) -> None:
    """Until ``stop`` is set: connect, ``LISTEN channel``, await ``on_connect()`` (to read
    what changed while nobody listened), then ``on_notify()`` after every notification and
    at least every ``poll_interval_s``, but at most once per ``min_interval_s`` (a burst of
    notifications is one read). A database fault is logged under ``name`` and the loop
    reconnects after a capped, jittered backoff, reset once connected."""
    backoff = Backoff(RETRY_INITIAL_S, retry_max_s)
    while not stop.is_set():
        try:
            with map_db_errors(db.url):
                conn = await connect(db.url, timeout_s=db.settings.connect_timeout_s)
                async with conn:
                    await conn.execute("LISTEN " + channel)
                    await on_connect()
                    backoff.reset()
                    await _listen(conn, stop, on_notify, poll_interval_s, min_interval_s)
        except FleetpulseError as exc:
            log.warning("%s: %s; retrying", name, exc)
            if await backoff.wait(stop):
                return


async def _listen(
    conn: psycopg.AsyncConnection[TupleRow],
    stop: asyncio.Event,
    on_notify: Callable[[], Awaitable[object]],
    poll_interval_s: float,
    min_interval_s: float,
) -> None:
    next_allowed = last_read = time.monotonic()
    while not stop.is_set():
        notified = False
        # Short waits, never cancelled: a notifies() cancelled mid-wait can hang psycopg.
        async for _ in conn.notifies(timeout=TICK_S, stop_after=1):
            notified = True
        if not notified and time.monotonic() - last_read < poll_interval_s:
            continue
        wait = next_allowed - time.monotonic()
        if wait > 0 and await wait_or_stop(stop, wait):
            return
        await on_notify()
        last_read = time.monotonic()
        next_allowed = last_read + min_interval_s
