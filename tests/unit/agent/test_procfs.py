"""The Linux host source: /proc parsed the way psutil reads it (recorded files)."""

from __future__ import annotations

from pathlib import Path

import pytest

from fleetpulse.agent import HostCollector
from fleetpulse.agent.collectors import ProcFs, parse_cpu_times, parse_meminfo

MEMINFO = """MemTotal:       65727264 kB
MemFree:         1234567 kB
MemAvailable:   40211200 kB
Buffers:          204800 kB
Cached:         30000000 kB
HugePages_Total:       0
"""
OLD_MEMINFO = "MemTotal: 1000 kB\nMemFree: 100 kB\nBuffers: 20 kB\nCached: 300 kB\n"
STAT_1 = "cpu  100 5 50 800 40 3 2 0 7 0\ncpu0 50 2 25 400 20 1 1 0 0 0\nintr 1\n"
STAT_2 = "cpu  160 5 70 900 50 3 2 0 9 0\ncpu0 80 2 35 450 25 1 1 0 0 0\nintr 2\n"


def test_meminfo_total_and_available_with_the_old_kernel_fallback() -> None:
    assert parse_meminfo(MEMINFO) == (65727264 * 1024, 40211200 * 1024)
    assert parse_meminfo(OLD_MEMINFO) == (1000 * 1024, 420 * 1024)


def test_cpu_times_count_idle_and_iowait_as_not_busy() -> None:
    assert parse_cpu_times(STAT_1) == (160, 1000)
    assert parse_cpu_times("cpu 1 2 3 4\n") == (6, 10)  # an old kernel's four columns


def write(root: Path, stat: str) -> None:
    (root / "loadavg").write_text("1.25 0.50 0.10 2/300 4242\n")
    (root / "meminfo").write_text(MEMINFO)
    (root / "stat").write_text(stat)


async def test_the_host_collector_on_a_proc_tree(tmp_path: Path) -> None:
    write(tmp_path, STAT_1)
    collector = HostCollector(ProcFs(tmp_path))
    write(tmp_path, STAT_2)
    part = await collector.collect()
    assert part.host is not None
    assert (part.host.cpu_load_1m, part.host.cpu_load_5m, part.host.cpu_load_15m) == (
        1.25,
        0.5,
        0.1,
    )
    assert part.host.mem_total_gb == pytest.approx(62.683, abs=1e-3)
    assert part.host.mem_available_gb == pytest.approx(38.349, abs=1e-3)
    # 80 busy jiffies of 190 since the priming call
    assert part.host.cpu_percent == pytest.approx(100 * 80 / 190, abs=0.1)


async def test_a_missing_proc_file_is_an_error_not_a_crash(tmp_path: Path) -> None:
    write(tmp_path, STAT_1)
    collector = HostCollector(ProcFs(tmp_path))
    (tmp_path / "meminfo").unlink()
    part = await collector.collect()
    assert part.host is None
    assert part.errors[0].startswith("host: FileNotFoundError")
