"""The fleet table printed by `fleetpulse status`."""

from __future__ import annotations

import io

from rich.console import Console

from fleetpulse.api.status import fleet_table, pool_summary


def test_fleet_table_online_first_and_pool_summary() -> None:
    rows = [
        {
            "hostname": "off",
            "pool_name": "cpu",
            "status": "offline",
            "sample_age_s": None,
            "cpu_available_cores": 8,
            "cpu_cores": 8,
            "mem_available_gb": 1.0,
            "mem_total_gb": 2.0,
            "gpu_type": "none",
            "gpu_count": 0,
            "gpu_vram_available_gb": 0.0,
            "reliability_30d": None,
        },
        {
            "hostname": "on",
            "pool_name": "gpu",
            "status": "online",
            "sample_age_s": 3.2,
            "cpu_available_cores": 2,
            "cpu_cores": 8,
            "mem_available_gb": 1.0,
            "mem_total_gb": 2.0,
            "gpu_type": "L4",
            "gpu_count": 1,
            "gpu_vram_available_gb": 20.0,
            "reliability_30d": 0.995,
        },
    ]
    out = io.StringIO()
    Console(file=out, width=160).print(fleet_table(rows))
    text = out.getvalue()
    assert text.index("on ") < text.index("off")
    assert "99.5%" in text
    assert pool_summary(rows) == "pools: cpu 0/1 online, gpu 1/1 online"
    assert pool_summary([]) == "pools: none"
