"""Claim gauges: holders bounded, claimable beside held, cordoned capacity not offered."""

from __future__ import annotations

from fleetpulse.api.claim_metrics import ClaimTotals, corrected, fleet_totals, render_claims
from fleetpulse.store import Holding, allot
from fleetpulse.store.allotment import CordonRecord
from tests.unit.api.records import NOW, gpu, record


def test_holders_beyond_the_limit_are_summed_as_other() -> None:
    holders = {f"h{n:02d}": n + 1 for n in range(25)}
    text = render_claims(ClaimTotals(), holders, holder_limit=20).decode()
    shown = [line for line in text.splitlines() if line.startswith("fleetpulse_claims_active{")]
    assert len(shown) == 21
    assert shown[0] == 'fleetpulse_claims_active{holder="h24"} 25'
    assert shown[-1] == 'fleetpulse_claims_active{holder="_other"} 15'  # 1 + 2 + 3 + 4 + 5


def test_a_cordoned_agent_offers_nothing_and_counts_as_a_cordon() -> None:
    host = record("c", gpus=(gpu(0, 20.0),), cores=8)
    cordon = CordonRecord(agent_id=host.agent_id, gpu_uuid=None, reason="r", by="b", at=NOW)
    allotment = allot(host, Holding(cordon=cordon), NOW)
    text = render_claims(corrected(fleet_totals([host]), [host], lambda r: allotment), {}).decode()
    assert 'fleetpulse_capacity_cpu_claimable_cores{pool="render"} 0' in text
    assert 'fleetpulse_capacity_gpu_vram_claimable_bytes{pool="render",gpu_type="RTX"} 0' in text
    assert 'fleetpulse_cordons{pool="render",kind="agent"} 1' in text


def test_a_correction_equals_a_full_count() -> None:
    hosts = [record(f"h{n}", gpus=(gpu(0, 20.0 - n), gpu(1, 7.3)), cores=8) for n in range(5)]
    cordon = CordonRecord(agent_id=hosts[0].agent_id, gpu_uuid=None, reason="r", by="b", at=NOW)
    allotments = {hosts[0].agent_id: allot(hosts[0], Holding(cordon=cordon), NOW)}
    held = [hosts[0]]
    fast = corrected(fleet_totals(hosts), held, lambda r: allotments.get(r.agent_id))
    full = ClaimTotals().add(hosts, lambda r: allotments.get(r.agent_id))
    assert render_claims(fast, {}) == render_claims(full, {})
    assert (
        'fleetpulse_capacity_cpu_claimable_cores{pool="render"} 32'
        in render_claims(fast, {}).decode()
    )
