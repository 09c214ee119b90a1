"""What a collector is, and the host collector (psutil).

A collector is one async method, ``collect() -> Contribution``; each has its I/O root
injected (the ``psutil`` module here, the NVML child process for GPUs) so tests can
hand it a fake. A collector never raises for a metric it could not read: it returns
the reason in ``errors`` and the heartbeat goes out without that part.
"""

from __future__ import annotations

from typing import Any, Protocol

import msgspec

from fleetpulse.messages import GpuMetrics, Presence

__all__ = ["Collector", "Contribution", "HostCollector", "HostReading"]

GIB = 1024.0**3


class HostReading(msgspec.Struct, frozen=True, kw_only=True):
    cpu_load_1m: float
    cpu_load_5m: float
    cpu_load_15m: float
    cpu_cores: int
    mem_total_gb: float
    mem_available_gb: float
    cpu_percent: float | None = None


class Contribution(msgspec.Struct, frozen=True, kw_only=True):
    """One collector's part of a sample. ``gpus`` None: this collector says nothing about
    GPUs; an empty tuple: there are none. ``gpu_failed``: GPU metrics were wanted and
    could not be had this time (a probe failure, counted in ``agent_stats``). ``presence``:
    the user's presence and the offer decision (the presence collector's part)."""

    host: HostReading | None = None
    gpus: tuple[GpuMetrics, ...] | None = None
    errors: tuple[str, ...] = ()
    gpu_failed: bool = False
    presence: Presence | None = None


class Collector(Protocol):
    async def collect(self) -> Contribution: ...


class HostCollector:
    """Load averages, logical cores and memory from ``psutil`` (or a stand-in module)."""

    def __init__(self, ps: Any = None) -> None:
        if ps is None:
            import psutil

            ps = psutil
        self._ps = ps
        # The first cpu_percent(None) compares against process start and returns 0.0;
        # priming it here makes the first heartbeat's value real.
        self._ps.cpu_percent(interval=None)

    async def collect(self) -> Contribution:
        try:
            load_1m, load_5m, load_15m = self._ps.getloadavg()
            cores = int(self._ps.cpu_count(logical=True) or 1)
            memory = self._ps.virtual_memory()
            percent = float(self._ps.cpu_percent(interval=None))
        except Exception as exc:  # psutil raises OSError and its own errors; never crash
            return Contribution(errors=(f"host: {type(exc).__name__}: {exc}",))
        return Contribution(
            host=HostReading(
                cpu_load_1m=round(max(0.0, float(load_1m)), 3),
                cpu_load_5m=round(max(0.0, float(load_5m)), 3),
                cpu_load_15m=round(max(0.0, float(load_15m)), 3),
                cpu_cores=cores,
                mem_total_gb=round(memory.total / GIB, 3),
                mem_available_gb=round(min(memory.available, memory.total) / GIB, 3),
                cpu_percent=percent,
            )
        )
