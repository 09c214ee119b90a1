"""Capacity answers in claimable figures, checked against a brute-force reference."""

from __future__ import annotations

import random
import uuid
from datetime import timedelta

import pytest

from fleetpulse.store import CapacityFilter, Holdings, RegistryIndex
from fleetpulse.store.allotment import ClaimedGpu, ClaimRecord, CordonRecord, Holding, allot
from fleetpulse.store.claimable import ClaimableView, claimable_gpus
from fleetpulse.store.queries import AgentRecord, GpuState
from tests.unit.api.records import NOW, record

CLOCK = NOW.timestamp()


def _fleet(rng: random.Random, n: int) -> list[AgentRecord]:
    rows = []
    for i in range(n):
        gpus = tuple(
            GpuState(
                index=k,
                uuid=f"GPU-{i}-{k}",
                name=rng.choice(["RTX", "L4"]),
                vram_total_gb=24.0,
                vram_free_gb=float(rng.randint(0, 24)),
                error="Xid" if rng.random() < 0.05 else None,
            )
            for k in range(rng.choice([0, 1, 1, 2, 4]))
        )
        rows.append(
            record(
                f"h{i}",
                gpus=gpus,
                cores=rng.choice([4, 8, 16]),
                mem=float(rng.choice([8, 16, 32])),
                status="online" if rng.random() < 0.9 else "offline",
                pool=rng.choice(["a", "b"]),
                agent_id=uuid.UUID(int=rng.getrandbits(128)),
            )
        )
    return rows


def _holdings(rng: random.Random, fleet: list[AgentRecord]) -> Holdings:
    holdings = Holdings()
    for r in rng.sample(fleet, len(fleet) // 3):
        claims = tuple(
            ClaimRecord(
                claim_id=uuid.uuid4(),
                agent_id=r.agent_id,
                holder="h",
                gpus=tuple(
                    ClaimedGpu(index=g.index, uuid=g.uuid, vram_gb=float(rng.randint(0, 16)))
                    for g in r.gpus
                    if rng.random() < 0.6
                ),
                cpu_cores=rng.randint(0, 4),
                mem_gb=float(rng.randint(0, 8)),
                created_at=NOW - timedelta(seconds=10),
                expires_at=NOW + timedelta(seconds=rng.choice([-1, 30, 60])),
            )
            for _ in range(rng.randint(0, 2))
        )
        cordon = (
            CordonRecord(agent_id=r.agent_id, gpu_uuid=None, reason="x", by="y", at=NOW)
            if rng.random() < 0.1
            else None
        )
        gpu_cordons = tuple(
            CordonRecord(agent_id=r.agent_id, gpu_uuid=g.uuid, reason="x", by="y", at=NOW)
            for g in r.gpus
            if rng.random() < 0.1
        )
        holdings.put(r.agent_id, Holding(claims=claims, cordon=cordon, gpu_cordons=gpu_cordons))
    return holdings


def _reference(
    fleet: list[AgentRecord], holdings: Holdings, q: CapacityFilter
) -> list[tuple[uuid.UUID, tuple[int, ...]]]:
    rows = []
    for r in fleet:
        if r.status != "online" or (q.pool is not None and r.pool_name != q.pool):
            continue
        a = allot(r, holdings.get(r.agent_id), NOW)
        if not a.schedulable:
            continue
        gpus = claimable_gpus(r, a, q)
        if (
            len(gpus) < q.gpus_needed
            or a.cpu_claimable_cores < q.min_cpu_cores
            or a.mem_claimable_gb < q.min_mem_gb
        ):
            continue
        if holdings.get(r.agent_id).empty:
            best = max((g.vram_free_gb for g in r.gpus if not g.error), default=-1.0)
            key = max(r.gpu_vram_available_gb, best)
        else:
            key = a.gpu_vram_claimable_gb
        rows.append((-key, -a.cpu_claimable_cores, r.agent_id.int >> 64, r.agent_id, gpus))
    rows.sort(key=lambda t: t[:3])
    return [(t[3], t[4]) for t in rows[: q.limit]]


@pytest.mark.parametrize("seed", range(6))
def test_claimable_answers_equal_the_brute_force_reference(seed: int) -> None:
    rng = random.Random(seed)
    fleet = _fleet(rng, 400)
    holdings = _holdings(rng, fleet)
    index = RegistryIndex()
    index.apply(fleet)
    view = ClaimableView(holdings)
    for _ in range(40):
        q = CapacityFilter(
            min_gpu_vram_gb=float(rng.choice([0, 0, 4, 8, 16, 20])),
            min_cpu_cores=rng.choice([0, 0, 2, 6, 12]),
            min_mem_gb=float(rng.choice([0, 4, 12])),
            min_gpu_count=rng.choice([0, 0, 1, 2]),
            gpu_type=rng.choice([None, None, "RTX"]),
            pool=rng.choice([None, "a"]),
            limit=rng.choice([1, 5, 20, 1000]),
        )
        got = [(m.record.agent_id, m.matching_gpus) for m in view.query(index, q, CLOCK)]
        assert got == _reference(fleet, holdings, q), q
        # claims come and go between questions: what the view remembered must follow
        moved = rng.choice(fleet)
        holdings.put(moved.agent_id, _holdings(rng, [moved, moved, moved]).get(moved.agent_id))


def test_nothing_held_answers_with_the_index_list_itself() -> None:
    fleet = _fleet(random.Random(1), 50)
    index = RegistryIndex()
    index.apply(fleet)
    q = CapacityFilter(min_gpu_vram_gb=4)
    assert ClaimableView(Holdings()).query(index, q, CLOCK) is index.query(q, CLOCK)


def test_an_expiry_changes_the_answer_without_any_other_change() -> None:
    host = record("solo", gpus=(GpuState(index=0, uuid="G0", vram_total_gb=24, vram_free_gb=24),))
    index = RegistryIndex()
    index.apply([host])
    holdings = Holdings()
    claim = ClaimRecord(
        claim_id=uuid.uuid4(),
        agent_id=host.agent_id,
        holder="h",
        gpus=(ClaimedGpu(index=0, uuid="G0", vram_gb=20.0),),
        cpu_cores=0,
        mem_gb=0.0,
        created_at=NOW,
        expires_at=NOW + timedelta(seconds=5),
    )
    holdings.put(host.agent_id, Holding(claims=(claim,)))
    view = ClaimableView(holdings)
    q = CapacityFilter(min_gpu_vram_gb=8)
    assert view.query(index, q, CLOCK) == []
    later = view.query(index, q, CLOCK + 6)
    assert [m.record.hostname for m in later] == ["solo"]
    assert later[0].allotment is not None
    assert later[0].allotment.gpus[0].vram_claimable_gb == 24.0


def test_an_answer_trails_an_expiry_by_at_most_trail_s() -> None:
    host = record("solo", gpus=(GpuState(index=0, uuid="G0", vram_total_gb=24, vram_free_gb=24),))
    index = RegistryIndex()
    index.apply([host])
    holdings = Holdings()
    claim = ClaimRecord(
        claim_id=uuid.uuid4(),
        agent_id=host.agent_id,
        holder="h",
        gpus=(ClaimedGpu(index=0, uuid="G0", vram_gb=20.0),),
        cpu_cores=0,
        mem_gb=0.0,
        created_at=NOW,
        expires_at=NOW + timedelta(seconds=5),
    )
    holdings.put(host.agent_id, Holding(claims=(claim,)))
    view = ClaimableView(holdings, trail_s=1.0)
    q = CapacityFilter(min_gpu_vram_gb=8)
    assert view.query(index, q, CLOCK + 4.5) == []
    assert view.query(index, q, CLOCK + 5.2) == []  # expired 0.2 s ago: within the trail
    assert [m.record.hostname for m in view.query(index, q, CLOCK + 5.6)] == ["solo"]
