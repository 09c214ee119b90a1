"""The in-process registry index: filters, order, exact GPU checks, updates (no I/O)."""

from __future__ import annotations

import math
import random
import uuid
from datetime import timedelta

import pytest

from fleetpulse.store import AgentRecord, CapacityFilter, RegistryIndex, matching_gpus
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


def test_a_type_found_only_on_mixed_agents_matches_per_gpu() -> None:
    index = RegistryIndex()
    index.apply(
        [
            record("mixed", gpus=(gpu(0, 20.0, name="A100"), gpu(1, 9.0, name="L4"))),
            record("a100", gpus=(gpu(0, 30.0, name="A100"),)),
        ]
    )
    (match,) = index.query(CapacityFilter(gpu_type="L4"), CLOCK)
    assert (match.record.hostname, match.matching_gpus) == ("mixed", (1,))
    assert names(index, gpu_type="L4", min_gpu_vram_gb=10) == []
    assert names(index, gpu_type="L4", pool="render") == ["mixed"]


def test_gpu_indexes_that_are_not_positions_are_reported_as_given() -> None:
    index = RegistryIndex()
    index.apply(
        [
            record("odd", gpus=(gpu(1, 12.0), gpu(3, 4.0), gpu(5, 16.0, error="Xid"))),
            record("plain", gpus=(gpu(0, 4.0), gpu(1, 12.0))),
        ]
    )
    rows = index.query(CapacityFilter(min_gpu_vram_gb=10), CLOCK)
    assert {m.record.hostname: m.matching_gpus for m in rows} == {"odd": (1,), "plain": (1,)}
    rows = index.query(CapacityFilter(), CLOCK)
    assert {m.record.hostname: m.matching_gpus for m in rows} == {"odd": (1, 3), "plain": (0, 1)}
    assert names(index, min_gpu_count=2, min_gpu_vram_gb=3) == ["odd", "plain"]
    assert names(index, min_gpu_count=3) == []


def reference(
    records: list[AgentRecord], reliability: dict[uuid.UUID, float], query: CapacityFilter
) -> list[tuple[str, tuple[int, ...], float | None]]:
    """The contract by brute force: online, every filter, exact per-GPU match, the order."""
    rows = []
    for r in records:
        rel = reliability.get(r.agent_id)
        sampled = r.last_sampled_at.timestamp() if r.last_sampled_at else -math.inf
        gpus = matching_gpus(r, query)
        if (
            r.status != "online"
            or r.cpu_available_cores < query.min_cpu_cores
            or r.mem_available_gb < query.min_mem_gb
            or (query.pool is not None and r.pool_name != query.pool)
            or (query.max_sample_age_s is not None and sampled < CLOCK - query.max_sample_age_s)
            or (query.min_reliability is not None and (rel is None or rel < query.min_reliability))
            or len(gpus) < query.gpus_needed
        ):
            continue
        # "most free VRAM": what the agent reports, never below its best usable GPU
        best = max((g.vram_free_gb for g in r.gpus if not g.error), default=-1.0)
        key = (-max(r.gpu_vram_available_gb, best), -r.cpu_available_cores, r.agent_id.int)
        rows.append((key, r.hostname, gpus, rel))
    rows.sort(key=lambda row: row[0])
    return [(host, gpus, rel) for _, host, gpus, rel in rows[: query.limit]]


@pytest.mark.parametrize("seed", range(4))
def test_random_fleets_and_filters_answer_as_the_brute_force_reference(seed: int) -> None:
    rng = random.Random(seed)
    kinds = ("A100", "L4", "RTX")

    def agent(n: int, version: int) -> AgentRecord:
        irregular = rng.random() < 0.1  # indexes that are not positions
        main_kind = kinds[n % 3]
        gpus = tuple(
            gpu(
                2 * i + 1 if irregular else i,
                round(rng.uniform(0, 40), 1),
                name=rng.choice(kinds) if rng.random() < 0.3 else main_kind,
                error="Xid" if rng.random() < 0.1 else None,
            )
            for i in range(rng.choice((0, 0, 1, 1, 2, 3, 4, 8, 9, 12)))
        )
        return record(
            f"h{n}",
            gpus=gpus,
            cores=rng.randint(0, 64),
            mem=rng.choice((4.0, 16.0, 64.0)),
            status="online" if rng.random() < 0.85 else "offline",
            pool=rng.choice(("p", "q", "r")),
            sampled_ago_s=rng.choice((None, 1, 30, 100, 500)),
            updated=NOW + timedelta(seconds=version),
        )

    index = RegistryIndex(initial_slots=4)
    latest: dict[str, AgentRecord] = {}
    reliability: dict[uuid.UUID, float] = {}
    for version in range(12):
        hosts = {rng.randrange(300) for _ in range(rng.randint(1, 200))}
        batch = [agent(n, version) for n in sorted(hosts)]
        index.apply(batch)
        latest.update((r.hostname, r) for r in batch)
        for i in range(60):
            if i in (0, 30) and rng.random() < 0.4:  # before the re-sort, and after it
                sample = rng.sample(list(latest.values()), len(latest) // 2)
                reliability = {r.agent_id: rng.random() for r in sample}
                index.set_reliability(reliability)
            query = CapacityFilter(
                min_gpu_vram_gb=rng.choice((0, 0, 5, 10, 20, 39)),
                min_cpu_cores=rng.choice((0, 0, 8, 32, 60)),
                min_mem_gb=rng.choice((0, 0, 8, 32)),
                min_gpu_count=rng.choice((0, 0, 1, 2, 4, 9, 10)),
                gpu_type=rng.choice((None, None, *kinds, "H100")),
                pool=rng.choice((None, None, "p", "q", "s")),
                max_sample_age_s=rng.choice((None, None, 5, 60)),
                min_reliability=rng.choice((None, None, 0.5)),
                limit=rng.choice((1, 3, 20, 1000)),
            )
            got = [
                (m.record.hostname, m.matching_gpus, m.reliability_30d)
                for m in index.query(query, CLOCK)
            ]
            assert got == reference(list(latest.values()), reliability, query), query


def test_a_repeated_query_is_answered_from_the_memo_until_the_index_changes() -> None:
    index = seed_fleet()
    query = CapacityFilter(min_cpu_cores=4)
    first = index.query(query, CLOCK)
    assert index.query(CapacityFilter(min_cpu_cores=4), CLOCK + 30) is first  # equal query
    assert index.query(CapacityFilter(min_cpu_cores=5), CLOCK) is not first
    index.apply([record("agent9", gpus=(gpu(0, 30.0),), cores=32)])
    again = index.query(query, CLOCK)
    assert again is not first
    assert [m.record.hostname for m in again] == ["agent9", "agent1", "agent2", "agent3"]
    index.set_reliability({again[0].record.agent_id: 0.5})
    scored = index.query(query, CLOCK)
    assert scored is not again
    assert scored[0].reliability_30d == 0.5


def test_a_memo_with_a_freshness_bound_serves_only_while_every_row_is_still_fresh() -> None:
    index = RegistryIndex()
    index.apply(
        [record("young", cores=16, sampled_ago_s=5), record("older", cores=8, sampled_ago_s=40)]
    )
    query = CapacityFilter(max_sample_age_s=60)
    first = index.query(query, CLOCK)
    assert [m.record.hostname for m in first] == ["young", "older"]
    assert index.query(query, CLOCK + 10) is first  # both still at most 60 s old
    later = index.query(query, CLOCK + 30)  # "older" is 70 s old now
    assert [m.record.hostname for m in later] == ["young"]
    # never answered from a memo made at a later clock: an earlier one may admit more
    assert [m.record.hostname for m in index.query(query, CLOCK)] == ["young", "older"]


def test_the_memo_is_bounded_in_rows_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("fleetpulse.store.registry_index.MEMO_ROWS", 4)
    index = seed_fleet()
    everyone = index.query(CapacityFilter(), CLOCK)  # 3 rows
    assert index.query(CapacityFilter(), CLOCK) is everyone
    assert len(index.query(CapacityFilter(min_cpu_cores=8), CLOCK)) == 2  # 5 rows: cleared
    assert index.query(CapacityFilter(), CLOCK) is not everyone


def test_the_memo_is_bounded() -> None:
    index = seed_fleet()
    first = index.query(CapacityFilter(limit=1), CLOCK)
    for n in range(2, 2 + 600):
        index.query(CapacityFilter(limit=n), CLOCK)
    assert index.query(CapacityFilter(limit=1), CLOCK) is not first  # evicted: computed again
    assert [m.record.hostname for m in index.query(CapacityFilter(limit=1), CLOCK)] == ["agent1"]
