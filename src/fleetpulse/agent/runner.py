"""The agent: sample on a drift-corrected schedule, spool, publish, say goodbye.

``Agent(settings)`` is an async context manager that owns, in order, the state dir
(lock, id), the spool, the collectors and the publisher; ``run()`` samples every
``heartbeat_interval_s`` on a fixed grid (a slow collection never shifts the next
tick; a tick missed entirely is skipped) until ``request_stop()``, then flushes the
spool and sends a goodbye within ``goodbye_timeout_s``. Collectors and the clock can
be injected for tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import logging
import math
import sys
import time
from collections.abc import Sequence
from contextlib import AsyncExitStack
from types import TracebackType
from typing import Self

from fleetpulse.agent.clock import Clock, SystemClock
from fleetpulse.agent.collectors import Collector, Contribution, HostCollector
from fleetpulse.agent.gpu import GpuCollector
from fleetpulse.agent.heartbeat import (
    Identity,
    build_goodbye,
    build_heartbeat,
    resource_metrics,
)
from fleetpulse.agent.offer import OfferPolicy, PresenceCollector
from fleetpulse.agent.presence import detect_source
from fleetpulse.agent.publisher import Publisher
from fleetpulse.agent.spool import Spool, SqliteSpool
from fleetpulse.agent.state import StateDir, resolve_identity
from fleetpulse.config import Settings
from fleetpulse.errors import ConfigError
from fleetpulse.lifecycle import wait_or_stop
from fleetpulse.messages import AgentStats, Heartbeat, encode

__all__ = ["Agent", "default_collectors", "presence_collector"]

log = logging.getLogger(__name__)


def release_startup_memory() -> None:
    """Hand the heap that start-up (imports, settings, the first connection) left free back
    to the system (glibc ``malloc_trim``), so a long-running agent's RSS is what it uses."""
    gc.collect()
    if sys.platform == "linux":
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None).malloc_trim(0)


def presence_collector(settings: Settings, clock: Clock) -> PresenceCollector:
    """The configured presence source (``auto``: what this machine offers) and policy;
    ConfigError for a policy that does not parse or a named source that cannot work here."""
    agent = settings.agent
    policy = OfferPolicy.from_settings(agent)
    try:
        source = detect_source(agent.presence_source)
    except OSError as exc:
        raise ConfigError(
            f"setting agent.presence_source = {agent.presence_source!r}: {exc}"
        ) from None
    log.info(
        "presence from %s; %s",
        source.name if source is not None else "nowhere (idle time unknown)",
        "always offered" if policy.always else f"offer policy {policy}",
    )
    return PresenceCollector(source, policy, now=clock.now)


def default_collectors(settings: Settings, clock: Clock | None = None) -> list[Collector]:
    agent = settings.agent
    return [
        HostCollector(),
        GpuCollector(
            timeout_s=agent.gpu_timeout_s,
            respawn_initial_s=agent.gpu_respawn_initial_s,
            respawn_max_s=agent.gpu_respawn_max_s,
            nvml_module=agent.gpu_nvml_module,
            xid_hold_s=agent.gpu_xid_hold_s,
        ),
        presence_collector(settings, clock or SystemClock()),
    ]


class Agent:
    def __init__(
        self,
        settings: Settings,
        *,
        collectors: Sequence[Collector] | None = None,
        clock: Clock | None = None,
        spool: Spool | None = None,
    ) -> None:
        self.settings = settings
        self.clock: Clock = clock or SystemClock()
        self._collectors = list(collectors) if collectors is not None else None
        self._spool = spool
        self._stop = asyncio.Event()
        self._stack = AsyncExitStack()
        self.identity: Identity | None = None
        self.publisher: Publisher | None = None
        self.samples_total = 0
        self.gpu_probe_failures_total = 0
        self.last_heartbeat: Heartbeat | None = None
        self.goodbye_sent = False

    @property
    def spool(self) -> Spool:
        assert self._spool is not None, "enter the agent first"
        return self._spool

    @property
    def collectors(self) -> list[Collector]:
        assert self._collectors is not None, "enter the agent first"
        return self._collectors

    async def __aenter__(self) -> Self:
        agent = self.settings.agent
        stack = self._stack
        try:
            state = stack.enter_context(StateDir(agent.state_dir))
            self.identity = resolve_identity(agent, state)
            if self._spool is None:
                self._spool = SqliteSpool(state.spool_path, agent.spool_max_bytes)
            stack.callback(self._spool.close)
            if self._collectors is None:
                self._collectors = default_collectors(self.settings, self.clock)
            for collector in self._collectors:
                if hasattr(collector, "__aenter__"):
                    await stack.enter_async_context(collector)  # type: ignore[arg-type]
            self.publisher = await stack.enter_async_context(
                Publisher.from_settings(self.settings, self._spool, now=self.clock.now)
            )
        except BaseException:
            await stack.aclose()
            raise
        release_startup_memory()
        log.info(
            "agent %s (%s, pool %s) started; %d samples spooled from before",
            self.identity.agent_id,
            self.identity.hostname,
            self.identity.pool or "default",
            self._spool.depth,
            extra={
                "agent_id": str(self.identity.agent_id),
                "hostname": self.identity.hostname,
                "pool": self.identity.pool or "default",
                "spooled": self._spool.depth,
            },
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._stack.aclose()

    def request_stop(self) -> None:
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    async def run(self) -> None:
        """Sample until ``request_stop()``, then flush and say goodbye (bounded)."""
        interval = self.settings.agent.heartbeat_interval_s
        next_at = self.clock.monotonic()
        while not self._stop.is_set():
            await self.sample_once()
            next_at += interval
            now = self.clock.monotonic()
            if next_at <= now:
                skipped = math.floor((now - next_at) / interval) + 1
                log.warning("collection overran %d heartbeat interval(s)", skipped)
                next_at += skipped * interval
            await wait_or_stop(self._stop, self.clock.sleep_until(next_at))
        await self.farewell()

    async def _collect(self) -> list[Contribution]:
        results = await asyncio.gather(
            *(c.collect() for c in self.collectors), return_exceptions=True
        )
        parts: list[Contribution] = []
        for collector, result in zip(self.collectors, results, strict=True):
            if isinstance(result, Contribution):
                parts.append(result)
            elif isinstance(result, Exception):
                name = type(collector).__name__
                parts.append(Contribution(errors=(f"{name}: {type(result).__name__}: {result}",)))
            else:
                raise result
        return parts

    async def sample_once(self) -> Heartbeat:
        """One sample into the spool; the publisher takes it from there."""
        assert self.identity is not None
        assert self.publisher is not None
        sampled_at = self.clock.now()
        started = time.perf_counter()
        parts = await self._collect()
        collect_ms = (time.perf_counter() - started) * 1000.0
        self.gpu_probe_failures_total += sum(1 for p in parts if p.gpu_failed)
        spool = self.spool
        stats = AgentStats(
            collect_ms=round(collect_ms, 3),
            spool_depth=spool.depth,
            dropped_total=spool.dropped_total,
            reconnects_total=self.publisher.reconnects_total,
            gpu_probe_failures_total=self.gpu_probe_failures_total,
        )
        heartbeat = build_heartbeat(
            self.identity,
            seq=spool.next_seq(),
            sampled_at=sampled_at,
            metrics=resource_metrics(parts),
            stats=stats,
            presence=next((p.presence for p in parts if p.presence is not None), None),
        )
        spool.push(encode(heartbeat))
        self.publisher.wake()
        self.samples_total += 1
        self.last_heartbeat = heartbeat
        return heartbeat

    async def farewell(self) -> bool:
        """Flush what the broker will take and send a goodbye, all within
        ``goodbye_timeout_s``; True if the goodbye was confirmed."""
        assert self.identity is not None
        assert self.publisher is not None
        budget = self.settings.agent.goodbye_timeout_s
        loop = asyncio.get_running_loop()
        deadline = loop.time() + budget
        # with the broker away there is nothing to wait for: the spool keeps it all
        connected = self.publisher.connected.is_set()
        flushed = connected and await self.publisher.flush(budget)
        if not flushed:
            log.warning(
                "stopping with %d samples spooled for next time",
                self.spool.depth,
                extra={"agent_id": str(self.identity.agent_id), "spooled": self.spool.depth},
            )
        goodbye = build_goodbye(self.identity, seq=self.spool.next_seq(), sent_at=self.clock.now())
        remaining = max(0.05, deadline - loop.time())
        self.goodbye_sent = await self.publisher.send_direct(
            encode(goodbye), self.identity.routing_key, remaining
        )
        log.info(
            "agent %s stopped (goodbye %s)",
            self.identity.agent_id,
            "sent" if self.goodbye_sent else "not delivered",
            extra={"agent_id": str(self.identity.agent_id), "goodbye_sent": self.goodbye_sent},
        )
        return self.goodbye_sent
