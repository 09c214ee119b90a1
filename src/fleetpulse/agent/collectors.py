"""What a collector is, and the host collector (``/proc`` on Linux, psutil elsewhere).

A collector is one async method, ``collect() -> Contribution``; each has its I/O root
injected (:class:`ProcFs` or the ``psutil`` module here, the NVML child process for
GPUs) so tests can hand it a fake. On Linux the host figures come straight from
``/proc`` (:class:`ProcFs`, the psutil calls the collector uses, same semantics): psutil
costs the light agent 3-4 MiB of memory for four numbers. A collector never raises for a
metric it could not read: it returns the reason in ``errors`` and the heartbeat goes out
without that part.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Protocol

import msgspec

from fleetpulse.messages import GpuMetrics, Presence

__all__ = ["Collector", "Contribution", "HostCollector", "HostReading", "ProcFs"]

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


def parse_meminfo(text: str) -> tuple[int, int]:
    """(total, available) bytes from ``/proc/meminfo``; available falls back to free +
    buffers + cached on kernels before 3.14, which lack MemAvailable."""
    fields: dict[str, int] = {}
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        value = rest.split()
        if value and value[0].isdigit():
            fields[name] = int(value[0]) * 1024
    total = fields["MemTotal"]
    available = fields.get("MemAvailable")
    if available is None:
        available = sum(fields.get(k, 0) for k in ("MemFree", "Buffers", "Cached"))
    return total, available


def parse_cpu_times(text: str) -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs from the first line of ``/proc/stat``; idle and
    iowait are not busy, guest time is already inside user time (as psutil counts)."""
    values = [int(v) for v in text.split("\n", 1)[0].split()[1:]]
    values += [0] * (10 - len(values))
    user, nice, system, idle, iowait, irq, softirq, steal = values[:8]
    total = user + nice + system + idle + iowait + irq + softirq + steal
    return total - idle - iowait, total


class ProcFs:
    """The psutil calls the host collector makes, read from ``/proc`` (Linux)."""

    def __init__(self, root: str | os.PathLike[str] = "/proc") -> None:
        self.root = Path(root)
        self._last: tuple[int, int] | None = None

    def getloadavg(self) -> tuple[float, float, float]:
        one, five, fifteen = (self.root / "loadavg").read_text().split()[:3]
        return float(one), float(five), float(fifteen)

    def cpu_count(self, logical: bool = True) -> int | None:
        return os.cpu_count()

    def virtual_memory(self) -> Any:
        total, available = parse_meminfo((self.root / "meminfo").read_text())
        return SimpleNamespace(total=total, available=available)

    def cpu_percent(self, interval: Any = None) -> float:
        """Busy share of all CPUs since the previous call (0.0 on the first, as psutil)."""
        busy, total = parse_cpu_times((self.root / "stat").read_text())
        last, self._last = self._last, (busy, total)
        if last is None or total <= last[1]:
            return 0.0
        return round(min(100.0, max(0.0, 100.0 * (busy - last[0]) / (total - last[1]))), 1)


def default_host_source() -> Any:
    """``/proc`` where it is readable (Linux), else psutil."""
    if Path("/proc/meminfo").is_file() and Path("/proc/stat").is_file():
        return ProcFs()
    import psutil

    return psutil


class HostCollector:
    """Load averages, logical cores and memory from ``/proc`` or ``psutil`` (or a
    stand-in with the same calls)."""

    def __init__(self, ps: Any = None) -> None:
        self._ps = ps if ps is not None else default_host_source()
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
