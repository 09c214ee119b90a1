"""Terminal tables and lines of ``fleetpulse status | capacity | events`` (no I/O)."""

from __future__ import annotations

import io
import uuid
from datetime import UTC, datetime
from typing import Any

import msgspec
import pytest
from rich.console import Console

from fleetpulse.cli import build_parser
from fleetpulse.client import Agent, Capacity, Event
from fleetpulse.config import ApiSettings, Settings
from fleetpulse.console import api_url_of, capacity_table, event_line, fleet_table, pool_summary

NOW = datetime(2026, 12, 6, 8, 0, tzinfo=UTC)


def _agent(kind: Any = Agent, **fields: Any) -> Any:
    base: dict[str, Any] = {
        "agent_id": uuid.UUID(int=len(fields)),
        "hostname": "h",
        "pool_name": "gpu",
        "status": "online",
        "status_changed_at": NOW,
        "first_seen_at": NOW,
        "last_heartbeat_at": NOW,
        "last_sampled_at": NOW,
        "sample_age_s": 3.2,
        "agent_version": "0.1.0",
        "work_state": "idle",
        "cpu_cores": 8,
        "cpu_available_cores": 2,
        "cpu_load_1m": 6.0,
        "mem_total_gb": 2.0,
        "mem_available_gb": 1.0,
        "gpu_type": "none",
        "gpu_count": 0,
        "gpu_vram_total_gb": 0.0,
        "gpu_vram_available_gb": 0.0,
        "gpus": [],
        "errors": [],
        "reliability_30d": None,
    }
    base.update(fields)
    return msgspec.convert(base, kind)


def _text(table: Any) -> str:
    out = io.StringIO()
    Console(file=out, width=200).print(table)
    return out.getvalue()


def test_fleet_table_online_first_and_pool_summary() -> None:
    rows = [
        _agent(hostname="off", pool_name="cpu", status="offline", sample_age_s=None),
        _agent(hostname="on", gpu_type="L4", gpu_count=1, reliability_30d=0.995),
    ]
    text = _text(fleet_table(rows))
    assert text.index("on ") < text.index("off")
    assert "99.5%" in text
    assert pool_summary(rows) == "pools: cpu 0/1 online, gpu 1/1 online"
    assert pool_summary([]) == "pools: none"


def test_held_and_cordoned_columns_only_when_some_agent_has_them() -> None:
    note = {"reason": "fan noise", "by": "ops", "at": NOW}
    gpu = {
        "uuid": "GPU-x",
        "name": "NVIDIA L4",
        "vram_total_gb": 24.0,
        "vram_free_gb": 20.0,
        "util_pct": None,
        "temp_c": None,
        "power_w": None,
        "error": None,
    }
    plain = _agent(hostname="plain")
    claimed = _agent(
        hostname="claimed",
        claims=1,
        cpu_held_cores=4,
        mem_held_gb=16.0,
        gpus=[{**gpu, "index": 0, "vram_held_gb": 8.0}, {**gpu, "index": 1, "cordon": note}],
    )
    cordoned = _agent(hostname="cordoned", cordon=note, schedulable=False)
    assert "held" not in _text(fleet_table([plain]))
    text = _text(fleet_table([plain, claimed, cordoned]))
    assert "GPU0 8, 4 cores, 16 GiB" in text
    assert "GPU1 by ops: fan noise" in text
    assert "host by ops: fan noise" in text


def test_capacity_table_shows_the_usable_gpus_and_their_free_vram() -> None:
    gpu = {
        "uuid": "GPU-x",
        "name": "NVIDIA L4",
        "vram_total_gb": 24.0,
        "util_pct": None,
        "temp_c": None,
        "power_w": None,
    }
    found = _agent(
        Capacity,
        hostname="l4",
        gpu_type="NVIDIA L4",
        gpu_count=2,
        gpus=[
            {**gpu, "index": 0, "vram_free_gb": 20.5, "error": None},
            {**gpu, "index": 1, "vram_free_gb": 23.0, "error": "Xid 48"},
        ],
        matching_gpus=[0],
    )
    text = _text(capacity_table([found]))
    assert "1/2" in text
    assert "20.5" in text
    assert "23.0" not in text
    assert str(found.agent_id) in text


def test_event_line() -> None:
    event = Event(
        id=42,
        agent_id=uuid.UUID(int=7),
        hostname="ws-7",
        pool_name="render",
        at=NOW,
        from_status="online",
        to_status="offline",
        reason="silence",
    )
    assert event_line(event) == (
        "2026-12-06T08:00:00+00:00  #42  ws-7 (render)  online -> offline  silence"
        f"  {uuid.UUID(int=7)}"
    )
    claimed = msgspec.structs.replace(
        event, reason="claim_created", detail={"holder": "dispatch-1", "claim_id": "c-1"}
    )
    assert event_line(claimed).endswith(
        "claim_created  " + f"{uuid.UUID(int=7)}  claim_id=c-1 holder=dispatch-1"
    )


@pytest.mark.parametrize(
    ("host", "url"),
    [
        ("0.0.0.0", "http://127.0.0.1:8123"),
        ("10.1.2.3", "http://10.1.2.3:8123"),
        ("::1", "http://[::1]:8123"),
    ],
)
def test_api_url_from_settings(host: str, url: str) -> None:
    settings = Settings(api=ApiSettings(host=host, port=8123))
    assert api_url_of(settings, None) == url
    assert api_url_of(settings, "http://elsewhere:1") == "http://elsewhere:1"


@pytest.mark.parametrize(
    ("argv", "problem"),
    [
        (["capacity", "--min-gpu-vram", "-1"], "must not be negative"),
        (["capacity", "--min-cores", "many"], "not a number"),
        (["events", "--agent", "ws-7"], "not an agent id"),
    ],
)
def test_bad_arguments_name_the_problem(argv: list[str], problem: str, capsys) -> None:
    with pytest.raises(SystemExit) as caught:
        build_parser().parse_args(argv)
    assert caught.value.code == 2
    assert problem in capsys.readouterr().err


def test_fleet_table_says_whether_a_machine_is_offered_and_which_gpus_are_sick() -> None:
    gpu = {
        "index": 1,
        "uuid": "GPU-1",
        "name": "L4",
        "vram_total_gb": 24.0,
        "vram_free_gb": 20.0,
        "util_pct": None,
        "temp_c": None,
        "power_w": None,
        "error": None,
        "health": "degraded",
    }
    rows = [
        _agent(hostname="ws-a", offered=False, withheld_reason="user_active", gpus=[gpu]),
        _agent(hostname="ws-b"),
    ]
    text = _text(fleet_table(rows))
    assert "no (user_active), gpu 1 degraded" in text
    assert "jobs" in text
