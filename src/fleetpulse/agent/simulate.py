"""Many simulated agents in one process, sharing one connection.

Agent ``i`` of ``N`` samples at ``start + k·interval + i·interval/N``: the fleet is
spread evenly over the interval, on a fixed grid (drift-corrected, as the real agent).
Due agents are handled in slots of ``slot_s``; their heartbeats go into one bounded
in-memory spool that one publisher drains with confirms, so an outage is ridden out
the same way as by the real agent (within the spool's bound, not across restarts).
``seq`` is ``floor(start_epoch / interval) + k``: one up per sample, and still rising
after a restart of the simulation. Simulated agents declare no pool, so ingest files
them under its default ``gpu``/``cpu`` pools (``agent.pool`` is the real agent's).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from types import TracebackType
from typing import Self

from fleetpulse.agent.clock import Clock, SystemClock
from fleetpulse.agent.heartbeat import Identity, build_goodbye, build_heartbeat, resource_metrics
from fleetpulse.agent.profiles import Machine, build_fleet
from fleetpulse.agent.publisher import Publisher
from fleetpulse.agent.spool import MemorySpool
from fleetpulse.config import Settings
from fleetpulse.lifecycle import wait_or_stop
from fleetpulse.messages import AgentStats, encode

__all__ = ["Simulator"]

log = logging.getLogger(__name__)


class Simulator:
    def __init__(
        self,
        settings: Settings,
        *,
        agents: int,
        profile: str = "mixed",
        interval_s: float | None = None,
        seed: int = 0,
        clock: Clock | None = None,
        slot_s: float = 0.05,
    ) -> None:
        if agents < 1:
            raise ValueError("agents must be at least 1")
        self.settings = settings
        self.interval_s = interval_s or settings.agent.heartbeat_interval_s
        self.clock: Clock = clock or SystemClock()
        self.fleet: list[Machine] = build_fleet(profile, agents, seed=seed)
        # Simulated agents declare no pool (ingest files them under gpu/cpu):
        # ``agent.pool`` belongs to the real agent that may run beside them.
        self.identities = [Identity(agent_id=m.agent_id, hostname=m.hostname) for m in self.fleet]
        slots = max(1, min(agents, math.ceil(self.interval_s / slot_s)))
        self._slots: list[list[int]] = [[] for _ in range(slots)]
        for index in range(agents):
            self._slots[index * slots // agents].append(index)
        self.slot_s = self.interval_s / slots
        self.spool = MemorySpool(settings.agent.spool_max_bytes)
        self.publisher: Publisher | None = None
        self.samples_total = 0
        self.rounds = 0
        self._next_seq = 0
        self._stop = asyncio.Event()

    async def __aenter__(self) -> Self:
        self.publisher = Publisher.from_settings(
            self.settings, self.spool, now=self.clock.now, batch_size=512
        )
        await self.publisher.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.publisher is not None:
            await self.publisher.close()

    def request_stop(self) -> None:
        self._stop.set()

    def _emit(self, index: int, k: int, seq_base: int) -> None:
        identity = self.identities[index]
        started = time.perf_counter()
        metrics = resource_metrics([self.fleet[index].contribution(k)])
        assert self.publisher is not None
        heartbeat = build_heartbeat(
            identity,
            seq=seq_base + k,
            sampled_at=self.clock.now(),
            metrics=metrics,
            stats=AgentStats(
                collect_ms=round((time.perf_counter() - started) * 1000.0, 3),
                spool_depth=self.spool.depth,
                dropped_total=self.spool.dropped_total,
                reconnects_total=self.publisher.reconnects_total,
            ),
        )
        self.spool.push(encode(heartbeat))
        self.samples_total += 1

    async def run(self, duration_s: float | None = None) -> None:
        """Heartbeats for the whole fleet until ``request_stop()`` or ``duration_s``;
        then goodbyes, flushed within ``goodbye_timeout_s``."""
        assert self.publisher is not None
        clock = self.clock
        start = clock.monotonic()
        end = None if duration_s is None else start + duration_s
        seq_base = math.floor(clock.now().timestamp() / self.interval_s)
        k = 0
        while not self._stop.is_set():
            round_start = start + k * self.interval_s
            for slot, members in enumerate(self._slots):
                due = round_start + slot * self.slot_s
                if end is not None and due >= end:
                    self._stop.set()
                    break
                if due > clock.monotonic() and await wait_or_stop(
                    self._stop, clock.sleep_until(due)
                ):
                    break
                for index in members:
                    self._emit(index, k, seq_base)
                self.publisher.wake()
            else:
                k += 1
                self.rounds = k
        self._next_seq = seq_base + k + 1
        await self.farewell()

    async def farewell(self) -> None:
        assert self.publisher is not None
        now = self.clock.now()
        for identity in self.identities:
            self.spool.push(encode(build_goodbye(identity, seq=self._next_seq, sent_at=now)))
        if not await self.publisher.flush(self.settings.agent.goodbye_timeout_s):
            log.warning("simulate stopped with %d messages undelivered", self.spool.depth)
