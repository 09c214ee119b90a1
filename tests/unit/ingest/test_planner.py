"""The pure core: decoding verdicts, identity binding, pool choice, newest-wins, transitions."""

from __future__ import annotations

import uuid
from datetime import timedelta

from fleetpulse.ingest import Decoded, Delivery, decode_batch, plan_batch
from fleetpulse.ingest.planner import pg_text_array
from fleetpulse.messages import encode
from fleetpulse.store import AgentState
from tests.fixtures.ingest import PROFILES, T0, goodbye, heartbeat

A = uuid.UUID("00000000-0000-4000-8000-00000000000a")
B = uuid.UUID("00000000-0000-4000-8000-00000000000b")


def delivery(tag: int, body: bytes = b"", user: str | None = None, offset_s: float = 0) -> Delivery:
    return Delivery(tag, body, user, T0 + timedelta(seconds=100 + offset_s))


def decoded(*items, user: str | None = None) -> list[Decoded]:
    out = []
    for n, message in enumerate(items, start=1):
        out.append(Decoded(delivery(n, encode(message), user, offset_s=n), message))
    return out


def test_decode_batch_splits_valid_from_invalid() -> None:
    good = delivery(1, encode(heartbeat(A, 1)))
    bad = delivery(2, b"{nope")
    ok, rejected = decode_batch([good, bad])
    assert [d.delivery.tag for d in ok] == [1]
    assert [(r.delivery.tag, r.reason, r.result) for r in rejected] == [(2, "malformed", "invalid")]


def test_new_agent_binds_first_user_id_and_rejects_another() -> None:
    items = [
        Decoded(delivery(1, user="alice"), heartbeat(A, 1)),
        Decoded(delivery(2, user="mallory"), heartbeat(A, 2)),
        Decoded(delivery(3, user=None), heartbeat(A, 3)),
    ]
    plan = plan_batch(items, {})
    assert [s.seq for s in plan.write.samples] == [1]
    assert [(r.delivery.tag, r.reason) for r in plan.rejected] == [
        (2, "unauthorised"),
        (3, "unauthorised"),
    ]
    assert plan.write.registry[0].principal == "alice"


def test_bound_principal_from_registry_is_enforced() -> None:
    state = {A: AgentState("online", "alice", T0)}
    items = [
        Decoded(delivery(1, user="bob"), heartbeat(A, 1)),
        Decoded(delivery(2, user="alice"), heartbeat(A, 2)),
    ]
    plan = plan_batch(items, state)
    assert [s.seq for s in plan.write.samples] == [2]
    assert "bound to broker user 'alice'" in plan.rejected[0].detail


def test_unbound_agent_accepts_anyone_and_binds_the_first_identity_seen() -> None:
    state = {A: AgentState("online", None, T0)}
    items = [
        Decoded(delivery(1, user=None), heartbeat(A, 1)),
        Decoded(delivery(2, user="carol"), heartbeat(A, 2)),
        Decoded(delivery(3, user="dave"), heartbeat(A, 3)),
    ]
    plan = plan_batch(items, state)
    assert [s.seq for s in plan.write.samples] == [1, 2]
    assert plan.write.registry[0].principal == "carol"
    assert len(plan.rejected) == 1


def test_require_user_id_rejects_anonymous_messages() -> None:
    plan = plan_batch([Decoded(delivery(1, user=None), heartbeat(A, 1))], {}, require_user_id=True)
    assert plan.write.samples == []
    assert plan.rejected[0].result == "unauthorised"
    assert "require_user_id" in plan.rejected[0].detail


def test_goodbye_of_another_identity_is_refused() -> None:
    state = {A: AgentState("online", "alice", T0)}
    plan = plan_batch([Decoded(delivery(1, user="eve"), goodbye(A))], state)
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
