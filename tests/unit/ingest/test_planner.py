"""The pure core: decoding verdicts, identity binding, pool choice, newest-wins, transitions."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import msgspec

from fleetpulse.ingest import Decoded, Delivery, decode_batch, plan_batch
from fleetpulse.ingest.planner import NO_INCARNATION, pg_text_array
from fleetpulse.messages import (
    AgentStats,
    GpuMetrics,
    Heartbeat,
    Message,
    ResourceMetrics,
    WorkStatus,
    encode,
    routing_key,
)
from fleetpulse.store import AgentState, GoodbyeRow, GpuRow, RegistryRow, SampleRow
from tests.fixtures.ingest import PROFILES, T0, goodbye, gpu, heartbeat, resources

A = uuid.UUID("00000000-0000-4000-8000-00000000000a")
B = uuid.UUID("00000000-0000-4000-8000-00000000000b")


def delivery(
    tag: int,
    body: bytes = b"",
    user: str | None = None,
    offset_s: float = 0,
    agent: uuid.UUID | str = "",
) -> Delivery:
    key = routing_key(None, agent) if agent else ""
    return Delivery(tag, body, user, T0 + timedelta(seconds=100 + offset_s), key)


def item(tag: int, message: Message, user: str | None = None, key: str | None = None) -> Decoded:
    """A decoded delivery on the message's own routing key (or ``key``)."""
    got = delivery(tag, encode(message), user, offset_s=tag, agent=message.agent_id)
    if key is not None:
        got.routing_key = key
    return Decoded(got, message)


def decoded(*items, user: str | None = None) -> list[Decoded]:
    return [item(n, message, user) for n, message in enumerate(items, start=1)]


def test_decode_batch_splits_valid_from_invalid() -> None:
    good = delivery(1, encode(heartbeat(A, 1)))
    bad = delivery(2, b"{nope")
    ok, rejected = decode_batch([good, bad])
    assert [d.delivery.tag for d in ok] == [1]
    assert [(r.delivery.tag, r.reason, r.result) for r in rejected] == [(2, "malformed", "invalid")]


def test_first_sight_binds_nothing() -> None:
    """Seeing an agent binds no identity to it: a squatter's first heartbeat cannot lock the
    real agent out (credentials are bound when they are created, by the broker)."""
    items = [
        item(1, heartbeat(A, 1), "mallory"),
        item(2, heartbeat(A, 2), "alice"),
        item(3, heartbeat(A, 3), None),
    ]
    plan = plan_batch(items, {})
    assert [s.seq for s in plan.write.samples] == [1, 2, 3]
    assert plan.rejected == []
    assert plan.write.registry[0].principal is None


def test_routing_key_must_name_the_body_agent() -> None:
    """The broker confines a per-agent user to its routing keys; the body must agree."""
    items = [
        item(1, heartbeat(A, 1), "mallory", key=routing_key(None, B)),
        item(2, goodbye(A), "mallory", key=routing_key("render", B)),
        item(3, heartbeat(A, 3), "mallory", key="heartbeat.default"),
        item(4, heartbeat(A, 4), "alice"),
    ]
    plan = plan_batch(items, {})
    assert [s.seq for s in plan.write.samples] == [4]
    assert [(r.delivery.tag, r.reason, r.result) for r in plan.rejected] == [
        (1, "unauthorised", "unauthorised"),
        (2, "unauthorised", "unauthorised"),
        (3, "unauthorised", "unauthorised"),
    ]
    assert f"names agent '{B}'" in plan.rejected[0].detail


def test_bound_principal_from_registry_is_enforced() -> None:
    state = {A: AgentState("online", "alice", T0)}
    items = [
        item(1, heartbeat(A, 1), "bob"),
        item(2, heartbeat(A, 2), "alice"),
    ]
    plan = plan_batch(items, state)
    assert [s.seq for s in plan.write.samples] == [2]
    assert "bound to broker user 'alice'" in plan.rejected[0].detail


def test_unbound_agent_accepts_anyone_and_binds_nobody() -> None:
    state = {A: AgentState("online", None, T0)}
    items = [
        item(1, heartbeat(A, 1), None),
        item(2, heartbeat(A, 2), "carol"),
        item(3, heartbeat(A, 3), "dave"),
    ]
    plan = plan_batch(items, state)
    assert [s.seq for s in plan.write.samples] == [1, 2, 3]
    assert plan.write.registry[0].principal is None
    assert plan.rejected == []


def test_require_user_id_rejects_anonymous_messages() -> None:
    plan = plan_batch([item(1, heartbeat(A, 1), None)], {}, require_user_id=True)
    assert plan.write.samples == []
    assert plan.rejected[0].result == "unauthorised"
    assert "require_user_id" in plan.rejected[0].detail


def test_goodbye_of_another_identity_is_refused() -> None:
    state = {A: AgentState("online", "alice", T0)}
    plan = plan_batch([item(1, goodbye(A), "eve")], state)
    assert plan.write.goodbyes == []
    assert plan.rejected[0].reason == "unauthorised"


def test_registry_row_is_the_newest_sample_of_the_batch() -> None:
    late = heartbeat(A, 1, sampled_at=T0)
    new = heartbeat(A, 3, sampled_at=T0 + timedelta(seconds=30))
    mid = heartbeat(A, 2, sampled_at=T0 + timedelta(seconds=15))
    plan = plan_batch(decoded(new, late, mid), {})
    assert len(plan.write.samples) == 3
    (row,) = plan.write.registry
    assert row.seq == 3
    assert row.sampled_at == T0 + timedelta(seconds=30)
    assert row.first_received_at < row.received_at


def test_pool_declared_else_gpu_else_cpu() -> None:
    items = decoded(
        heartbeat(A, 1, pool="render", metrics=PROFILES["cpu"]),
        heartbeat(B, 1, metrics=PROFILES["high"]),
    )
    c = uuid.uuid4()
    items += decoded(heartbeat(c, 1, metrics=PROFILES["cpu"]))
    plan = plan_batch(items, {}, gpu_pool="gpux", cpu_pool="cpux")
    assert {r.agent_id: r.pool_name for r in plan.write.registry} == {
        A: "render",
        B: "gpux",
        c: "cpux",
    }


def test_transitions_first_heartbeat_and_back_online_only() -> None:
    state = {A: AgentState("offline", None, T0), B: AgentState("online", None, T0)}
    c = uuid.uuid4()
    plan = plan_batch(decoded(heartbeat(A, 5), heartbeat(B, 5), heartbeat(c, 1)), state)
    reasons = {e.agent_id: (e.from_status, e.to_status, e.reason) for e in plan.write.events}
    assert reasons == {
        A: ("offline", "online", "heartbeat"),
        c: (None, "online", "first_heartbeat"),
    }


def test_gpu_rows_include_failed_gpus() -> None:
    plan = plan_batch(decoded(heartbeat(A, 1)), {})
    assert [(g.gpu_index, g.vram_total_gb) for g in plan.write.gpus] == [(0, 8.0)]
    assert plan.write.registry[0].resource_metrics.startswith("{")


def test_pg_text_array_quotes_and_escapes() -> None:
    assert pg_text_array([]) == "{}"
    assert pg_text_array(['a "b"', "c\\d", "e,f"]) == '{"a \\"b\\"","c\\\\d","e,f"}'


# -- every reported value lands in its row -------------------------------------------------

WS = uuid.UUID("00000000-0000-4000-8000-0000000000c5")


def workstation(seq: int, *, at_s: float, hostname: str, version: str = "0.1.0") -> Heartbeat:
    """A heartbeat whose every value differs from every other, so a row that takes one field
    from the wrong place cannot pass."""
    sampled = T0 + timedelta(seconds=at_s)
    return Heartbeat(
        schema_version=1,
        agent_id=WS,
        seq=seq,
        sampled_at=sampled,
        sent_at=sampled + timedelta(seconds=1),
        hostname=hostname,
        agent_version=version,
        work_status=WorkStatus(state="busy", running_jobs=3),
        resource_metrics=ResourceMetrics(
            cpu_load_1m=2.5,
            cpu_load_5m=1.75,
            cpu_load_15m=1.25,
            cpu_cores=12,
            cpu_available_cores=9,
            mem_total_gb=48.0,
            mem_available_gb=30.5,
            gpu_type="RTX A4000",
            gpu_count=1,
            gpu_vram_total_gb=16.0,
            gpu_vram_available_gb=11.5,
            gpus=[
                gpu(
                    1,
                    16.0,
                    11.5,
                    uuid="GPU-aaaa",
                    name="RTX A4000",
                    util_pct=42.0,
                    temp_c=61.0,
                    power_w=88.5,
                ),
                GpuMetrics(index=0, uuid="GPU-bbbb", name="RTX A2000", error="gpu 0: GPU is lost"),
            ],
            errors=["gpu 0: GPU is lost", 'say "hi"'],
        ),
        agent_stats=AgentStats(collect_ms=4.5, spool_depth=7, dropped_total=2),
    )


# What workstation() reports that its sample row and its registry row both hold.
WORKSTATION_ROW: dict[str, Any] = {
    "work_state": "busy",
    "cpu_load_1m": 2.5,
    "cpu_cores": 12,
    "cpu_available_cores": 9,
    "mem_total_gb": 48.0,
    "mem_available_gb": 30.5,
    "gpu_type": "RTX A4000",
    "gpu_count": 1,
    "gpu_vram_total_gb": 16.0,
    "gpu_vram_available_gb": 11.5,
}


def test_a_sample_row_carries_every_value_the_agent_reported() -> None:
    message = workstation(11, at_s=5, hostname="ws-9")
    received = T0 + timedelta(seconds=7)
    plan = plan_batch(
        [Decoded(Delivery(1, b"", "ws-9", received, routing_key(None, WS)), message)], {}
    )
    assert plan.write.samples == [
        SampleRow(
            agent_id=WS,
            sampled_at=T0 + timedelta(seconds=5),
            received_at=received,
            seq=11,
            hostname="ws-9",
            pool_name="gpu",
            running_jobs=3,
            cpu_load_5m=1.75,
            cpu_load_15m=1.25,
            **WORKSTATION_ROW,
            errors='{"gpu 0: GPU is lost","say \\"hi\\""}',
            clock_skewed=False,
            incarnation=NO_INCARNATION,  # an agent that sends none
        )
    ]


def test_each_gpu_gets_a_row_with_its_own_values_failed_ones_included() -> None:
    plan = plan_batch(decoded(workstation(11, at_s=5, hostname="ws-9")), {})
    at = T0 + timedelta(seconds=5)
    assert plan.write.gpus == [
        GpuRow(
            WS, at, 1, "GPU-aaaa", "RTX A4000", 16.0, 11.5, 42.0, 61.0, 88.5, None, NO_INCARNATION
        ),
        GpuRow(
            WS,
            at,
            0,
            "GPU-bbbb",
            "RTX A2000",
            0.0,
            0.0,
            None,
            None,
            None,
            "gpu 0: GPU is lost",
            NO_INCARNATION,
        ),
    ]


def test_the_registry_row_carries_the_newest_heartbeat_and_the_agents_own_stats() -> None:
    items = [
        Decoded(
            Delivery(1, b"", "ws", T0 + timedelta(seconds=9), routing_key(None, WS)),
            workstation(2, at_s=6, hostname="new"),
        ),
        Decoded(
            Delivery(2, b"", "ws", T0 + timedelta(seconds=8), routing_key(None, WS)),
            workstation(1, at_s=5, hostname="old"),
        ),
    ]
    (row,) = plan_batch(items, {}).write.registry
    newest = items[0].message
    assert isinstance(newest, Heartbeat)
    assert row == RegistryRow(
        agent_id=WS,
        hostname="new",
        pool_name="gpu",
        first_received_at=T0 + timedelta(seconds=8),
        received_at=T0 + timedelta(seconds=9),
        sampled_at=T0 + timedelta(seconds=6),
        seq=2,
        agent_version="0.1.0",
        principal=None,  # seeing an agent binds no identity to it
        **WORKSTATION_ROW,
        resource_metrics=row.resource_metrics,
        agent_stats=row.agent_stats,
        # an agent that does not report presence: offered, nothing known; its GPU with an
        # error is a failed one
        user_idle_s=None,
        presence_locked=None,
        presence_source=None,
        offered=True,
        withheld_reason=None,
        gpu_health='{"GPU-bbbb":"failed"}',
        incarnation=None,
        state_received_at=T0 + timedelta(seconds=9),
        clock_offset_s=-2.0,  # sent_at 1 s after sampled_at 6 s, received at 9 s
        other_incarnation=None,
        other_seq=None,
        other_seen_at=None,
        identity_clash_since=None,
    )
    assert msgspec.json.decode(row.resource_metrics, type=ResourceMetrics) == (
        newest.resource_metrics
    )
    assert row.agent_stats is not None
    assert msgspec.json.decode(row.agent_stats) == {
        "collect_ms": 4.5,
        "spool_depth": 7,
        "dropped_total": 2,
        "reconnects_total": 0,
        "gpu_probe_failures_total": 0,
    }


def test_an_agent_that_sends_no_stats_has_none_in_its_registry_row() -> None:
    (row,) = plan_batch(decoded(heartbeat(A, 1)), {}).write.registry
    assert row.agent_stats is None


def test_in_a_batch_of_several_agents_each_registry_row_holds_its_own_newest_heartbeat() -> None:
    a_old = heartbeat(A, 1, hostname="a", sampled_at=T0, metrics=PROFILES["cpu"])
    b_new = heartbeat(B, 8, hostname="b", sampled_at=T0 + timedelta(seconds=20), state="busy")
    a_new = heartbeat(A, 2, hostname="a2", sampled_at=T0 + timedelta(seconds=10), pool="render")
    b_old = heartbeat(B, 7, hostname="b-old", sampled_at=T0 + timedelta(seconds=5))
    items = [
        Decoded(delivery(1, user="alice", offset_s=4, agent=B), b_new),
        Decoded(delivery(2, user="bob", offset_s=1, agent=A), a_old),
        Decoded(delivery(3, user="alice", offset_s=3, agent=B), b_old),
        Decoded(delivery(4, user="bob", offset_s=2, agent=A), a_new),
    ]
    plan = plan_batch(items, {})
    rows = {r.agent_id: r for r in plan.write.registry}
    assert [r.agent_id for r in plan.write.registry] == sorted([A, B])
    at = T0 + timedelta(seconds=100)
    a, b = rows[A], rows[B]
    assert (a.seq, a.hostname, a.pool_name, a.principal, a.cpu_cores) == (
        2,
        "a2",
        "render",
        None,
        16,
    )
    assert (a.first_received_at, a.received_at) == (
        at + timedelta(seconds=1),
        at + timedelta(seconds=2),
    )
    assert (b.seq, b.hostname, b.work_state, b.principal, b.gpu_count) == (
        8,
        "b",
        "busy",
        None,
        1,
    )
    assert (b.first_received_at, b.received_at) == (
        at + timedelta(seconds=3),
        at + timedelta(seconds=4),
    )
    assert {e.agent_id: e.at for e in plan.write.events} == {
        A: at + timedelta(seconds=1),
        B: at + timedelta(seconds=3),
    }
    assert [s.seq for s in plan.write.samples] == [8, 1, 7, 2]
    assert plan.heartbeats == items


def test_on_a_tie_of_sampled_at_the_first_delivered_heartbeat_stays() -> None:
    first = heartbeat(A, 5, hostname="first", sampled_at=T0)
    again = heartbeat(A, 6, hostname="again", sampled_at=T0)
    (row,) = plan_batch(decoded(first, again), {}).write.registry
    assert (row.seq, row.hostname) == (5, "first")


def test_a_workstation_whose_gpus_all_failed_stays_in_the_gpu_pool() -> None:
    failed = resources(gpus=[gpu(0, 0.0, 0.0, error="gpu 0: GPU is lost")])
    assert failed.gpu_count == 0
    plan = plan_batch(decoded(heartbeat(A, 1, metrics=failed)), {})
    assert plan.write.registry[0].pool_name == "gpu"
    assert plan.write.samples[0].pool_name == "gpu"
    assert plan.write.registry[0].gpu_count == 0


def test_undeclared_pools_default_to_gpu_and_cpu() -> None:
    plan = plan_batch(decoded(heartbeat(A, 1), heartbeat(B, 1, metrics=PROFILES["cpu"])), {})
    assert {r.agent_id: r.pool_name for r in plan.write.registry} == {A: "gpu", B: "cpu"}


# -- goodbyes ---------------------------------------------------------------------------


def test_a_goodbye_becomes_a_goodbye_row_and_nothing_else() -> None:
    bye = goodbye(A, sent_at=T0 + timedelta(seconds=50))
    item = Decoded(delivery(1, user="alice", offset_s=2, agent=A), bye)
    plan = plan_batch([item], {A: AgentState("online", "alice", T0)})
    assert plan.write.goodbyes == [
        GoodbyeRow(
            agent_id=A,
            sent_at=T0 + timedelta(seconds=50),
            received_at=item.delivery.received_at,
            incarnation=None,
            seq=bye.seq,
        )
    ]
    assert plan.goodbyes == 1
    assert (plan.write.samples, plan.write.registry, plan.write.events) == ([], [], [])
    assert plan.heartbeats == []
    assert plan.rejected == []


def test_goodbyes_and_heartbeats_of_one_batch_are_counted_apart() -> None:
    items = decoded(heartbeat(A, 1), goodbye(B), goodbye(A), heartbeat(B, 2))
    plan = plan_batch(items, {})
    assert plan.goodbyes == 2
    assert [g.agent_id for g in plan.write.goodbyes] == [B, A]
    assert [d.message.seq for d in plan.heartbeats] == [1, 2]
    assert len(plan.write.registry) == 2


# -- rejections explain themselves ------------------------------------------------------


def test_a_rejected_body_keeps_the_decoders_reason_and_detail() -> None:
    _, (rejected,) = decode_batch([delivery(1, b"{nope")])
    assert rejected.reason == "malformed"
    assert rejected.detail.startswith("malformed JSON:")


def test_require_user_id_says_which_setting_refused() -> None:
    plan = plan_batch([item(1, heartbeat(A, 1), None)], {}, require_user_id=True)
    assert plan.rejected[0].detail == (
        "message carries no broker user_id and ingest.require_user_id is set"
    )


# -- what the body claims to be ---------------------------------------------------------


def _claimed(content_type: str | None, encoding: str | None = None, tag: int = 1) -> Delivery:
    return Delivery(
        tag,
        encode(heartbeat(A, tag)),
        None,
        T0,
        content_type=content_type,
        content_encoding=encoding,
    )


def test_a_body_said_to_be_json_or_said_nothing_about_is_read() -> None:
    plain = [None, "application/json", "Application/JSON; charset=utf-8", " application/json "]
    deliveries = [_claimed(kind, tag=n) for n, kind in enumerate(plain, start=1)]
    deliveries.append(_claimed("application/json", " Identity ", tag=5))
    ok, rejected = decode_batch(deliveries)
    assert [d.delivery.tag for d in ok] == [1, 2, 3, 4, 5]
    assert rejected == []


def test_a_body_said_to_be_something_else_is_refused_with_the_reason_and_the_rest_go_on() -> None:
    deliveries = [
        _claimed("text/plain", tag=1),
        _claimed(None, "gzip", tag=2),
        _claimed("application/json", tag=3),
        _claimed("x" * 300, tag=4),
    ]
    ok, rejected = decode_batch(deliveries)
    assert [d.delivery.tag for d in ok] == [3]
    assert [(r.delivery.tag, r.reason, r.result) for r in rejected] == [
        (1, "content_type", "invalid"),
        (2, "content_encoding", "invalid"),
        (4, "content_type", "invalid"),
    ]
    assert rejected[0].detail == "content_type 'text/plain' is not application/json"
    assert rejected[1].detail == (
        "content_encoding 'gzip' is not supported (bodies are plain JSON)"
    )
    assert rejected[2].detail == f"content_type {'x' * 100!r} is not application/json"
