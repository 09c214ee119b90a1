"""What the routes share: settings, the database, the registry index, the event feed, metrics."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

from litestar.datastructures import State

from fleetpulse.api.claim_metrics import render_claims
from fleetpulse.api.metrics import RequestMetrics, render_fleet
from fleetpulse.api.rows import RowCache
from fleetpulse.config import Settings
from fleetpulse.store import (
    AgentRecord,
    Allotment,
    ClaimableView,
    Database,
    EventFeed,
    Holding,
    Holdings,
    HoldingsFollower,
    RegistryFollower,
    RegistryIndex,
    allot,
)

__all__ = ["Services", "open_services", "services_of"]

log = logging.getLogger(__name__)

# With an unchanged registry the snapshot is re-rendered this rarely (ages drift meanwhile).
IDLE_RERENDER_S: Final = 30.0


@dataclass
class Services:
    settings: Settings
    db: Database
    follower: RegistryFollower
    feed: EventFeed
    request_metrics: RequestMetrics
    holdings: Holdings
    holdings_follower: HoldingsFollower
    claimable: ClaimableView
    rows: RowCache = field(default_factory=RowCache)
    fleet_metrics: bytes = b""
    fleet_metrics_at: float = 0.0
    fleet_metrics_version: tuple[int, int] = (-1, -1)
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)
    # agent -> claim decisions in progress in this process (a claim by filter tries others first)
    claims_in_flight: dict[uuid.UUID, int] = field(default_factory=dict)

    @property
    def index(self) -> RegistryIndex:
        """The registry index served now (a full read replaces it: read it per request)."""
        return self.follower.index

    async def refresh_fleet_metrics(self, *, force: bool = True) -> None:
        now = time.time()
        version = (self.index.version, self.holdings.version)
        unchanged = version == self.fleet_metrics_version
        expired = self.holdings.next_expiry_ts(self.fleet_metrics_at) <= now
        if (
            not force
            and unchanged
            and not expired
            and now - self.fleet_metrics_at < IDLE_RERENDER_S
        ):
            return  # nothing changed: only the heartbeat ages would move
        records = list(self.index.records())
        limit = self.settings.api.metrics_per_agent_limit
        held = dict(self.holdings.items())
        by_holder = self.holdings.held_by_holder(datetime.fromtimestamp(now, UTC))
        # Rendering is CPU work proportional to the fleet: off the event loop.
        text, omitted = await asyncio.to_thread(
            render_fleet, records, now=now, per_agent_limit=limit
        )
        text += await asyncio.to_thread(render_claims, records, _allotments(held, now), by_holder)
        if omitted and not self.fleet_metrics:
            log.warning(
                "per-agent metrics capped at %d agents (api.metrics_per_agent_limit); %d left out",
                limit,
                omitted,
            )
        self.fleet_metrics, self.fleet_metrics_at = text, now
        self.fleet_metrics_version = version

    async def _metrics_loop(self) -> None:
        interval = self.settings.api.metrics_refresh_interval_s
        while True:
            await asyncio.sleep(interval)
            try:
                await self.refresh_fleet_metrics(force=False)
            except Exception:  # a broken render must not stop the loop; the age gauge shows it
                log.exception("fleet metrics refresh failed")


def _allotments(
    held: dict[uuid.UUID, Holding], now: float
) -> Callable[[AgentRecord], Allotment | None]:
    moment = datetime.fromtimestamp(now, UTC)

    def allotment_of(record: AgentRecord) -> Allotment | None:
        holding = held.get(record.agent_id)
        return None if holding is None else allot(record, holding, moment)

    return allotment_of


@contextlib.asynccontextmanager
async def open_services(
    settings: Settings, request_metrics: RequestMetrics
) -> AsyncIterator[Services]:
    """Open everything the API needs, in order; close in reverse."""
    api = settings.api
    async with contextlib.AsyncExitStack() as stack:
        db = await stack.enter_async_context(Database(settings.database))
        follower = await stack.enter_async_context(
            RegistryFollower(
                db,
                refresh_interval_s=api.capacity_refresh_interval_s,
                poll_interval_s=api.registry_poll_interval_s,
                resync_interval_s=api.registry_resync_interval_s,
                reliability_interval_s=api.reliability_refresh_interval_s,
                overlap_s=api.registry_overlap_s,
            )
        )
        feed = await stack.enter_async_context(
            EventFeed(
                db, poll_interval_s=api.registry_poll_interval_s, max_pending=api.sse_max_pending
            )
        )
        holdings = Holdings()
        holdings_follower = await stack.enter_async_context(
            HoldingsFollower(
                db,
                holdings,
                feed,
                cleanup_interval_s=api.claims_cleanup_interval_s,
                keep_s=api.claims_keep_s,
                resync_interval_s=api.registry_resync_interval_s,
            )
        )
        services = Services(
            settings=settings,
            db=db,
            follower=follower,
            feed=feed,
            request_metrics=request_metrics,
            holdings=holdings,
            holdings_follower=holdings_follower,
            claimable=ClaimableView(holdings),
        )
        await services.refresh_fleet_metrics()
        task = asyncio.create_task(services._metrics_loop(), name="fleet-metrics")
        services.tasks.append(task)
        try:
            yield services
        finally:
            holdings_follower.request_stop()  # the loops wind down together
            follower.request_stop()
            feed.request_stop()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def services_of(state: State) -> Services:
    services: Services = state.services
    return services
