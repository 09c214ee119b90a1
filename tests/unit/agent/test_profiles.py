"""Simulated machines: seed and named profiles, deterministic fleets."""

from __future__ import annotations

import pytest

from fleetpulse.agent import (
    build_fleet,
    resource_metrics,
)
from fleetpulse.agent.profiles import NAMED, SEED


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
