"""The Prometheus exporter: fleet rendering, escaping, caps and series order."""

from __future__ import annotations

from fleetpulse.api.metrics import GIB, render_fleet
from tests.unit.api.records import NOW, gpu, record


def test_render_fleet_totals_escaping_and_cap() -> None:
    rows = [
        record(
            'we"ird\\host',
            gpus=(gpu(0, 10.0), gpu(1, 2.0, error="Xid")),
            cores=8,
            gpu_probe_failures_total=2,
            spool_dropped_total=0,
        ),
        record("b", gpus=(gpu(0, 4.0),), cores=4),
        record("c", status="offline", pool="cpu"),
    ]
    text, omitted = render_fleet(rows, now=NOW.timestamp() + 3, per_agent_limit=2)
    lines = text.decode().splitlines()
    assert 'fleetpulse_agents{pool="render",status="online"} 2' in lines
    assert 'fleetpulse_agents{pool="cpu",status="offline"} 1' in lines
    assert 'fleetpulse_agents{pool="cpu",status="online"} 0' in lines
    assert (
        f'fleetpulse_capacity_gpu_vram_free_bytes{{pool="render",gpu_type="RTX"}} {int(14 * GIB)}'
        in lines
    )
    assert 'fleetpulse_capacity_gpus{pool="render",gpu_type="RTX"} 2' in lines
    assert 'fleetpulse_capacity_cpu_available_cores{pool="render"} 12' in lines
    assert omitted == 1
    assert "fleetpulse_metrics_agents_omitted 1" in lines
    assert sum(1 for line in lines if line.startswith("fleetpulse_agent_up{")) == 2
    assert any('hostname="we\\"ird\\\\host"' in line for line in lines)
    assert any(
        line.startswith("fleetpulse_agent_heartbeat_age_seconds{") and line.endswith(" 3")
        for line in lines
    )


def test_per_agent_series_follow_agent_id_order() -> None:
    rows = [record(f"host{n}") for n in range(20)]
    text, _ = render_fleet(rows, now=NOW.timestamp(), per_agent_limit=20)
    ids = [
        line.split('agent_id="')[1].split('"')[0]
        for line in text.decode().splitlines()
        if line.startswith("fleetpulse_agent_up{")
    ]
    assert ids == [str(r.agent_id) for r in sorted(rows, key=lambda r: r.agent_id)]


def test_withheld_agents_and_unhealthy_gpus_by_bounded_reason() -> None:
    from fleetpulse.store import GpuState

    sick = GpuState(
        index=1,
        name="RTX",
        vram_total_gb=24.0,
        vram_free_gb=20.0,
        health="degraded",
        health_reasons=("xid:94", "throttle:hw_thermal"),
    )
    rows = [
        record("a", gpus=(gpu(0, 10.0), sick), cores=8),
        record("b", gpus=(gpu(0, 4.0),), cores=4, offered=False, withheld_reason="user_active"),
        record("c", offered=False, withheld_reason="exclusive_process:blender"),
        record("d", offered=False, withheld_reason="exclusive_process:zoom"),
        record("e", gpus=(gpu(0, 1.0, error="gpu 0: GPU is lost"),)),
    ]
    text, _ = render_fleet(rows, now=NOW.timestamp(), per_agent_limit=10)
    lines = text.decode().splitlines()
    assert 'fleetpulse_agents_withheld{pool="render",reason="user_active"} 1' in lines
    assert 'fleetpulse_agents_withheld{pool="render",reason="exclusive_process"} 2' in lines
    assert not any("blender" in line for line in lines)  # bounded: no process names
    assert 'fleetpulse_agents_withheld{pool="render",reason="outside_hours"} 0' in lines
    assert 'fleetpulse_gpus_unhealthy{pool="render",health="degraded"} 1' in lines
    assert 'fleetpulse_gpus_unhealthy{pool="render",health="failed"} 1' in lines
    assert 'fleetpulse_gpu_health_reasons{pool="render",reason="xid"} 1' in lines
    assert 'fleetpulse_gpu_health_reasons{pool="render",reason="throttle:hw_thermal"} 1' in lines
    assert 'fleetpulse_gpu_health_reasons{pool="render",reason="error"} 1' in lines
    # capacity: only a's healthy GPU and the cores of offered agents (a and e)
    assert (
        f'fleetpulse_capacity_gpu_vram_free_bytes{{pool="render",gpu_type="RTX"}} {int(10 * GIB)}'
        in lines
    )
    assert 'fleetpulse_capacity_cpu_available_cores{pool="render"} 16' in lines
    offered = [line for line in lines if line.startswith("fleetpulse_agent_offered{")]
    assert sorted(line[-1] for line in offered) == ["0", "0", "0", "1", "1"]
