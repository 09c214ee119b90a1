"""One meaning in one place: a GPU with an error is not capacity, whoever asks."""

from __future__ import annotations

import msgspec
import pytest

from fleetpulse.agent import Contribution, resource_metrics
from fleetpulse.api.schemas import Gpu
from fleetpulse.gpus import is_usable, usable_gpus
from fleetpulse.messages import GpuMetrics
from fleetpulse.store import CapacityFilter, GpuState, matching_gpus
from tests.unit.api.records import gpu, record


def test_the_gpu_state_has_the_same_fields_in_every_contract() -> None:
    """messages (agent -> ingest), store (ingest -> api) and the HTTP schema keep one copy
    each; they must not drift apart: the store keeps the wire's fields, health included, in
    the wire's order; the HTTP one adds what claims and cordons leave of each GPU, after them."""
    stored = GpuState.__struct_fields__
    assert Gpu.__struct_fields__ == (*stored, "vram_held_gb", "vram_claimable_gb", "cordon")
    assert GpuMetrics.__struct_fields__ == stored
    assert stored[-1] == "ecc_uncorrected"


def test_usable_gpus_are_those_without_an_error() -> None:
    reports = [
        GpuMetrics(index=0, vram_total_gb=24, vram_free_gb=20),
        GpuMetrics(index=1, vram_total_gb=24, vram_free_gb=20, error=""),
        GpuMetrics(index=2, vram_total_gb=24, vram_free_gb=20, error="Xid 79"),
    ]
    assert [g.index for g in usable_gpus(reports)] == [0, 1]
    states = msgspec.convert(reports, list[GpuState], from_attributes=True)
    assert [g.index for g in usable_gpus(states)] == [0, 1]


def test_every_reader_of_gpus_applies_the_rule() -> None:
    """The agent's summary, the capacity match and the index agree on a failed GPU."""
    reports = [
        GpuMetrics(index=0, name="A", vram_total_gb=24, vram_free_gb=4),
        GpuMetrics(index=1, name="A", vram_total_gb=80, vram_free_gb=70, error="lost"),
    ]
    summary = resource_metrics([Contribution(gpus=tuple(reports))])
    assert (summary.gpu_count, summary.gpu_vram_available_gb) == (1, 4)
    agent = record("a", gpus=(gpu(0, 4.0), gpu(1, 70.0, error="lost")))
    assert matching_gpus(agent, CapacityFilter(min_gpu_vram_gb=1)) == (0,)


@pytest.mark.parametrize(
    ("error", "health", "usable", "usable_if_degraded_asked"),
    [
        (None, None, True, True),  # an older agent: judged by its error alone
        (None, "ok", True, True),
        (None, "degraded", False, True),
        (None, "failed", False, False),
        ("", "degraded", False, True),
        ("Xid 79", None, False, False),
        ("Xid 79", "ok", False, False),
        ("Xid 79", "degraded", False, False),
    ],
)
def test_a_gpu_counts_unless_it_has_an_error_or_its_health_says_otherwise(
    error: str | None, health: str | None, usable: bool, usable_if_degraded_asked: bool
) -> None:
    report = GpuMetrics(index=3, vram_total_gb=24, vram_free_gb=20, error=error, health=health)  # type: ignore[arg-type]
    assert is_usable(report) is usable
    assert is_usable(report, include_degraded=True) is usable_if_degraded_asked
    assert usable_gpus([report]) == ([report] if usable else [])
    assert usable_gpus([report], include_degraded=True) == (
        [report] if usable_if_degraded_asked else []
    )
