"""The planner and presence / GPU health: registry fields, withheld/offered and gpu_health
events, an older agent (no presence) as offered, late replays changing nothing."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta

import msgspec

from fleetpulse.ingest import plan_batch
from fleetpulse.ingest.planner import gpu_health_summary
from fleetpulse.messages import GpuMetrics, Heartbeat, Presence
from fleetpulse.store import AgentState
from tests.fixtures.ingest import T0, heartbeat
from tests.unit.ingest.test_planner import decoded

A = uuid.UUID("00000000-0000-4000-8000-00000000000a")
B = uuid.UUID("00000000-0000-4000-8000-00000000000b")
WITHHELD = Presence(
    user_idle_s=4.0, locked=False, source="logind", offered=False, withheld_reason="user_active"
)
OFFERED = Presence(user_idle_s=900.0, locked=True, source="logind")


def beat(agent: uuid.UUID, seq: int, presence: Presence | None = None, **gpu: object) -> Heartbeat:
    hb = heartbeat(agent, seq)
    if gpu:
        metrics = hb.resource_metrics
        gpus = [msgspec.structs.replace(metrics.gpus[0], **gpu), *metrics.gpus[1:]]
        hb = msgspec.structs.replace(
            hb, resource_metrics=msgspec.structs.replace(metrics, gpus=gpus)
        )
    return msgspec.structs.replace(hb, presence=presence)


def reasons(plan: object) -> dict[uuid.UUID, list[str]]:
    found: dict[uuid.UUID, list[str]] = {}
    for event in plan.write.events:  # type: ignore[attr-defined]
        found.setdefault(event.agent_id, []).append(event.reason)
    return found


def test_presence_lands_in_the_registry_row_and_an_older_agent_is_offered() -> None:
    plan = plan_batch(decoded(beat(A, 1, WITHHELD), beat(B, 1)), {})
    rows = {r.agent_id: r for r in plan.write.registry}
    a, b = rows[A], rows[B]
    assert (a.user_idle_s, a.presence_locked, a.presence_source) == (4.0, False, "logind")
    assert (a.offered, a.withheld_reason) == (False, "user_active")
    assert (b.offered, b.withheld_reason, b.presence_source) == (True, None, None)
    # a new agent that starts withheld says so; one that starts offered only comes online
    assert reasons(plan) == {A: ["first_heartbeat", "withheld"], B: ["first_heartbeat"]}


def test_a_change_of_offer_is_an_event_and_no_change_is_none() -> None:
    state = {
        A: AgentState("online", None, T0, offered=True),
        B: AgentState("online", None, T0, offered=False),
    }
    plan = plan_batch(decoded(beat(A, 5, WITHHELD), beat(B, 5, OFFERED)), state)
    events = {e.agent_id: e for e in plan.write.events}
    assert (events[A].reason, events[A].from_status, events[A].to_status) == (
        "withheld",
        "online",
        "online",
    )
    assert events[B].reason == "offered"
    assert events[A].at == plan.write.registry[0].received_at
    quiet = plan_batch(decoded(beat(A, 6, WITHHELD)), {A: AgentState("online", None, T0, False)})
    assert quiet.write.events == []


def test_the_newest_heartbeat_of_the_batch_decides() -> None:
    state = {A: AgentState("online", None, T0, offered=True)}
    plan = plan_batch(decoded(beat(A, 7, OFFERED), beat(A, 6, WITHHELD)), state)
    assert reasons(plan) == {}
    assert plan.write.registry[0].offered is True


def test_a_late_replay_changes_no_offer_and_no_health() -> None:
    state = {A: AgentState("online", None, T0 + timedelta(seconds=60), offered=True)}
    plan = plan_batch(decoded(beat(A, 5, WITHHELD, health="degraded")), state)
    assert reasons(plan) == {}


def test_gpu_health_changes_are_events() -> None:
    sick = beat(A, 5, health="degraded", health_reasons=["xid:94"])
    plan = plan_batch(decoded(sick), {A: AgentState("online", None, T0)})
    assert reasons(plan) == {A: ["gpu_health"]}
    stored = plan.write.registry[0].gpu_health
    assert stored is not None
    summary = json.loads(stored)
    assert list(summary.values()) == ["degraded"]
    still = plan_batch(
        decoded(beat(A, 6, health="degraded", health_reasons=["xid:94", "throttle:hw_thermal"])),
        {A: AgentState("online", None, T0, gpu_health=summary)},
    )
    assert reasons(still) == {}  # the same GPUs, still degraded: no new event
    healed = plan_batch(
        decoded(beat(A, 7, health="ok")), {A: AgentState("online", None, T0, gpu_health=summary)}
    )
    assert reasons(healed) == {A: ["gpu_health"]}
    assert healed.write.registry[0].gpu_health is None


def test_gpu_health_summary_counts_errors_as_failed_and_keys_by_uuid_or_index() -> None:
    gpus = [
        GpuMetrics(index=0, uuid="GPU-a", health="ok"),
        GpuMetrics(index=1, uuid="GPU-b", health="degraded"),
        GpuMetrics(index=2, error="gpu 2: GPU is lost"),
        GpuMetrics(index=3),  # an older agent: no health at all
    ]
    assert gpu_health_summary(gpus) == {"GPU-b": "degraded", "2": "failed"}
    assert gpu_health_summary(gpus[::3]) is None
