"""Small parts: backoff, host collector, fake clock, memory spool, profiles, identity."""

from __future__ import annotations

import asyncio
import random
import uuid
from types import SimpleNamespace
from typing import Any

import pytest

from fleetpulse.agent import (
    Backoff,
    FakeClock,
    HostCollector,
    MemorySpool,
    StateDir,
    build_fleet,
    resolve_identity,
    resource_metrics,
)
from fleetpulse.agent.profiles import NAMED, SEED
from fleetpulse.config import AgentSettings, load_settings
from fleetpulse.errors import ConfigError


def test_backoff_is_capped_exponential_with_full_jitter() -> None:
    backoff = Backoff(0.5, 4.0, rng=random.Random(1))
    ceilings = []
    for _ in range(8):
        ceilings.append(backoff.ceiling())
        assert 0.0 <= backoff.next() <= ceilings[-1]
    assert ceilings == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0, 4.0, 4.0]
    backoff.reset()
    assert backoff.ceiling() == 0.5
    delays = {Backoff(1.0, 1.0, rng=random.Random(s)).next() for s in range(20)}
    assert len(delays) == 20  # jittered: no lock-step


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


async def test_fake_clock_wakes_sleepers_only_at_their_deadline() -> None:
    clock = FakeClock()
    woke: list[float] = []

    async def sleeper(at: float) -> None:
        await clock.sleep_until(at)
        woke.append(at)

    tasks = [asyncio.create_task(sleeper(1001.0)), asyncio.create_task(sleeper(1002.0))]
    await asyncio.sleep(0)
    assert clock.sleepers == 2
    await clock.advance(1.0)
    await asyncio.sleep(0)
    assert woke == [1001.0]
    await clock.advance(1.0)
    await asyncio.gather(*tasks)
    assert woke == [1001.0, 1002.0]
    assert (clock.now() - FakeClock().now()).total_seconds() == 2.0


def test_memory_spool_is_fifo_bounded_and_counts_drops() -> None:
    spool = MemorySpool(max_bytes=10)
    for body in (b"aaaa", b"bbbb", b"cccc"):
        spool.push(body)
    assert [e.body for e in spool.peek(10)] == [b"bbbb", b"cccc"]
    assert spool.dropped_total == 1
    spool.push(b"x" * 11)  # larger than the whole spool
    assert spool.dropped_total == 2
    first = spool.peek(1)
    assert [e.body for e in first] == [b"bbbb"]
    spool.remove([first[0].id, 999])
    assert spool.depth == 1
    assert [spool.next_seq(), spool.next_seq()] == [0, 1]


def test_seed_profiles_are_exact_and_named_ones_keep_their_identity() -> None:
    fleet = build_fleet("seed", 3)
    assert [m.profile for m in fleet] == list(SEED)
    for k in (0, 17, 400):
        firsts = [resource_metrics([m.contribution(k)]) for m in fleet]
        assert [(r.gpu_vram_available_gb, r.cpu_available_cores) for r in firsts] == [
            (8.0, 16),
            (2.0, 4),
            (0.0, 8),
        ]
    high = build_fleet("gpu-high", 50, seed=3)
    low = build_fleet("gpu-low", 50, seed=3)
    cpu = build_fleet("cpu-only", 50, seed=3)
    for k in range(0, 80, 7):
        for m in high:
            assert 8.0 <= resource_metrics([m.contribution(k)]).gpu_vram_available_gb <= 20.0
        for m in low:
            assert 1.0 <= resource_metrics([m.contribution(k)]).gpu_vram_available_gb <= 2.0
        for m in cpu:
            assert resource_metrics([m.contribution(k)]).gpu_count == 0
    assert NAMED["gpu-high"].cpu_cores == 16


def test_fleets_are_deterministic_distinct_and_moving() -> None:
    a = build_fleet("mixed", 200, seed=7)
    b = build_fleet("mixed", 200, seed=7)
    assert [m.agent_id for m in a] == [m.agent_id for m in b]
    assert [m.contribution(5) for m in a] == [m.contribution(5) for m in b]
    assert len({m.agent_id for m in a}) == 200
    assert len({m.profile.name for m in a}) >= 5
    assert a[0].agent_id != build_fleet("mixed", 1, seed=8)[0].agent_id
    assert a[0].contribution(0) != a[0].contribution(10)
    with pytest.raises(ValueError, match="unknown profile"):
        build_fleet("huge", 1)


async def test_a_machine_is_also_a_collector() -> None:
    [machine] = build_fleet("gpu-low", 1)
    first, second = await machine.collect(), await machine.collect()
    assert machine.ticks == 2
    assert first == machine.contribution(0)
    assert second == machine.contribution(1)


def test_identity_from_settings_and_its_checks(tmp_path: Any) -> None:
    agent_id = uuid.uuid4()
    state = StateDir(tmp_path)
    settings = AgentSettings(id=str(agent_id), pool="render", hostname="ws-1")
    identity = resolve_identity(settings, state)
    assert (identity.agent_id, identity.pool, identity.hostname) == (agent_id, "render", "ws-1")
    with pytest.raises(ConfigError, match=r"agent\.id = 'nope'"):
        resolve_identity(AgentSettings(id="nope"), state)
    with pytest.raises(ConfigError, match=r"agent\.pool"):
        resolve_identity(AgentSettings(id=str(agent_id), pool="Bad Pool"), state)


def test_agent_settings_added_for_the_gpu_probe_parse_from_env() -> None:
    settings = load_settings(
        environ={
            "FLEETPULSE_AGENT_GPU_NVML_MODULE": "fake_nvml",
            "FLEETPULSE_AGENT_GPU_RESPAWN_INITIAL_S": "0.1",
            "FLEETPULSE_AGENT_CONNECT_TIMEOUT_S": "3",
        }
    )
    assert settings.agent.gpu_nvml_module == "fake_nvml"
    assert settings.agent.gpu_respawn_initial_s == 0.1
    assert settings.agent.connect_timeout_s == 3.0
    assert settings.agent.gpu_timeout_s == 2.0
    with pytest.raises(ConfigError, match="FLEETPULSE_AGENT_GPU_TIMEOUT_S"):
        load_settings(environ={"FLEETPULSE_AGENT_GPU_TIMEOUT_S": "soon"})
