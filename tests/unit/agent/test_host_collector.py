"""The host collector: load, cores and memory from psutil, failures as errors."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from fleetpulse.agent import (
    HostCollector,
    resource_metrics,
)


class FakePsutil:
    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.percent_calls = 0

    def cpu_percent(self, interval: Any = None) -> float:
        self.percent_calls += 1
        return 37.5

    def getloadavg(self) -> tuple[float, float, float]:
        if self.fail:
            raise OSError("no /proc/loadavg")
        return (3.5, 2.0, 1.0)

    def cpu_count(self, logical: bool = True) -> int:
        return 8

    def virtual_memory(self) -> Any:
        return SimpleNamespace(total=32 * 1024**3, available=8 * 1024**3)


async def test_host_collector_reads_load_cores_memory_and_primes_cpu_percent() -> None:
    ps = FakePsutil()
    collector = HostCollector(ps)
    assert ps.percent_calls == 1  # primed at construction
    part = await collector.collect()
    assert part.host is not None
    assert part.host.cpu_cores == 8
    assert part.host.cpu_load_1m == 3.5
    assert part.host.mem_available_gb == 8.0
    assert part.host.cpu_percent == 37.5
    assert resource_metrics([part]).cpu_available_cores == 4


async def test_host_collector_turns_failures_into_errors() -> None:
    part = await HostCollector(FakePsutil(fail=True)).collect()
    assert part.host is None
    assert part.errors == ("host: OSError: no /proc/loadavg",)
