"""What the routes share: settings, the database, the registry index, the event feed, metrics."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

from litestar.datastructures import State

from fleetpulse.api.claim_metrics import ClaimTotals, corrected, fleet_totals, render_claims
from fleetpulse.api.metrics import RequestMetrics, render_fleet
from fleetpulse.api.rows import RowCache
from fleetpulse.config import Settings
from fleetpulse.store import (
    ClaimableView,
    Database,
    EventFeed,
    Holdings,
    HoldingsFollower,
    RegistryFollower,
    RegistryIndex,
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
    fleet_metrics: bytes = b""  # what a scrape serves: the two parts below
    fleet_text: bytes = b""
    claims_text: bytes = b""
    claims_base: ClaimTotals = field(default_factory=ClaimTotals)
    claims_version: int = -1
    claims_valid_until: float = 0.0
    fleet_metrics_at: float = 0.0
    fleet_metrics_version: int = -1
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)
    # agent -> claim decisions in progress in this process (a claim by filter tries others first)
    claims_in_flight: dict[uuid.UUID, int] = field(default_factory=dict)

    @property
    def index(self) -> RegistryIndex:
        """The registry index served now (a full read replaces it: read it per request)."""
        return self.follower.index

    async def refresh_fleet_metrics(self, *, force: bool = True) -> None:
        now = time.time()
        version = self.index.version
        stale = force or now - self.fleet_metrics_at >= IDLE_RERENDER_S
        if stale or version != self.fleet_metrics_version:
            records = list(self.index.records())
            limit = self.settings.api.metrics_per_agent_limit
            # Rendering is CPU work proportional to the fleet: off the event loop.
            text, omitted = await asyncio.to_thread(
                render_fleet, records, now=now, per_agent_limit=limit
            )
            base = await asyncio.to_thread(fleet_totals, records)
            if omitted and not self.fleet_text:
                log.warning(
                    "per-agent metrics capped at %d agents (api.metrics_per_agent_limit);"
                    " %d left out",
                    limit,
                    omitted,
                )
            self.fleet_text, self.claims_base = text, base
            self.fleet_metrics_at, self.fleet_metrics_version = now, version
            self.claims_version = -1
        if self.claims_version != self.holdings.version or now >= self.claims_valid_until:
            # Only the agents holding something, each claimable figure from the view's cache
            # (a claim costs no pass over the fleet); off the event loop all the same.
            index, view, moment = self.index, self.claimable, datetime.fromtimestamp(now, UTC)
            held = [r for a, _ in self.holdings.items() if (r := index.get(a)) is not None]
            totals = await asyncio.to_thread(
                corrected, self.claims_base, held, lambda r: view.allotment(r, now)
            )
            self.claims_text = render_claims(totals, self.holdings.held_by_holder(moment))
            self.claims_version = self.holdings.version
            self.claims_valid_until = self.holdings.next_expiry_ts(now)
        self.fleet_metrics = self.fleet_text + self.claims_text

    async def _metrics_loop(self) -> None:
        interval = self.settings.api.metrics_refresh_interval_s
        while True:
            await asyncio.sleep(interval)
            try:
                await self.refresh_fleet_metrics(force=False)
            except Exception:  # a broken render must not stop the loop; the age gauge shows it
                log.exception("fleet metrics refresh failed")


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
            claimable=ClaimableView(holdings, trail_s=api.capacity_refresh_interval_s),
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
