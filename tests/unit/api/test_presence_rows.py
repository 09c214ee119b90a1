"""Agent rows with presence and GPU health: shown where the agent reports them, and an older
agent's row is byte for byte what it was."""

from __future__ import annotations

import msgspec

from fleetpulse.api.schemas import agent_of
from fleetpulse.store import GpuState
from tests.unit.api.records import NOW, gpu, record


def test_a_withheld_agent_with_a_degraded_gpu_says_so() -> None:
    sick = GpuState(
        index=1,
        name="RTX",
        vram_total_gb=24.0,
        vram_free_gb=20.0,
        health="degraded",
        health_reasons=("xid:94",),
        xid_events=(94,),
        throttle_reasons=("hw_thermal",),
        retired_pages=2,
        retired_pages_pending=True,
        ecc_uncorrected=0,
    )
    row = record(
        "ws-1",
        gpus=(gpu(0, 8.0), sick),
        user_idle_s=12.5,
        presence_locked=False,
        presence_source="logind",
        offered=False,
        withheld_reason="exclusive_process:blender",
    )
    body = msgspec.json.decode(msgspec.json.encode(agent_of(row, None, NOW.timestamp())))
    assert body["offered"] is False
    assert body["withheld_reason"] == "exclusive_process:blender"
    assert body["presence"] == {"user_idle_s": 12.5, "locked": False, "source": "logind"}
    assert "health" not in body["gpus"][0]
    assert body["gpus"][1]["health"] == "degraded"
    assert body["gpus"][1]["health_reasons"] == ["xid:94"]
    assert body["gpus"][1]["retired_pages_pending"] is True


def test_an_offered_agent_shows_presence_only_and_an_older_one_nothing_new() -> None:
    offered = record("ws-2", user_idle_s=None, presence_locked=None, presence_source="x11")
    body = msgspec.json.decode(msgspec.json.encode(agent_of(offered, None, NOW.timestamp())))
    assert body["presence"] == {"user_idle_s": None, "locked": None, "source": "x11"}
    assert "offered" not in body  # true is the default, left out
    older = msgspec.json.encode(agent_of(record("ws-3", gpus=(gpu(0, 8.0),)), None, 0.0))
    for key in (b"presence", b"offered", b"withheld_reason", b"health"):
        assert key not in older
