"""Status events pushed from the database: LISTEN ``fleetpulse_events``, fan out to subscribers.

One listening connection per process; each notification (payload: the newest event id)
makes the feed read the events after the last one it delivered and hand them to every
subscriber. A subscriber that falls ``max_pending`` events behind is closed rather than
buffered without bound; it resumes from the database with the last id it saw.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from typing import Final, Self

from fleetpulse.lifecycle import stop_tasks
from fleetpulse.store.engine import Database
from fleetpulse.store.listen import follow_channel
from fleetpulse.store.queries import StatusEvent, fetch_events, latest_event_id

__all__ = ["EventFeed", "EventSubscription"]

log = logging.getLogger(__name__)

PAGE: Final = 1000


class EventSubscription:
    """Events for one reader, in id order. ``next_batch`` returns None once closed."""

    def __init__(self, max_pending: int) -> None:
        self.max_pending = max_pending
        self.closed = False
        self.overflowed = False
        self._pending: deque[StatusEvent] = deque()
        self._wake = asyncio.Event()

    def push(self, events: list[StatusEvent]) -> None:
        if self.closed:
            return
        if len(self._pending) + len(events) > self.max_pending:
            self.overflowed = True
            self.close()
            return
        self._pending.extend(events)
        self._wake.set()

    def close(self) -> None:
        self.closed = True
        self._wake.set()

    async def next_batch(self, timeout_s: float) -> list[StatusEvent] | None:
        """What arrived (waiting up to ``timeout_s``; ``[]`` on timeout), None when closed."""
        if not self._pending and not self.closed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout_s)
        self._wake.clear()
        if self._pending:
            batch = list(self._pending)
            self._pending.clear()
            return batch
        return None if self.closed else []


class EventFeed:
    """Follows ``agent_status_events``; use as ``async with EventFeed(db) as feed``."""

    def __init__(
        self,
        db: Database,
        *,
        poll_interval_s: float = 5.0,
        max_pending: int = 10_000,
        retry_max_s: float = 10.0,
    ) -> None:
        self.db = db
        self.poll_interval_s = poll_interval_s
        self.max_pending = max_pending
        self.retry_max_s = retry_max_s
        self.last_id = 0
        self._subscribers: set[EventSubscription] = set()
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()

    def subscribe(self) -> EventSubscription:
        sub = EventSubscription(self.max_pending)
        self._subscribers.add(sub)
        return sub

    def unsubscribe(self, sub: EventSubscription) -> None:
        sub.close()
        self._subscribers.discard(sub)

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    def close_all(self) -> None:
        """End every subscription (at shutdown, so open streams finish)."""
        for sub in list(self._subscribers):
            self.unsubscribe(sub)

    def request_stop(self) -> None:
        self.close_all()
        self._stop.set()

    async def __aenter__(self) -> Self:
        async with self.db.connection() as conn:
            self.last_id = await latest_event_id(conn)
        self._stop = asyncio.Event()
        self._task = asyncio.create_task(self._run(), name="event-feed")
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.close_all()
        if self._task is not None:
            await stop_tasks(self._stop, [self._task])
            self._task = None

    async def catch_up(self) -> int:
        """Read and deliver every event after the last delivered; returns how many."""
        delivered = 0
        while True:
            async with self.db.connection() as conn:
                page = await fetch_events(conn, after_id=self.last_id, limit=PAGE)
            if not page:
                return delivered
            self.last_id = page[-1].id
            delivered += len(page)
            for sub in list(self._subscribers):
                sub.push(page)
            if len(page) < PAGE:
                return delivered

    async def _run(self) -> None:
        await follow_channel(
            self.db,
            "fleetpulse_events",
            stop=self._stop,
            on_connect=self.catch_up,
            on_notify=self.catch_up,
            poll_interval_s=self.poll_interval_s,
            retry_max_s=self.retry_max_s,
            name="event feed",
        )
