"""Claimable = min(observed, total − held): the arithmetic behind claims, without I/O."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest

from fleetpulse.store.allotment import (
    EPSILON,
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


# -- the arithmetic at its edges -----------------------------------------------------------


def test_a_claim_expiring_right_now_holds_nothing_and_next_expiry_skips_ended_ones() -> None:
    now_ending = _claim((0, 16.0), ttl_s=0.0)
    assert allot(HOST, Holding(claims=(now_ending,)), NOW).claims == 0
    soon, later = _claim((0, 1.0), ttl_s=30.0), _claim((1, 1.0), ttl_s=90.0)
    ended = _claim((1, 1.0), ttl_s=10.0, ended_at=NOW, end_reason="released")
    holding = Holding(claims=(later, ended, soon))
    assert holding.next_expiry() == NOW + timedelta(seconds=30)
    assert holding.next_expiry(after=NOW + timedelta(seconds=30)) == NOW + timedelta(seconds=90)
    assert holding.next_expiry(after=NOW + timedelta(seconds=90)) is None
    assert Holding(claims=(ended,)).next_expiry() is None
    assert Holding().next_expiry() is None


def test_several_claims_add_up_per_gpu_and_per_host() -> None:
    claims = (
        _claim((0, 4.0), cores=3, mem=10.0),
        _claim((0, 6.0), (1, 2.0), cores=2, mem=5.5),
        _claim(cores=1, mem=0.5),
    )
    a = allot(HOST, Holding(claims=claims), NOW)
    assert [(g.index, g.uuid, g.vram_held_gb) for g in a.gpus] == [
        (0, "GPU-0", 10.0),
        (1, "GPU-1", 2.0),
    ]
    assert [g.vram_claimable_gb for g in a.gpus] == [14.0, 22.0]
    assert (a.claims, a.cpu_held_cores, a.cpu_claimable_cores) == (3, 6, 10)
    assert (a.mem_held_gb, a.mem_claimable_gb) == (16.0, 32.0)
    assert a.gpu_vram_claimable_gb == 22.0


def test_gpus_without_a_uuid_are_held_by_index() -> None:
    nameless = GpuState(index=0, uuid="", name="RTX", vram_total_gb=24.0, vram_free_gb=24.0)
    other = GpuState(index=1, uuid="", name="RTX", vram_total_gb=24.0, vram_free_gb=24.0)
    host = record("old-driver", gpus=(nameless, other))
    by_index = ClaimedGpu(index=0, uuid="", vram_gb=5.0)
    claims = tuple(
        ClaimRecord(
            claim_id=uuid.uuid4(),
            agent_id=host.agent_id,
            holder="sched",
            gpus=(by_index,),
            cpu_cores=0,
            mem_gb=0.0,
            created_at=NOW,
            expires_at=NOW + timedelta(seconds=60),
        )
        for _ in range(2)
    )
    a = allot(host, Holding(claims=claims), NOW)
    assert [(g.index, g.vram_held_gb, g.vram_claimable_gb) for g in a.gpus] == [
        (0, 10.0, 14.0),
        (1, 0.0, 24.0),
    ]


def test_held_figures_are_rounded_to_six_decimals_and_never_go_below_zero() -> None:
    a = allot(HOST, Holding(claims=(_claim((0, 0.1)), _claim((0, 0.2), mem=1.23456789))), NOW)
    assert a.gpus[0].vram_held_gb == 0.3  # not 0.30000000000000004
    assert a.mem_held_gb == 1.234568
    assert a.mem_claimable_gb == 32.0
    over = allot(HOST, Holding(claims=(_claim((0, 30.0), cores=40, mem=100.0),)), NOW)
    assert over.gpus[0].vram_claimable_gb == 0.0
    assert (over.cpu_claimable_cores, over.mem_claimable_gb) == (0, 0.0)


def test_with_every_gpu_cordoned_or_failed_nothing_is_claimable_and_the_cordon_shows() -> None:
    host = record("ws", gpus=(_gpu(0, 20.0), _gpu(1, 24.0, error="Xid 79")))
    agent_cordon = _cordon()
    a = allot(host, Holding(cordon=agent_cordon, gpu_cordons=(_cordon("GPU-0"),)), NOW)
    assert a.gpu_vram_claimable_gb == 0.0
    assert a.cordon == agent_cordon
    assert not a.schedulable


def test_an_ask_of_exactly_what_is_left_fits_float_noise_included() -> None:
    left = Holding(claims=(_claim((0, 4.0), mem=8.0),))  # GPU 0: min(20 free, 24 - 4 held)
    a = allot(HOST, left, NOW)
    assert (a.gpus[0].vram_claimable_gb, a.mem_claimable_gb) == (20.0, 32.0)
    for noise in (0.0, EPSILON):
        exact = ClaimAsk(vram_gb=20.0 + noise, mem_gb=32.0 + noise)
        assert not isinstance(fit(HOST, left, exact, NOW), Refusal)
        by_gpu = ClaimAsk(vram_gb=20.0 + noise, gpus=("GPU-0",))
        assert not isinstance(fit(HOST, left, by_gpu, NOW), Refusal)
        by_count = ClaimAsk(vram_gb=24.0 + noise, gpu_count=1)
        assert fit(HOST, left, by_count, NOW) == (
            ClaimedGpu(index=1, uuid="GPU-1", vram_gb=24.0 + noise),
        )
    assert isinstance(fit(HOST, left, ClaimAsk(mem_gb=32.001), NOW), Refusal)
    assert isinstance(fit(HOST, left, ClaimAsk(vram_gb=20.001, gpus=(0,)), NOW), Refusal)


def test_picking_by_count_skips_failed_gpus_and_other_types() -> None:
    host = record(
        "ws",
        gpus=(
            _gpu(0, 0.0, error="Xid 79"),
            GpuState(index=1, uuid="GPU-1", name="L4", vram_total_gb=24.0, vram_free_gb=24.0),
            _gpu(2, 24.0),
        ),
    )
    assert fit(host, Holding(), ClaimAsk(gpu_count=1), NOW) == (
        ClaimedGpu(index=1, uuid="GPU-1", vram_gb=0.0),
    )
    assert fit(host, Holding(), ClaimAsk(gpu_count=1, gpu_type="RTX"), NOW) == (
        ClaimedGpu(index=2, uuid="GPU-2", vram_gb=0.0),
    )


def test_refusals_name_the_gpu_by_its_uuid() -> None:
    failed = record("ws", gpus=(_gpu(0, 0.0, error="Xid 79"),))
    cases = [
        (HOST, Holding(gpu_cordons=(_cordon("GPU-0"),)), ClaimAsk(gpus=(0,))),
        (failed, Holding(), ClaimAsk(gpus=(0,))),
        (HOST, Holding(), ClaimAsk(vram_gb=21.0, gpus=(0,))),
    ]
    reasons = [fit(host, holding, ask, NOW) for host, holding, ask in cases]
    assert reasons == [
        Refusal("GPU GPU-0 is cordoned by ops"),
        Refusal("GPU GPU-0 reports an error: Xid 79"),
        Refusal("21 GiB asked on GPU GPU-0, 20 claimable"),
    ]
