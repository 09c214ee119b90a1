"""The in-process registry index: filters, order, exact GPU checks, updates (no I/O)."""

from __future__ import annotations

from datetime import timedelta

from fleetpulse.store import CapacityFilter, RegistryIndex
from tests.unit.api.records import NOW, gpu, record

CLOCK = NOW.timestamp()


def names(index: RegistryIndex, **query: object) -> list[str]:
    return [m.record.hostname for m in index.query(CapacityFilter(**query), CLOCK)]  # type: ignore[arg-type]


def seed_fleet() -> RegistryIndex:
    index = RegistryIndex(initial_slots=2)  # grows as rows arrive
    index.apply(
        [
            record("agent1", gpus=(gpu(0, 8.0),), cores=16),
            record("agent2", gpus=(gpu(0, 2.0),), cores=4),
            record("agent3", cores=8),
            record("asleep", gpus=(gpu(0, 20.0),), status="offline"),
        ]
    )
    return index


def test_seed_profiles_sorted_by_vram_then_cores_online_only() -> None:
    index = seed_fleet()
    assert names(index) == ["agent1", "agent2", "agent3"]
    assert names(index, min_gpu_vram_gb=4) == ["agent1"]
    assert names(index, min_cpu_cores=8) == ["agent1", "agent3"]
    assert names(index, limit=1) == ["agent1"]
    assert len(index) == 4


def test_ties_on_vram_break_by_cores_then_agent_id() -> None:
    index = RegistryIndex()
    index.apply([record(f"h{n}", gpus=(gpu(0, 8.0),), cores=4 + n % 2) for n in range(6)])
    rows = index.query(CapacityFilter(), CLOCK)
    keys = [(-r.record.cpu_available_cores, r.record.agent_id.int) for r in rows]
    assert keys == sorted(keys)


def test_unknown_pool_or_type_is_empty_and_type_filter_is_per_gpu() -> None:
    index = RegistryIndex()
    index.apply(
        [
            record("mixed", gpus=(gpu(0, 20.0, name="A100"), gpu(1, 6.0, name="L4"))),
            record("l4", gpus=(gpu(0, 10.0, name="L4"),)),
        ]
    )
    assert names(index, pool="nope") == []
    assert names(index, gpu_type="H100") == []
    assert names(index, gpu_type="L4", min_gpu_vram_gb=8) == ["l4"]  # mixed's L4 has 6 GB
    index.apply([record("a100-train", gpus=(gpu(0, 40.0, name="A100"),), pool="train")])
    assert names(index, gpu_type="A100", pool="train") == ["a100-train"]
    assert names(index, gpu_type="L4", pool="train") == []  # both exist, never together
    (match,) = index.query(
        CapacityFilter(gpu_type="L4", min_gpu_vram_gb=5, pool="render", limit=1), CLOCK
    )
    assert match.record.hostname == "mixed"
    assert match.matching_gpus == (1,)


def test_gpu_count_beyond_the_kept_columns_is_checked_exactly() -> None:
    index = RegistryIndex()
    index.apply(
        [
            record("ten", gpus=tuple(gpu(i, 10.0) for i in range(10))),
            record("nine", gpus=(*(gpu(i, 10.0) for i in range(9)), gpu(9, 1.0))),
            record("broken", gpus=tuple(gpu(i, 10.0, error="Xid") for i in range(10))),
        ]
    )
    assert names(index, min_gpu_count=10, min_gpu_vram_gb=5) == ["ten"]
    assert names(index, min_gpu_count=9, min_gpu_vram_gb=5) == ["ten", "nine"]
    assert names(index, min_gpu_count=1) == ["ten", "nine"]


def test_memory_age_and_reliability_filters() -> None:
    index = RegistryIndex()
    fresh = record("fresh", mem=64.0, sampled_ago_s=5)
    stale = record("stale", mem=8.0, sampled_ago_s=500)
    never = record("never", sampled_ago_s=None)
    index.apply([fresh, stale, never])
    index.set_reliability({fresh.agent_id: 0.99, stale.agent_id: 0.5})
    assert names(index, min_mem_gb=32) == ["fresh"]
    assert names(index, max_sample_age_s=60) == ["fresh"]
    assert names(index, min_reliability=0.9) == ["fresh"]
    assert index.reliability(never.agent_id) is None
    assert {m.record.hostname: m.reliability_30d for m in index.query(CapacityFilter(), CLOCK)} == {
        "fresh": 0.99,
        "stale": 0.5,
        "never": None,
    }


def test_updates_replace_older_rows_and_ignore_replays() -> None:
    index = seed_fleet()
    agent2 = index.query(CapacityFilter(min_cpu_cores=4, limit=3), CLOCK)[1].record
    newer = record("agent2", gpus=(gpu(0, 12.0),), cores=4, updated=NOW + timedelta(seconds=1))
    older = record("agent2", gpus=(gpu(0, 0.5),), cores=4, updated=NOW - timedelta(seconds=1))
    assert index.apply([newer]) == 1
    assert index.apply([older, newer]) == 0
    assert names(index, min_gpu_vram_gb=10) == ["agent2"]
    assert index.updated_at(agent2.agent_id) == newer.updated_at
    gone = record(
        "agent2", gpus=(gpu(0, 12.0),), status="offline", updated=NOW + timedelta(seconds=2)
    )
    index.apply([gone])
    assert "agent2" not in names(index)


def test_replace_all_drops_agents_no_longer_in_the_registry() -> None:
    index = seed_fleet()
    version = index.version
    index.replace_all([record("agent3", cores=8)])
    assert names(index) == ["agent3"]
    assert len(index) == 1
    assert index.get(record("agent1").agent_id) is None
    assert index.version > version


def test_zero_limit_and_empty_index() -> None:
    assert RegistryIndex().query(CapacityFilter(), CLOCK) == []
    assert seed_fleet().query(CapacityFilter(limit=0), CLOCK) == []


def test_large_fleet_scans_in_blocks_and_stops_at_limit() -> None:
    index = RegistryIndex()
    index.apply(
        [record(f"h{n}", gpus=(gpu(0, float(n % 24)),), cores=n % 64) for n in range(20_000)]
    )
    rare = names(index, min_cpu_cores=63, min_gpu_vram_gb=23, limit=1000)
    assert len(rare) == sum(1 for n in range(20_000) if n % 64 == 63 and n % 24 >= 23)
    assert len(names(index, limit=50)) == 50
