"""The wire contract: valid messages round-trip, every invalid one is rejected with its reason."""

from __future__ import annotations

import contextlib
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings, strategies as st

from fleetpulse import messages
from fleetpulse.errors import MessageError
from fleetpulse.messages import (
    AgentStats,
    Goodbye,
    GpuMetrics,
    Heartbeat,
    ResourceMetrics,
    WorkStatus,
    available_cores,
    decode,
    encode,
    routing_key,
)

pytestmark = pytest.mark.slow(5)

AGENT = uuid.UUID("3f0c1a7e-8d4b-4c2a-9f1e-2b3c4d5e6f70")
T0 = datetime(2026, 11, 24, 4, 0, 0, 123456, tzinfo=UTC)


def design_example() -> dict[str, Any]:
    """The body printed in DESIGN.md section 2."""
    return {
        "schema_version": 1,
        "message_type": "heartbeat",
        "agent_id": str(AGENT),
        "seq": 42,
        "sampled_at": "2026-11-24T04:00:00.123456Z",
        "sent_at": "2026-11-24T04:00:00.125000Z",
        "hostname": "ws-17",
        "pool": "render",
        "agent_version": "0.1.0",
        "work_status": {"state": "idle", "running_jobs": 0},
        "resource_metrics": {
            "cpu_load_1m": 1.2,
            "cpu_load_5m": 0.9,
            "cpu_load_15m": 0.7,
            "cpu_cores": 16,
            "cpu_available_cores": 14,
            "mem_total_gb": 64.0,
            "mem_available_gb": 40.2,
            "gpu_type": "NVIDIA GeForce RTX 4090",
            "gpu_count": 1,
            "gpu_vram_total_gb": 24.0,
            "gpu_vram_available_gb": 20.5,
            "gpus": [
                {
                    "index": 0,
                    "uuid": "GPU-1",
                    "name": "NVIDIA GeForce RTX 4090",
                    "vram_total_gb": 24.0,
                    "vram_free_gb": 20.5,
                    "util_pct": 3.0,
                    "temp_c": 41.0,
                    "power_w": 31.5,
                }
            ],
            "errors": [],
        },
    }


def body(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc).encode()


def rejection(doc: dict[str, Any] | bytes) -> MessageError:
    with pytest.raises(MessageError) as info:
        decode(doc if isinstance(doc, bytes) else body(doc))
    return info.value


def test_design_example_decodes_to_typed_heartbeat() -> None:
    hb = decode(body(design_example()))
    assert isinstance(hb, Heartbeat)
    assert hb.agent_id == AGENT
    assert hb.sampled_at == T0
    assert hb.resource_metrics.gpus[0].vram_free_gb == 20.5
    assert hb.work_status == WorkStatus(state="idle", running_jobs=0)
    assert hb.agent_stats is None


def test_encode_then_decode_is_identity() -> None:
    hb = decode(body(design_example()))
    assert decode(encode(hb)) == hb


def test_unknown_fields_are_ignored_for_forward_compatibility() -> None:
    doc = design_example()
    doc["future_field"] = {"nested": [1, 2]}
    doc["resource_metrics"]["npu_count"] = 3
    doc["resource_metrics"]["gpus"][0]["fan_pct"] = 40
    assert isinstance(decode(body(doc)), Heartbeat)


def test_goodbye_decodes() -> None:
    doc = {
        "schema_version": 1,
        "message_type": "goodbye",
        "agent_id": str(AGENT),
        "seq": 43,
        "sent_at": "2026-11-24T04:00:30Z",
        "hostname": "ws-17",
        "agent_version": "0.1.0",
    }
    message = decode(body(doc))
    assert isinstance(message, Goodbye)
    assert message.pool is None


def test_agent_stats_round_trip() -> None:
    hb = decode(body(design_example()))
    stats = AgentStats(collect_ms=3.5, spool_depth=2, dropped_total=1, reconnects_total=4)
    import msgspec

    with_stats = msgspec.structs.replace(hb, agent_stats=stats)
    assert decode(encode(with_stats)).agent_stats == stats  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("mutate", "reason", "needle"),
    [
        (lambda d: d.update(schema_version=2), "schema_version", "schema_version"),
        (lambda d: d.pop("schema_version"), "schema_version", "schema_version"),
        (lambda d: d.update(message_type="hello"), "invalid", "message_type"),
        (lambda d: d.update(agent_id="not-a-uuid"), "invalid", "$.agent_id"),
        (lambda d: d.update(seq=-1), "invalid", "$.seq"),
        (lambda d: d.update(seq="42"), "invalid", "$.seq"),
        (lambda d: d.update(sampled_at="yesterday"), "invalid", "$.sampled_at"),
        (lambda d: d.update(sampled_at="2026-11-24T04:00:00"), "invalid", "$.sampled_at"),
        (lambda d: d.update(hostname=""), "invalid", "$.hostname"),
        (lambda d: d.update(pool="Render.Farm"), "invalid", "$.pool"),
        (lambda d: d["resource_metrics"].update(cpu_cores=-4), "invalid", "cpu_cores"),
        (lambda d: d["resource_metrics"].update(cpu_load_1m=1e9), "invalid", "cpu_load_1m"),
        (lambda d: d["resource_metrics"].update(cpu_cores="16"), "invalid", "cpu_cores"),
        (lambda d: d["resource_metrics"].update(cpu_available_cores=99), "invalid", "exceeds"),
        (lambda d: d["resource_metrics"].update(mem_available_gb=640.0), "invalid", "exceeds"),
        (lambda d: d["resource_metrics"].update(gpu_count=3), "invalid", "gpu_count"),
        (lambda d: d["resource_metrics"]["gpus"][0].update(vram_free_gb=99.0), "invalid", "gpu 0"),
        (lambda d: d["resource_metrics"]["gpus"][0].update(util_pct=140.0), "invalid", "util_pct"),
        (lambda d: d["resource_metrics"]["gpus"][0].update(temp_c=1000.0), "invalid", "temp_c"),
        (lambda d: d.pop("resource_metrics"), "invalid", "resource_metrics"),
        (lambda d: d["work_status"].update(state="sleeping"), "invalid", "state"),
    ],
)
def test_invalid_heartbeats_are_rejected_with_reason(mutate: Any, reason: str, needle: str) -> None:
    doc = design_example()
    mutate(doc)
    error = rejection(doc)
    assert error.reason == reason
    assert needle in str(error)


@pytest.mark.parametrize(
    ("raw", "reason", "needle"),
    [
        (b"", "malformed", "malformed JSON"),
        (b"{", "malformed", "malformed JSON"),
        (b"not json", "malformed", "malformed JSON"),
        (b"\xff\xfe\x00", "malformed", "malformed JSON"),
        (b"[1, 2]", "invalid", "Expected `object`, got `array`"),
        (b"null", "invalid", "Expected `object`, got `null`"),
    ],
)
def test_malformed_bodies_are_rejected(raw: bytes, reason: str, needle: str) -> None:
    error = rejection(raw)
    assert error.reason == reason
    assert needle in str(error)
    assert error.detail == str(error)


def test_a_body_nested_too_deep_to_parse_is_malformed_not_a_crash() -> None:
    doc = b'{"future": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    assert len(doc) < messages.MAX_BODY_BYTES
    error = rejection(doc)
    assert error.reason == "malformed"
    assert "undecodable body" in str(error)
    assert "recursion" in str(error)


def minimal_cpu_only() -> dict[str, Any]:
    """The least an agent may send: required fields only, no GPU, no pool, no stats."""
    return {
        "schema_version": 1,
        "message_type": "heartbeat",
        "agent_id": str(AGENT),
        "seq": 0,
        "sampled_at": "2026-11-24T04:00:00Z",
        "sent_at": "2026-11-24T04:00:00Z",
        "hostname": "h",
        "agent_version": "1",
        "resource_metrics": {
            "cpu_load_1m": 0.0,
            "cpu_load_5m": 0.0,
            "cpu_load_15m": 0.0,
            "cpu_cores": 2,
            "cpu_available_cores": 2,
            "mem_total_gb": 4.0,
            "mem_available_gb": 1.0,
        },
    }


def test_a_minimal_cpu_only_heartbeat_decodes_with_the_documented_defaults() -> None:
    hb = decode(body(minimal_cpu_only()))
    assert isinstance(hb, Heartbeat)
    metrics = hb.resource_metrics
    assert (metrics.gpu_type, metrics.gpu_count, metrics.gpus) == ("none", 0, [])
    assert metrics.errors == []
    assert (metrics.gpu_vram_total_gb, metrics.gpu_vram_available_gb) == (0.0, 0.0)
    assert hb.pool is None
    assert hb.agent_stats is None
    assert hb.work_status == WorkStatus(state="idle", running_jobs=0)
    assert decode(encode(hb)) == hb


# Free may exceed total by the driver's rounding: up to 1 % (inclusive), plus float noise.
VRAM_TOLERANCE = [
    (24.0, 24.0, True),
    (24.0, 24.24, True),
    (0.0, 1e-9, True),
    (24.0, 24.25, False),
    (100.0, 101.5, False),
    (0.0, 0.001, False),
    (0.0, 0.5, False),
]


@pytest.mark.parametrize(("total", "free", "accepted"), VRAM_TOLERANCE)
def test_free_vram_of_one_gpu_never_exceeds_its_total_beyond_rounding(
    total: float, free: float, accepted: bool
) -> None:
    doc = design_example()
    doc["resource_metrics"]["gpus"][0].update(vram_total_gb=total, vram_free_gb=free)
    doc["resource_metrics"].update(gpu_vram_total_gb=24.0, gpu_vram_available_gb=0.0)
    if accepted:
        assert decode(body(doc)).resource_metrics.gpus[0].vram_free_gb == free  # type: ignore[union-attr]
    else:
        error = rejection(doc)
        assert error.reason == "invalid"
        assert f"gpu 0: vram_free_gb {free} exceeds vram_total_gb {total}" in str(error)


@pytest.mark.parametrize(("total", "free", "accepted"), VRAM_TOLERANCE)
def test_free_vram_of_the_host_never_exceeds_its_total_beyond_rounding(
    total: float, free: float, accepted: bool
) -> None:
    doc = design_example()
    doc["resource_metrics"].update(gpu_vram_total_gb=total, gpu_vram_available_gb=free)
    if accepted:
        hb = decode(body(doc))
        assert hb.resource_metrics.gpu_vram_available_gb == free  # type: ignore[union-attr]
    else:
        error = rejection(doc)
        assert error.reason == "invalid"
        assert f"gpu_vram_available_gb {free} exceeds gpu_vram_total_gb {total}" in str(error)


@pytest.mark.parametrize(("total", "free", "accepted"), VRAM_TOLERANCE)
def test_available_memory_never_exceeds_the_total_beyond_rounding(
    total: float, free: float, accepted: bool
) -> None:
    doc = minimal_cpu_only()
    doc["resource_metrics"].update(mem_total_gb=total, mem_available_gb=free)
    if accepted:
        assert decode(body(doc)).resource_metrics.mem_available_gb == free  # type: ignore[union-attr]
    else:
        error = rejection(doc)
        assert error.reason == "invalid"
        assert f"mem_available_gb {free} exceeds mem_total_gb {total}" in str(error)


@pytest.mark.parametrize(("cores", "available", "accepted"), [(8, 8, True), (8, 9, False)])
def test_available_cores_never_exceed_the_cores(cores: int, available: int, accepted: bool) -> None:
    doc = minimal_cpu_only()
    doc["resource_metrics"].update(cpu_cores=cores, cpu_available_cores=available)
    if accepted:
        assert decode(body(doc)).resource_metrics.cpu_available_cores == available  # type: ignore[union-attr]
    else:
        assert "cpu_available_cores 9 exceeds cpu_cores 8" in str(rejection(doc))


def test_gpu_count_may_be_below_the_gpus_listed_never_above() -> None:
    doc = design_example()
    doc["resource_metrics"].update(gpu_count=0)  # the one listed GPU failed: counts for nothing
    assert decode(body(doc)).resource_metrics.gpu_count == 0  # type: ignore[union-attr]
    doc["resource_metrics"].update(gpu_count=2)
    assert "gpu_count 2 exceeds the 1 gpus listed" in str(rejection(doc))


def _set(path: str, value: object) -> Any:
    def apply(doc: dict[str, Any]) -> None:
        *parents, leaf = path.split(".")
        target: Any = doc
        for part in parents:
            target = target[int(part)] if part.isdigit() else target[part]
        target[leaf] = value

    return apply


# Each bound of the contract: the last value inside is accepted, the first outside is not.
BOUNDS = [
    ("seq", 2**53, 2**53 + 1),
    ("hostname", "h" * 255, "h" * 256),
    ("agent_version", "v" * 64, "v" * 65),
    ("pool", "p" * 63, "p" * 64),
    ("resource_metrics.cpu_cores", 65_536, 65_537),
    ("resource_metrics.cpu_load_1m", 1e6, 1e6 + 1),
    ("resource_metrics.mem_total_gb", 1e7, 1e7 + 1),
    ("resource_metrics.gpu_type", "t" * 255, "t" * 256),
    ("resource_metrics.errors", ["e" * 1024], ["e" * 1025]),
    ("resource_metrics.errors", ["e"] * 64, ["e"] * 65),
    ("resource_metrics.gpus.0.index", 255, 256),
    ("resource_metrics.gpus.0.util_pct", 100.0, 100.5),
    ("resource_metrics.gpus.0.temp_c", 250.0, 250.5),
    ("resource_metrics.gpus.0.temp_c", -100.0, -100.5),
    ("resource_metrics.gpus.0.power_w", 100_000.0, 100_000.5),
    ("resource_metrics.gpus.0.error", "x" * 1024, "x" * 1025),
    ("work_status.running_jobs", 1_000_000, 1_000_001),
]


@pytest.mark.parametrize(("path", "inside", "outside"), BOUNDS)
def test_every_bound_is_inclusive_and_exact(path: str, inside: object, outside: object) -> None:
    doc = design_example()
    _set(path, inside)(doc)
    assert isinstance(decode(body(doc)), Heartbeat)
    _set(path, outside)(doc)
    error = rejection(doc)
    assert error.reason == "invalid"
    assert path.split(".")[-1] in str(error)


def test_agent_stats_bounds_are_exact() -> None:
    doc = design_example()
    doc["agent_stats"] = {"collect_ms": 1e9, "spool_depth": 2**53}
    stats = decode(body(doc)).agent_stats  # type: ignore[union-attr]
    assert stats == AgentStats(collect_ms=1e9, spool_depth=2**53)
    doc["agent_stats"] = {"collect_ms": 1e9 + 1}
    assert "collect_ms" in str(rejection(doc))


def test_oversize_body_is_rejected_before_parsing() -> None:
    doc = design_example()
    doc["padding"] = "x" * messages.MAX_BODY_BYTES
    error = rejection(doc)
    assert error.reason == "oversize"
    assert "65536" in str(error)


def test_body_at_the_limit_is_accepted() -> None:
    doc = design_example()
    raw = body(doc)
    doc["padding"] = "x" * (messages.MAX_BODY_BYTES - len(raw) - len(', "padding": ""'))
    padded = body(doc)
    assert len(padded) == messages.MAX_BODY_BYTES
    assert isinstance(decode(padded), Heartbeat)


def test_routing_key_names_pool_and_agent() -> None:
    assert routing_key("render", AGENT) == f"heartbeat.render.{AGENT}"
    assert routing_key(None, AGENT) == f"heartbeat.default.{AGENT}"


@pytest.mark.parametrize(
    ("cores", "load", "expected"),
    [(16, 1.2, 14), (16, 0.0, 16), (4, 7.5, 0), (8, 7.99, 0), (8, float("nan"), 0), (0, 0.0, 0)],
)
def test_available_cores_is_floor_of_cores_minus_load(
    cores: int, load: float, expected: int
) -> None:
    assert available_cores(cores, load) == expected


# -- properties ----------------------------------------------------------------

finite = st.floats(min_value=0, max_value=1e5, allow_nan=False, allow_infinity=False)
timestamps = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
)
text = st.text(min_size=1, max_size=40)


@st.composite
def gpus(draw: st.DrawFn, index: int) -> GpuMetrics:
    total = draw(st.floats(min_value=0, max_value=200, allow_nan=False))
    return GpuMetrics(
        index=index,
        uuid=draw(st.text(max_size=40)),
        name=draw(st.text(max_size=40)),
        vram_total_gb=total,
        vram_free_gb=draw(st.floats(min_value=0, max_value=total, allow_nan=False)),
        util_pct=draw(st.none() | st.floats(min_value=0, max_value=100, allow_nan=False)),
        temp_c=draw(st.none() | st.floats(min_value=-100, max_value=250, allow_nan=False)),
        power_w=draw(st.none() | st.floats(min_value=0, max_value=2000, allow_nan=False)),
        error=draw(st.none() | st.text(max_size=50)),
    )


@st.composite
def heartbeats(draw: st.DrawFn) -> Heartbeat:
    cores = draw(st.integers(min_value=0, max_value=1024))
    load = draw(finite)
    mem_total = draw(st.floats(min_value=0, max_value=4096, allow_nan=False))
    devices = [draw(gpus(i)) for i in range(draw(st.integers(min_value=0, max_value=4)))]
    best = max((g.vram_free_gb for g in devices), default=0.0)
    sampled = draw(timestamps)
    return Heartbeat(
        schema_version=1,
        agent_id=draw(st.uuids()),
        seq=draw(st.integers(min_value=0, max_value=2**53)),
        sampled_at=sampled,
        sent_at=sampled + timedelta(milliseconds=draw(st.integers(0, 10_000))),
        hostname=draw(text),
        agent_version=draw(text),
        pool=draw(st.none() | st.from_regex(r"^[a-z0-9][a-z0-9_-]{0,20}$", fullmatch=True)),
        work_status=WorkStatus(
            state=draw(st.sampled_from(["idle", "busy", "draining", "unknown"])),
            running_jobs=draw(st.integers(min_value=0, max_value=100)),
        ),
        resource_metrics=ResourceMetrics(
            cpu_load_1m=load,
            cpu_load_5m=draw(finite),
            cpu_load_15m=draw(finite),
            cpu_cores=cores,
            cpu_available_cores=available_cores(cores, load),
            mem_total_gb=mem_total,
            mem_available_gb=draw(st.floats(min_value=0, max_value=mem_total, allow_nan=False)),
            gpu_type=devices[0].name or "unknown" if devices else "none",
            gpu_count=len(devices),
            gpu_vram_total_gb=sum(g.vram_total_gb for g in devices),
            gpu_vram_available_gb=best,
            gpus=devices,
            errors=draw(st.lists(st.text(max_size=60), max_size=3)),
        ),
        agent_stats=draw(
            st.none()
            | st.builds(
                AgentStats,
                collect_ms=finite,
                spool_depth=st.integers(0, 10**6),
                dropped_total=st.integers(0, 10**6),
            )
        ),
    )


@settings(max_examples=200, deadline=None)
@given(heartbeats())
def test_any_encoded_heartbeat_decodes_to_itself(hb: Heartbeat) -> None:
    assert decode(encode(hb)) == hb


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2048))
def test_random_bytes_raise_only_the_contract_error(raw: bytes) -> None:
    reason = None
    try:
        decode(raw)
    except MessageError as exc:
        reason = exc.reason
    assert reason in {None, "malformed", "invalid", "schema_version", "oversize"}


@settings(max_examples=150, deadline=None)
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
        lambda children: st.lists(children) | st.dictionaries(st.text(), children),
        max_leaves=30,
    )
)
def test_random_json_raises_only_the_contract_error(value: object) -> None:
    with contextlib.suppress(MessageError):
        decode(json.dumps(value).encode())


def test_incarnation_is_optional_both_ways() -> None:
    """Wire contract additions are optional: an older agent's body (no incarnation) decodes,
    and an older ingest, whose structs ignore unknown fields, reads a newer agent's body."""
    run = uuid.uuid4()
    body = json.dumps(
        {
            "schema_version": 1,
            "message_type": "goodbye",
            "agent_id": str(uuid.uuid4()),
            "seq": 3,
            "sent_at": "2026-11-24T04:00:00Z",
            "hostname": "ws",
            "agent_version": "0.1.0",
        }
    ).encode()
    old = decode(body)
    assert old.incarnation is None
    new = decode(body.replace(b'"seq"', f'"incarnation": "{run}", "seq"'.encode()))
    assert new.incarnation == run

    class OlderGoodbye(msgspec.Struct, frozen=True, kw_only=True, tag="goodbye",
                       tag_field="message_type"):  # fmt: skip
        schema_version: int
        agent_id: uuid.UUID
        seq: int

    read = msgspec.json.decode(messages.encode(new), type=OlderGoodbye)
    assert (read.agent_id, read.seq) == (new.agent_id, 3)
