"""Fakes with the real interfaces: a clock tests move by hand, and collectors that
return what they are told (or fail the way they are told)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from fleetpulse.agent.collectors import Contribution, HostReading
from fleetpulse.messages import GpuMetrics

__all__ = ["FailingCollector", "FakeClock", "FakeGpuCollector", "FakeHostCollector"]


class FakeClock:
    """Time stands still until ``advance()``; sleepers wake when their deadline passes."""

    def __init__(
        self, start: datetime = datetime(2026, 11, 24, 4, 0, tzinfo=UTC), monotonic: float = 1000.0
    ) -> None:
        self._wall0 = start
        self._mono0 = monotonic
        self._mono = monotonic
        self._changed = asyncio.Condition()
        self.sleepers = 0

    def now(self) -> datetime:
        return self._wall0 + timedelta(seconds=self._mono - self._mono0)

    def __call__(self) -> datetime:
        """The wall time: the clock also serves where a ``Callable[[], datetime]`` is
        asked for (ingest, the silence detector)."""
        return self.now()

    def monotonic(self) -> float:
        return self._mono

    async def sleep_until(self, deadline: float) -> None:
        async with self._changed:
            self.sleepers += 1
            try:
                await self._changed.wait_for(lambda: self._mono >= deadline)
            finally:
                self.sleepers -= 1

    async def advance(self, seconds: float) -> None:
        self._mono += seconds
        async with self._changed:
            self._changed.notify_all()
        await asyncio.sleep(0)

    def advance_nowait(self, seconds: float) -> None:
        """Move time without waking sleepers (they see it at their next wake-up)."""
        self._mono += seconds


class FakeHostCollector:
    def __init__(
        self,
        *,
        cores: int = 16,
        load_1m: float = 0.0,
        load_5m: float = 0.0,
        load_15m: float = 0.0,
        mem_total_gb: float = 64.0,
        mem_available_gb: float = 48.0,
        on_collect: Callable[[], None] | None = None,
    ) -> None:
        self.reading = HostReading(
            cpu_load_1m=load_1m,
            cpu_load_5m=load_5m,
            cpu_load_15m=load_15m,
            cpu_cores=cores,
            mem_total_gb=mem_total_gb,
            mem_available_gb=mem_available_gb,
        )
        self.on_collect = on_collect
        self.calls = 0

    async def collect(self) -> Contribution:
        self.calls += 1
        if self.on_collect is not None:
            self.on_collect()
        return Contribution(host=self.reading)


class FakeGpuCollector:
    def __init__(self, gpus: tuple[GpuMetrics, ...] = ()) -> None:
        self.gpus = gpus

    async def collect(self) -> Contribution:
        return Contribution(gpus=self.gpus)


class FailingCollector:
    """Raises, or hangs forever when ``hang`` (a collector without its own timeout)."""

    def __init__(self, error: Exception | None = None, *, hang: bool = False) -> None:
        self.error = error or RuntimeError("sensor exploded")
        self.hang = hang

    async def collect(self) -> Contribution:
        if self.hang:
            await asyncio.Event().wait()
        raise self.error
