"""`fleetpulse up`'s pure parts: the summary line and the children it would start."""

from __future__ import annotations

from pathlib import Path

import pytest

from fleetpulse.config import Settings
from fleetpulse.up import _children, fleet_summary


def test_summary_counts_online_pools_and_capacity() -> None:
    items = [
        {
            "status": "online",
            "pool_name": "gpu",
            "gpu_vram_available_gb": 8.0,
            "cpu_available_cores": 16,
        },
        {
            "status": "online",
            "pool_name": "gpu",
            "gpu_vram_available_gb": 2.0,
            "cpu_available_cores": 4,
        },
        {
            "status": "online",
            "pool_name": "cpu",
            "gpu_vram_available_gb": 0.0,
            "cpu_available_cores": 8,
        },
        {
            "status": "offline",
            "pool_name": "cpu",
            "gpu_vram_available_gb": 24.0,
            "cpu_available_cores": 32,
        },
    ]
    line = fleet_summary(items)
    assert line.startswith("agents 3 online, 1 offline")
    assert "pools cpu:1 gpu:2" in line
    assert "free VRAM 10.0 GB" in line
    assert "28 idle cores" in line


def test_summary_of_empty_fleet() -> None:
    assert fleet_summary([]).startswith("agents 0 online, 0 offline | pools -")


def test_children_start_in_dependency_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FLEETPULSE_AGENT_HEARTBEAT_INTERVAL_S", raising=False)
    children = _children(Settings(), "f.toml", 4, True, 2.0, tmp_path)
    assert [c.name for c in children] == ["ingest", "api", "agent", "simulate"]
    simulate = children[-1].argv
    assert simulate[-6:] == ["--agents", "4", "--profile", "mixed", "--interval", "2.0"]
    assert all(c.argv[3:5] == ["--config", "f.toml"] for c in children)
    assert children[2].env["FLEETPULSE_AGENT_HEARTBEAT_INTERVAL_S"] == "2.0"
    assert all(c.log_path.parent == tmp_path for c in children)


def test_children_without_agents(tmp_path: Path) -> None:
    children = _children(Settings(), None, 0, False, 5.0, tmp_path)
    assert [c.name for c in children] == ["ingest", "api"]
