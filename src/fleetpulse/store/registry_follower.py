"""Keeping a :class:`~fleetpulse.store.registry_index.RegistryIndex` fresh from the database.

A full load at start, then on every ``fleetpulse_registry`` notification (and at least
every ``poll_interval_s``) the rows whose ``updated_at`` moved, at most once per
``refresh_interval_s``, plus the agents of new ``silence`` events; a full reload every
``resync_interval_s`` drops deleted agents. A full read is decoded, indexed and sorted in a
worker thread into a new index, which then replaces the served one whole
(:attr:`RegistryFollower.index`), so requests are not held up for the seconds it takes.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Final, Self

from fleetpulse.errors import FleetpulseError
from fleetpulse.lifecycle import stop_tasks, wait_or_stop
from fleetpulse.store.engine import Database, connect
from fleetpulse.store.listen import db_now, follow_channel
from fleetpulse.store.queries import (
    REGISTRY_COLUMNS,
    AgentRecord,
    fetch_registry,
    fetch_reliability,
    fetch_silenced,
    latest_event_id,
    record_from_row,
)
from fleetpulse.store.registry_index import RegistryIndex

__all__ = ["RegistryFollower"]

log = logging.getLogger(__name__)

READ_CHUNK: Final = 250  # registry rows converted per C call in a full read (~10 ms)
RELEASE_CHUNK: Final = 1000  # records freed per turn of the event loop after a full read


class RegistryFollower:
    """Keeps :attr:`index` fresh from the database (LISTEN/NOTIFY, then rows by
    ``updated_at`` and the agents of new ``silence`` events). ``index`` is the one served:
    read it anew for each request, a full read replaces it."""

    def __init__(
        self,
        db: Database,
        index: RegistryIndex | None = None,
        *,
        refresh_interval_s: float = 1.0,
        poll_interval_s: float = 5.0,
        resync_interval_s: float = 300.0,
        reliability_interval_s: float = 60.0,
        overlap_s: float = 2.0,
        retry_max_s: float = 10.0,
    ) -> None:
        self.db = db
        self.index = index if index is not None else RegistryIndex()
        self.refresh_interval_s = refresh_interval_s
        self.poll_interval_s = poll_interval_s
        self.resync_interval_s = resync_interval_s
        self.reliability_interval_s = reliability_interval_s
        self.overlap = timedelta(seconds=overlap_s)
        self.retry_max_s = retry_max_s
        self.refreshes = 0
        self.last_refresh_s = 0.0
        self._watermark: datetime | None = None
        self._silence_id = 0  # the last silence event read
        self._last_full = 0.0
        self._tasks: list[asyncio.Task[None]] = []
        self._refresh_lock = asyncio.Lock()
        self._stop = asyncio.Event()

    async def refresh(self, *, full: bool = False) -> int:
        """Read what changed (everything if ``full``) into the index; returns rows changed."""
        async with self._refresh_lock:
            started = time.perf_counter()
            if full or self._watermark is None:
                # Decoding and indexing every row takes seconds at 100k agents: done in a
                # worker thread into a new index, which replaces the served one whole;
                # requests are answered from the old one meanwhile.
                scores = self.index.reliability_scores
                fresh, now, self._silence_id = await asyncio.to_thread(self._read_all, scores)
                old = self.index
                latest = old.reliability_scores
                if latest is not scores:  # pragma: no cover - rescored while the thread read
                    fresh.set_reliability(latest)
                fresh.version = max(fresh.version, old.version) + 1
                self.index = fresh
                changed = len(fresh)
                self._last_full = time.monotonic()
                held = old.release()
                while held:  # 100k records freed at once would hold the loop ~0.1 s
                    del held[-RELEASE_CHUNK:]
                    await asyncio.sleep(0)
            else:
                async with self.db.connection() as conn:
                    now = await db_now(conn)
                    rows = await fetch_registry(
                        conn, updated_after=self._watermark, known=self.index.updated_at
                    )
                    self._silence_id, silenced = await fetch_silenced(
                        conn, after_id=self._silence_id
                    )
                    changed = self.index.apply(rows + silenced)
            # Rows carry their transaction's start time: a transaction that began before
            # this read but commits after it must still be seen next time, so the next read
            # starts ``overlap`` before this one (rows already held are skipped undecoded).
            self._watermark = now - self.overlap
            self.index.as_of = now
            self.refreshes += 1
            self.last_refresh_s = time.perf_counter() - started
            return changed

    def _read_all(self, scores: Mapping[uuid.UUID, float]) -> tuple[RegistryIndex, datetime, int]:
        """(In a worker thread, on its own connection.) The whole registry, indexed and sorted,
        the database's clock and the last event id, both read before it."""

        async def read() -> tuple[list[AgentRecord], datetime, int]:
            conn = await connect(self.db.url, timeout_s=self.db.settings.connect_timeout_s)
            async with conn:
                now = await db_now(conn)  # before the read: the watermark must not pass it
                events = await latest_event_id(conn)  # so must the silence events
                # fetch_registry's fetchall converts every row in one C call that holds the
                # GIL (2.5 s at 100k agents); in chunks, the event loop gets a turn between.
                cur = await conn.execute(f"SELECT {REGISTRY_COLUMNS} FROM agent_registry")
                records: list[AgentRecord] = []
                while rows := await cur.fetchmany(READ_CHUNK):
                    records += [record_from_row(row) for row in rows]
                return records, now, events

        rows, now, events = asyncio.run(read())
        return RegistryIndex.from_records(rows, reliability=scores), now, events

    async def refresh_reliability(self) -> None:
        async with self.db.connection() as conn:
            scores = await fetch_reliability(conn, now=datetime.now().astimezone())
        self.index.set_reliability(scores)

    async def __aenter__(self) -> Self:
        await self.refresh(full=True)
        await self.refresh_reliability()
        self._stop = asyncio.Event()
        self._tasks = [
            asyncio.create_task(self._follow(), name="registry-follower"),
            asyncio.create_task(self._reliability_loop(), name="registry-reliability"),
        ]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await stop_tasks(self._stop, self._tasks)
        self._tasks = []

    def request_stop(self) -> None:
        """Ask the loops to finish (``__aexit__`` then waits less)."""
        self._stop.set()

    async def _follow(self) -> None:
        async def catch_up() -> int:
            return await self.refresh(full=self._resync_due())

        await follow_channel(
            self.db,
            "fleetpulse_registry",
            stop=self._stop,
            on_connect=self.refresh,  # what changed while nobody listened
            on_notify=catch_up,
            poll_interval_s=self.poll_interval_s,
            min_interval_s=self.refresh_interval_s,
            retry_max_s=self.retry_max_s,
            name="registry follower",
        )

    def _resync_due(self) -> bool:
        return time.monotonic() - self._last_full >= self.resync_interval_s

    async def _reliability_loop(self) -> None:
        while not await wait_or_stop(self._stop, self.reliability_interval_s):
            try:
                await self.refresh_reliability()
            except FleetpulseError as exc:
                log.warning("reliability refresh failed: %s", exc)
