"""The silence detector: one acting instance across all ingest workers.

Each worker runs one; whichever holds the PostgreSQL session advisory lock acts. The
lock lives and dies with the detector's own connection, so when the holder's process
or connection dies the server releases it and another worker takes over at its next
tick. The leader also runs retention on its schedule.

Silence is judged at the detector's *view*, not the wall clock alone: the least watermark
the ingest workers reported lately (see :mod:`fleetpulse.store.liveness`). While ingest is
stopped, cut off from the database or stuck behind a lock, the view holds still, so an
outage longer than ``offline_after_s`` marks nobody offline for heartbeats that waited in the
queue; once ingest has caught up, a truly silent agent is marked within ``offline_after_s``
plus one check interval. With the broker down ingest reports the present (agents could not
publish), so silence is judged as before.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, Final, Literal, Self

from fleetpulse.config import Settings
from fleetpulse.errors import FleetpulseError
from fleetpulse.ingest.metrics import IngestMetrics
from fleetpulse.lifecycle import Backoff
from fleetpulse.store import DetectorLease

__all__ = ["SilenceDetector"]

log = logging.getLogger(__name__)

# A sweep looks only at heartbeats that crossed the threshold since the last one (and this
# much before, at least); a full sweep, which visits every silent agent, offline ones
# included, runs when a detector starts acting and then this often, as a safety net for a
# heartbeat committed long after it was received (a batch retried through an outage).
SWEEP_OVERLAP_MIN_S: Final = 10.0
FULL_SWEEP_INTERVAL_S: Final = 300.0
WATERMARK_FRESH_MIN_S: Final = 15.0


class SilenceDetector:
    """``async with SilenceDetector(settings, metrics=..., clock=...)``; ticks every
    ``offline_check_interval_s`` (drift-corrected) until closed."""

    def __init__(
        self,
        settings: Settings,
        *,
        metrics: IngestMetrics,
        clock: Callable[[], datetime],
        sleep: Callable[[float], Any] = asyncio.sleep,
    ) -> None:
        self.settings = settings
        self.config = settings.ingest
        self.metrics = metrics
        self.clock = clock
        self._sleep = sleep
        self.is_leader = False
        self.runs = 0
        self.transitions = 0
        self.state: Literal["new", "running", "closed"] = "new"
        self._lease: DetectorLease | None = None
        self._task: asyncio.Task[None] | None = None
        self._next_retention = 0.0
        self._since: datetime | None = None  # None: the next sweep looks at everyone
        self._next_full = 0.0
        self.view: datetime | None = None  # the time silence was last judged at
        self.holding = False
        # A worker's watermark report older than this does not count (it stopped, or lost
        # the database): it reports every queue_depth_interval_s.
        self.fresh_s = max(WATERMARK_FRESH_MIN_S, 3 * self.config.queue_depth_interval_s)

    async def __aenter__(self) -> Self:
        self._task = asyncio.create_task(self._run(), name="silence-detector")
        self.state = "running"
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self._disconnect(release=True)
        self.state = "closed"

    async def _disconnect(self, *, release: bool = False) -> None:
        lease, self._lease = self._lease, None
        if self.is_leader:
            log.info("silence detector steps down")
        self.is_leader = False
        self._since = None
        self.metrics.detector_leader.set(0)
        if lease is not None:
            await lease.close(release=release)

    async def _run(self) -> None:
        interval = self.config.offline_check_interval_s
        backoff = Backoff(self.config.retry_initial_s, self.config.retry_max_s, sleep=self._sleep)
        next_tick = time.monotonic()
        while True:
            try:
                await self.tick()
                backoff.reset()
            except (FleetpulseError, OSError) as exc:
                log.warning("silence detector: %s", exc)
                await self._disconnect()
                await backoff.wait()
                next_tick = time.monotonic()
                continue
            next_tick += interval
            delay = next_tick - time.monotonic()
            if delay < 0:  # fell behind: skip missed ticks instead of bursting
                next_tick = time.monotonic()
                delay = 0
            await asyncio.sleep(delay)

    async def tick(self) -> int:
        """One check: become leader if the lock is free; as leader, sweep. Returns transitions."""
        if self._lease is None or self._lease.closed:
            lease = DetectorLease(self.settings.database)
            await lease.open()
            self._lease = lease
        lease = self._lease
        if not self.is_leader:
            self.is_leader = await lease.try_lock()
            self.metrics.detector_leader.set(1 if self.is_leader else 0)
            if self.is_leader:
                log.info("silence detector acting (advisory lock taken)")
        if not self.is_leader:
            return 0
        now = self.clock()
        view = await lease.watermark(now=now, fresh_s=self.fresh_s)
        if view.seen_through is None:
            # Ingest reported nothing lately: what it has not committed cannot be judged.
            if not self.holding:
                log.warning(
                    "silence detector holds: no ingest worker reported its watermark within"
                    " %gs (ingest stopped or cut off); nobody is judged silent meanwhile",
                    self.fresh_s,
                )
            self.holding = True
            self.metrics.detector_holding.set(1)
            if self.view is not None:
                self.metrics.detector_lag_seconds.set((now - self.view).total_seconds())
            return 0
        if self.holding:
            log.info("silence detector judges again (view %s)", view.seen_through.isoformat())
        self.holding = False
        self.metrics.detector_holding.set(0)
        self.view = min(now, view.seen_through)
        self.metrics.detector_lag_seconds.set((now - self.view).total_seconds())
        full = self._since is None or time.monotonic() >= self._next_full
        marked = await (self._sweep_all(lease, now) if full else self._sweep_since(lease, now))
        if marked is None:
            # A batch was writing some of these rows (heartbeats back just as the agents
            # went silent) and PostgreSQL broke a deadlock by rolling the sweep back. The
            # batch goes on; this sweep's slice is looked at again next tick, still here.
            log.warning("silence sweep rolled back to break a deadlock; next tick retries it")
            return 0
        # The next sweep looks from this one's threshold on, less a margin for heartbeats
        # that were received before it but committed after.
        overlap = max(SWEEP_OVERLAP_MIN_S, 3 * self.config.offline_check_interval_s)
        self._since = self.view - timedelta(seconds=self.config.offline_after_s + overlap)
        self.metrics.detector_runs.inc()
        self.runs += 1
        if marked:
            self.transitions += marked
            self.metrics.detector_transitions.labels("offline").inc(marked)
            log.info("silence detector marked %d agents offline", marked, extra={"marked": marked})
        await self._maybe_retain(lease)
        return marked

    async def _timed_sweep(
        self, lease: DetectorLease, now: datetime, *, since: datetime | None = None
    ) -> int | None:
        started = time.perf_counter()
        swept = await lease.sweep(
            now=now,
            offline_after_s=self.config.offline_after_s,
            since=since,
            limit=self.config.sweep_limit,
            seen_through=self.view,
        )
        self.metrics.detector_sweep_seconds.observe(time.perf_counter() - started)
        return swept

    async def _sweep_since(self, lease: DetectorLease, now: datetime) -> int | None:
        return await self._timed_sweep(lease, now, since=self._since)

    async def _sweep_all(self, lease: DetectorLease, now: datetime) -> int | None:
        """Every online agent past the threshold, in bounded statements (a mass silence, a
        site losing its network, or the backlog a new leader finds); None if rolled back."""
        marked = 0
        while True:
            swept = await self._timed_sweep(lease, now)
            if swept is None:
                return None
            marked += swept
            if swept < self.config.sweep_limit:
                break
        self._next_full = time.monotonic() + FULL_SWEEP_INTERVAL_S
        return marked

    async def _maybe_retain(self, lease: DetectorLease) -> None:
        if self.config.retention_days <= 0 or time.monotonic() < self._next_retention:
            return
        self._next_retention = time.monotonic() + self.config.retention_check_interval_s
        dropped = await lease.retain(older_than_s=self.config.retention_days * 86_400)
        if dropped:
            log.info(
                "retention dropped %d chunks older than %g days",
                dropped,
                self.config.retention_days,
                extra={"dropped_chunks": dropped},
            )
