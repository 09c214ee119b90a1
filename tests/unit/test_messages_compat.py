"""Presence and GPU health are additive: an older agent's body reads with the new contract,
and a newer agent's body reads with the contract as it was before (an older ingest)."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

import msgspec
import pytest

from fleetpulse.errors import MessageError
from fleetpulse.messages import GpuMetrics, Heartbeat, Presence, decode, encode
from tests.fixtures import messages_v1_0 as old
from tests.unit.test_messages import design_example

T0 = datetime(2026, 12, 6, 8, 0, tzinfo=UTC)


def new_heartbeat() -> Heartbeat:
    hb = decode(json.dumps(design_example()).encode())
    assert isinstance(hb, Heartbeat)
    sick = GpuMetrics(
        index=1,
        uuid="GPU-2",
        name="NVIDIA GeForce RTX 4090",
        vram_total_gb=24.0,
        vram_free_gb=24.0,
        health="degraded",
        health_reasons=["xid:94", "throttle:hw_thermal"],
        xid_events=[94],
        throttle_reasons=["hw_thermal"],
        retired_pages=0,
        retired_pages_pending=False,
        ecc_uncorrected=0,
    )
    metrics = msgspec.structs.replace(hb.resource_metrics, gpus=[*hb.resource_metrics.gpus, sick])
    presence = Presence(
        user_idle_s=12.5,
        locked=False,
        source="logind",
        offered=False,
        withheld_reason="user_active",
    )
    return msgspec.structs.replace(
        hb, resource_metrics=metrics, presence=presence, incarnation=uuid.uuid4()
    )


def test_an_older_agents_heartbeat_reads_as_offered_with_unknown_health() -> None:
    body = old.encode(old.decode(json.dumps(design_example()).encode()))
    hb = decode(body)
    assert isinstance(hb, Heartbeat)
    assert hb.presence is None
    assert hb.resource_metrics.gpus[0].health is None
    assert hb.resource_metrics.gpus[0].health_reasons == []


def test_a_newer_agents_heartbeat_reads_with_the_older_contract() -> None:
    hb = new_heartbeat()
    body = encode(hb)
    assert b'"presence"' in body
    assert b'"health":"degraded"' in body
    assert b'"incarnation"' in body
    seen = old.decode(body)  # what an ingest from before presence and health makes of it
    assert isinstance(seen, old.Heartbeat)
    assert seen.agent_id == hb.agent_id
    assert [g.uuid for g in seen.resource_metrics.gpus] == ["GPU-1", "GPU-2"]
    assert not hasattr(seen, "presence")
    assert not hasattr(seen, "incarnation")
    assert decode(body) == hb  # and the new contract round-trips it


@pytest.mark.parametrize(
    ("path", "value", "needle"),
    [
        (("presence", "user_idle_s"), -1.0, "user_idle_s"),
        (("presence", "source"), "", "source"),
        (("presence", "withheld_reason"), "x" * 200, "withheld_reason"),
        (("gpu", "health"), "sick", "health"),
        (("gpu", "xid_events"), [-3], "xid_events"),
        (("gpu", "health_reasons"), ["r"] * 17, "health_reasons"),
    ],
)
def test_bad_presence_or_health_is_rejected_with_its_field(
    path: tuple[str, str], value: Any, needle: str
) -> None:
    doc = json.loads(encode(new_heartbeat()))
    target = doc["presence"] if path[0] == "presence" else doc["resource_metrics"]["gpus"][1]
    target[path[1]] = value
    with pytest.raises(MessageError) as info:
        decode(json.dumps(doc).encode())
    assert info.value.reason == "invalid"
    assert needle in str(info.value)


def test_presence_defaults_say_offered_and_unknown() -> None:
    assert Presence() == Presence(
        user_idle_s=None, locked=None, source="none", offered=True, withheld_reason=None
    )
    assert uuid.UUID(int=0) != new_heartbeat().agent_id


def test_the_older_contract_is_the_one_v1_0_shipped() -> None:
    """The fixture derives v1.0 from today's structs less what came since: a field added
    later must be named there too, or the 'older ingest' above would know it."""
    shipped = {
        old.GpuMetrics: "index uuid name vram_total_gb vram_free_gb util_pct temp_c power_w error",
        old.ResourceMetrics: "cpu_load_1m cpu_load_5m cpu_load_15m cpu_cores cpu_available_cores"
        " mem_total_gb mem_available_gb gpu_type gpu_count gpu_vram_total_gb"
        " gpu_vram_available_gb gpus errors",
        old.Heartbeat: "schema_version agent_id seq sampled_at sent_at hostname agent_version"
        " resource_metrics pool work_status agent_stats",
        old.Goodbye: "schema_version agent_id seq sent_at hostname agent_version pool",
    }
    for struct, names in shipped.items():
        assert [f.name for f in msgspec.structs.fields(struct)] == names.split()
