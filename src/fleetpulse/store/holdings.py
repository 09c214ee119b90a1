"""Active claims and cordons by agent, as one API process knows them, kept fresh.

:class:`Holdings` is the in-memory map (no I/O). :class:`HoldingsFollower` fills it at start,
then follows the event feed: a claim or cordon event names its agent, whose holding is read
again (changes made by this process are put in at once by the caller, from what its own
transaction read). It also runs the background cleanup: claims past their expiry are marked
ended, each with a ``claim_expired`` event, and ended claims are deleted after
``keep_s``. Correctness never waits on it: an expired claim holds nothing anyway.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import math
import uuid
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Final, Self

from fleetpulse.errors import FleetpulseError
from fleetpulse.lifecycle import stop_tasks, wait_or_stop
from fleetpulse.store.allotment import Holding
from fleetpulse.store.claims import (
    CLAIM_REASONS,
    CORDON_REASONS,
    expire_claims,
    fetch_holdings,
    purge_ended_claims,
)
from fleetpulse.store.engine import Database
from fleetpulse.store.event_feed import EventFeed
from fleetpulse.store.queries import StatusEvent

__all__ = ["HOLDING_REASONS", "Holdings", "HoldingsFollower"]

log = logging.getLogger(__name__)

HOLDING_REASONS: Final = frozenset((*CLAIM_REASONS, *CORDON_REASONS))
WAIT_S: Final = 1.0
REREADS: Final = 3  # reads of agents changed here meanwhile, at most (then the next event's)
_EMPTY: Final = Holding()


class Holdings:
    """Agent -> what is held on it (agents holding nothing are absent). ``version`` moves on
    every change."""

    def __init__(self) -> None:
        self._by_agent: dict[uuid.UUID, Holding] = {}
        self.version = 0
        self._expiries: list[float] = []  # a heap of expiry times (some of ended claims)
        self._claims = 0  # claims held in all (for bounding the heap)
        self._touched: dict[uuid.UUID, int] = {}  # agent -> version of its last change

    def __len__(self) -> int:
        return len(self._by_agent)

    def get(self, agent_id: uuid.UUID) -> Holding:
        return self._by_agent.get(agent_id, _EMPTY)

    def items(self) -> Iterable[tuple[uuid.UUID, Holding]]:
        return self._by_agent.items()

    def put(self, agent_id: uuid.UUID, holding: Holding) -> None:
        before = self._by_agent.get(agent_id, _EMPTY)
        if before == holding:
            return
        self._claims += len(holding.claims) - len(before.claims)
        if holding.empty:
            self._by_agent.pop(agent_id, None)
        else:
            self._by_agent[agent_id] = holding
            self._note_expiries(holding)
        self.version += 1
        self._touched[agent_id] = self.version
        if len(self._touched) > 4 * len(self._by_agent) + 1024:
            self._touched = {a: v for a, v in self._touched.items() if a in self._by_agent}

    def changed_since(
        self, version: int, agent_ids: Iterable[uuid.UUID] | None = None
    ) -> set[uuid.UUID]:
        """Agents (of ``agent_ids``; None: any) changed here after ``version``: a read of the
        database that began before must not overwrite them."""
        touched = self._touched
        if agent_ids is None:
            return {a for a, v in touched.items() if v > version}
        return {a for a in agent_ids if touched.get(a, -1) > version}

    def replace_all(self, holdings: Mapping[uuid.UUID, Holding], *, read_at: int = -1) -> None:
        """Everything from a full read begun at ``read_at`` (a version), but for agents
        changed here since, which keep what they have."""
        fresh = {a: h for a, h in holdings.items() if not h.empty}
        for agent_id, version in self._touched.items():
            if version > read_at:
                held = self._by_agent.get(agent_id)
                if held is None:
                    fresh.pop(agent_id, None)
                else:
                    fresh[agent_id] = held
        self._by_agent = fresh
        self._claims = sum(len(h.claims) for h in fresh.values())
        self._expiries = [c.expires_at.timestamp() for h in fresh.values() for c in h.claims]
        heapq.heapify(self._expiries)
        self.version += 1

    def next_expiry_ts(self, now: float) -> float:
        """A time (s since the epoch) after ``now`` at or before which the first active
        claim expires (sooner is allowed: times of ended claims linger); inf when none."""
        heap = self._expiries
        while heap and heap[0] <= now:
            heapq.heappop(heap)
        return heap[0] if heap else math.inf

    def _note_expiries(self, holding: Holding) -> None:
        heap = self._expiries
        for claim in holding.claims:
            heapq.heappush(heap, claim.expires_at.timestamp())
        if len(heap) > 4 * self._claims + 1024:
            self._expiries = [
                c.expires_at.timestamp() for h in self._by_agent.values() for c in h.claims
            ]
            heapq.heapify(self._expiries)

    def held_by_holder(self, now: datetime) -> dict[str, int]:
        """Active claims per holder."""
        counts: dict[str, int] = {}
        for holding in self._by_agent.values():
            for claim in holding.claims:
                if claim.active_at(now):
                    counts[claim.holder] = counts.get(claim.holder, 0) + 1
        return counts


class HoldingsFollower:
    """Keeps :class:`Holdings` fresh from the event feed; cleans up expired claims."""

    def __init__(
        self,
        db: Database,
        holdings: Holdings,
        feed: EventFeed,
        *,
        cleanup_interval_s: float = 10.0,
        keep_s: float = 86_400.0,
        resync_interval_s: float = 300.0,
    ) -> None:
        self.db = db
        self.holdings = holdings
        self.feed = feed
        self.cleanup_interval_s = cleanup_interval_s
        self.keep_s = keep_s
        self.resync_interval_s = resync_interval_s
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def reload(self, agent_ids: Iterable[uuid.UUID] | None = None) -> None:
        """Read the holdings of these agents (all when None) from the database. An agent
        changed here while the read was under way (a claim this process made or released)
        is not overwritten by the older read but read again."""
        wanted = None if agent_ids is None else list(agent_ids)
        for _ in range(REREADS):
            read_at = self.holdings.version
            async with self.db.connection() as conn:
                found = await fetch_holdings(conn, wanted)
            if wanted is None:
                self.holdings.replace_all(found, read_at=read_at)
                wanted = list(self.holdings.changed_since(read_at))
            else:
                stale = self.holdings.changed_since(read_at, wanted)
                for agent_id, holding in found.items():
                    if agent_id not in stale:
                        self.holdings.put(agent_id, holding)
                wanted = list(stale)
            if not wanted:
                return

    async def cleanup(self) -> int:
        """Mark expired claims ended (with their events) and purge old ended ones."""
        expired = 0
        async with self.db.connection() as conn:
            while batch := await expire_claims(conn):
                expired += len(batch)
            await purge_ended_claims(conn, older_than_s=self.keep_s)
        return expired

    async def __aenter__(self) -> Self:
        await self.reload()
        self._stop = asyncio.Event()
        self._tasks = [
            asyncio.create_task(self._follow(), name="holdings-follower"),
            asyncio.create_task(self._cleanup_loop(), name="claims-cleanup"),
        ]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await stop_tasks(self._stop, self._tasks)
        self._tasks = []

    def request_stop(self) -> None:
        self._stop.set()

    async def _follow(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._stop.is_set():
            sub = self.feed.subscribe()
            resync_at = loop.time() + self.resync_interval_s
            try:
                await self.reload()  # whatever changed while nobody was subscribed
                while not self._stop.is_set():
                    batch = await sub.next_batch(WAIT_S)
                    if batch is None:
                        break  # closed (too far behind, or shutting down): start over
                    agents = {e.agent_id for e in batch if self._news(e)}
                    if agents:
                        await self.reload(agents)
                    if loop.time() >= resync_at:
                        await self.reload()
                        resync_at = loop.time() + self.resync_interval_s
            except FleetpulseError as exc:
                log.warning("holdings follower: %s; retrying", exc)
                await wait_or_stop(self._stop, WAIT_S)
            finally:
                self.feed.unsubscribe(sub)

    def _news(self, event: StatusEvent) -> bool:
        """Whether an event may change what this process holds for its agent (a claim made
        or released here was put in by the request that made it)."""
        if event.reason not in HOLDING_REASONS:
            return False
        claim_id = (event.detail or {}).get("claim_id")
        if claim_id is None or event.reason not in ("claim_created", "claim_released"):
            return True
        known = any(str(c.claim_id) == claim_id for c in self.holdings.get(event.agent_id).claims)
        return known != (event.reason == "claim_created")

    async def _cleanup_loop(self) -> None:
        while not await wait_or_stop(self._stop, self.cleanup_interval_s):
            try:
                await self.cleanup()
            except FleetpulseError as exc:
                log.warning("claims cleanup failed: %s", exc)
