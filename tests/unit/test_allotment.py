"""Claimable = min(observed, total − held): the arithmetic behind claims, without I/O."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest

from fleetpulse.store.allotment import (
    ClaimAsk,
    ClaimedGpu,
    ClaimRecord,
    CordonRecord,
    Holding,
    Refusal,
    allot,
    fit,
)
from fleetpulse.store.queries import GpuState
from tests.unit.api.records import NOW, record


def _gpu(index: int, free: float, total: float = 24.0, error: str | None = None) -> GpuState:
    return GpuState(
        index=index,
        uuid=f"GPU-{index}",
        name="RTX",
        vram_total_gb=total,
        vram_free_gb=free,
        error=error,
    )


def _claim(
    *gpus: tuple[int, float], cores: int = 0, mem: float = 0.0, ttl_s: float = 60.0, **kw: object
) -> ClaimRecord:
    return ClaimRecord(
        claim_id=uuid.uuid4(),
        agent_id=uuid.uuid4(),
        holder="sched",
        gpus=tuple(ClaimedGpu(index=i, uuid=f"GPU-{i}", vram_gb=v) for i, v in gpus),
        cpu_cores=cores,
        mem_gb=mem,
        created_at=NOW - timedelta(seconds=1),
        expires_at=NOW + timedelta(seconds=ttl_s),
        **kw,  # type: ignore[arg-type]
    )


def _cordon(gpu_uuid: str | None = None) -> CordonRecord:
    return CordonRecord(agent_id=uuid.uuid4(), gpu_uuid=gpu_uuid, reason="fan", by="ops", at=NOW)


HOST = record("ws", gpus=(_gpu(0, 20.0), _gpu(1, 24.0)), cores=16, mem=32.0)  # mem total 64


def test_no_claims_leaves_the_observed_figures() -> None:
    a = allot(HOST, Holding(), NOW)
    assert (a.cpu_claimable_cores, a.mem_claimable_gb) == (16, 32.0)
    assert [g.vram_claimable_gb for g in a.gpus] == [20.0, 24.0]
    assert a.gpu_vram_claimable_gb == 24.0
    assert a.claims == 0
    assert a.schedulable


def test_a_claim_before_its_job_runs_is_taken_off_the_total() -> None:
    held = Holding(claims=(_claim((0, 16.0), cores=10, mem=40.0),))
    a = allot(HOST, held, NOW)
    # GPU 0: min(20 observed, 24 - 16) = 8; cores min(16, 16 - 10); memory min(32, 64 - 40)
    assert [g.vram_claimable_gb for g in a.gpus] == [8.0, 24.0]
    assert [g.vram_held_gb for g in a.gpus] == [16.0, 0.0]
    assert (a.cpu_claimable_cores, a.cpu_held_cores) == (6, 10)
    assert (a.mem_claimable_gb, a.mem_held_gb) == (24.0, 40.0)


def test_once_the_job_shows_in_a_heartbeat_it_is_not_counted_twice() -> None:
    running = record("ws", gpus=(_gpu(0, 4.0), _gpu(1, 24.0)), cores=16, mem=32.0)
    a = allot(running, Holding(claims=(_claim((0, 16.0)),)), NOW)
    assert a.gpus[0].vram_claimable_gb == 4.0  # min(4 observed, 8 unheld): not 4 - 16


def test_an_expired_or_ended_claim_holds_nothing() -> None:
    expired = _claim((0, 16.0), ttl_s=-1.0)
    ended = _claim((1, 16.0), ended_at=NOW, end_reason="released")
    a = allot(HOST, Holding(claims=(expired, ended)), NOW)
    assert [g.vram_claimable_gb for g in a.gpus] == [20.0, 24.0]
    assert a.claims == 0


def test_cordoned_and_failed_gpus_offer_nothing() -> None:
    host = record("ws", gpus=(_gpu(0, 20.0), _gpu(1, 24.0), _gpu(2, 24.0, error="Xid 79")))
    a = allot(host, Holding(gpu_cordons=(_cordon("GPU-1"),)), NOW)
    assert [g.vram_claimable_gb for g in a.gpus] == [20.0, 0.0, 0.0]
    assert a.gpus[1].cordon is not None
    assert a.gpu_vram_claimable_gb == 20.0


def test_fit_picks_the_first_gpus_in_index_order_that_have_the_vram() -> None:
    taken = fit(HOST, Holding(), ClaimAsk(vram_gb=21.0, gpu_count=1), NOW)
    assert taken == (ClaimedGpu(index=1, uuid="GPU-1", vram_gb=21.0),)
    both = fit(HOST, Holding(), ClaimAsk(vram_gb=8.0, gpu_count=2, cpu_cores=16), NOW)
    assert not isinstance(both, Refusal)
    assert [g.index for g in both] == [0, 1]


def test_fit_by_uuid_or_index() -> None:
    by_uuid = fit(HOST, Holding(), ClaimAsk(vram_gb=4.0, gpus=("GPU-1",)), NOW)
    by_index = fit(HOST, Holding(), ClaimAsk(vram_gb=4.0, gpus=(1,)), NOW)
    assert by_uuid == by_index == (ClaimedGpu(index=1, uuid="GPU-1", vram_gb=4.0),)


@pytest.mark.parametrize(
    ("host", "holding", "ask", "says"),
    [
        (record("ws", status="offline"), Holding(), ClaimAsk(), "is offline"),
        (HOST, Holding(cordon=_cordon()), ClaimAsk(), "cordoned by ops: fan"),
        (HOST, Holding(), ClaimAsk(cpu_cores=17), "17 cores asked, 16 claimable"),
        (HOST, Holding(), ClaimAsk(mem_gb=33.0), "33 GiB of memory asked, 32 claimable"),
        (HOST, Holding(), ClaimAsk(vram_gb=25.0, gpu_count=1), "1 GPU(s) with 25 GiB"),
        (HOST, Holding(), ClaimAsk(gpus=("GPU-9",)), "has no GPU 'GPU-9'"),
        (HOST, Holding(), ClaimAsk(gpus=(0, "GPU-0")), "named twice"),
        (HOST, Holding(gpu_cordons=(_cordon("GPU-0"),)), ClaimAsk(gpus=(0,)), "cordoned"),
        (HOST, Holding(claims=(_claim((0, 10.0)),)), ClaimAsk(vram_gb=15, gpus=(0,)), "14"),
        (
            HOST,
            Holding(gpu_cordons=(_cordon("GPU-1"),)),
            ClaimAsk(vram_gb=21.0, gpu_count=1),
            "0 on agent",
        ),
    ],
)
def test_fit_refuses_with_the_reason(
    host: object, holding: Holding, ask: ClaimAsk, says: str
) -> None:
    refused = fit(host, holding, ask, NOW)  # type: ignore[arg-type]
    assert isinstance(refused, Refusal)
    assert says in refused.reason


def test_the_last_slot_fits_exactly_once() -> None:
    ask = ClaimAsk(vram_gb=12.0, gpu_count=1, gpus=(1,))
    first = fit(HOST, Holding(), ask, NOW)
    assert not isinstance(first, Refusal)
    one = _claim((1, 12.0))
    assert not isinstance(fit(HOST, Holding(claims=(one,)), ask, NOW), Refusal)  # 24 - 12 = 12
    two = Holding(claims=(one, _claim((1, 12.0))))
    assert isinstance(fit(HOST, two, ask, NOW), Refusal)
    assert two.next_expiry() == NOW + timedelta(seconds=60)


def test_a_withheld_agent_and_an_unhealthy_gpu_are_not_claimable() -> None:
    withheld = record(
        "ws-w",
        gpus=(_gpu(0, 20.0),),
        cores=16,
        offered=False,
        withheld_reason="user_active",
    )
    refused = fit(withheld, Holding(), ClaimAsk(cpu_cores=1), NOW)
    assert isinstance(refused, Refusal)
    assert "withheld by its owner (user_active)" in refused.reason
    sick = GpuState(
        index=1,
        uuid="GPU-1",
        name="RTX",
        vram_total_gb=24.0,
        vram_free_gb=24.0,
        health="degraded",
        health_reasons=("xid:94",),
    )
    host = record("ws-s", gpus=(_gpu(0, 20.0), sick), cores=16)
    a = allot(host, Holding(), NOW)
    assert [g.vram_claimable_gb for g in a.gpus] == [20.0, 0.0]
    assert a.gpu_vram_claimable_gb == 20.0
    named = fit(host, Holding(), ClaimAsk(gpus=("GPU-1",), vram_gb=1.0), NOW)
    assert isinstance(named, Refusal)
    assert "is degraded (xid:94)" in named.reason
    two = fit(host, Holding(), ClaimAsk(vram_gb=1.0, gpu_count=2), NOW)
    assert isinstance(two, Refusal)
