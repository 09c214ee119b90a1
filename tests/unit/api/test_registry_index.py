"""The in-process registry index: filters, order, exact GPU checks, updates (no I/O)."""

from __future__ import annotations

import math
import random
import uuid
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from fleetpulse.store import (
    AgentRecord,
    CapacityFilter,
    RegistryIndex,
    matching_gpus,
    registry_index,
)
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
            or not r.offered  # withheld by its owner (presence)
            or r.cpu_available_cores < query.min_cpu_cores
            or r.mem_available_gb < query.min_mem_gb
            or (query.pool is not None and r.pool_name != query.pool)
            or (query.max_sample_age_s is not None and sampled < CLOCK - query.max_sample_age_s)
            or (query.min_reliability is not None and (rel is None or rel < query.min_reliability))
            or len(gpus) < query.gpus_needed
        ):
            continue
        # "most free VRAM": what the agent reports, never below its best usable GPU
        best = max(
            (
                g.vram_free_gb
                for g in r.gpus
                if not g.error
                and g.health != "failed"
                and (query.include_degraded or g.health != "degraded")
            ),
            default=-1.0,
        )
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
                health=rng.choice((None, "ok", "ok", "ok", "degraded", "failed")),
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
            offered=rng.random() < 0.9,
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
                include_degraded=rng.random() < 0.3,
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


# -- edges: the bounds, the order of arrival, the cost of a search -------------------------


def test_a_half_gigabyte_request_never_returns_a_machine_without_a_usable_gpu() -> None:
    index = RegistryIndex()
    index.apply(
        [
            record("cpu-only", cores=64, mem=256.0),
            record("lost-gpu", gpus=(gpu(0, 24.0, error="Xid 79"),), cores=32),
            record("half", gpus=(gpu(0, 0.5),)),
            record("just-under", gpus=(gpu(0, 0.49),)),
        ]
    )
    assert names(index, min_gpu_vram_gb=0.5) == ["half"]
    assert names(index, min_gpu_vram_gb=0.5, min_mem_gb=1.0) == ["half"]
    rows = index.query(CapacityFilter(min_gpu_vram_gb=0.25), CLOCK)
    assert [(m.record.hostname, m.matching_gpus) for m in rows] == [
        ("half", (0,)),
        ("just-under", (0,)),
    ]
    assert names(index, min_gpu_count=1) == ["half", "just-under"]
    assert names(index) == ["half", "just-under", "cpu-only", "lost-gpu"]


@pytest.mark.parametrize(
    "query",
    [
        {"min_cpu_cores": 12},
        {"min_mem_gb": 48.0},
        {"min_gpu_vram_gb": 10.5},
        {"min_gpu_count": 3},
        {"min_gpu_count": 3, "min_gpu_vram_gb": 10.5},
        {"max_sample_age_s": 30.0},
        {"min_reliability": 0.75},
    ],
)
def test_every_bound_is_inclusive_even_for_the_best_agent_of_the_fleet(
    query: dict[str, float],
) -> None:
    """The best agent offers exactly what is asked: it matches (no "more than")."""
    best = record(
        "best", gpus=tuple(gpu(i, 10.5) for i in range(3)), cores=12, mem=48.0, sampled_ago_s=30
    )
    index = RegistryIndex()
    index.apply([best, record("small", gpus=(gpu(0, 1.0),), cores=2, mem=4.0, sampled_ago_s=31)])
    index.set_reliability({best.agent_id: 0.75})
    assert names(index, **query) == ["best"]


def test_a_bound_just_past_the_best_agent_is_empty() -> None:
    index = RegistryIndex()
    best = record("best", gpus=(gpu(0, 10.5),), cores=12, mem=48.0, sampled_ago_s=30)
    index.apply([best])
    index.set_reliability({best.agent_id: 0.75})
    for query in (
        {"min_cpu_cores": 13},
        {"min_mem_gb": 48.01},
        {"min_gpu_vram_gb": 10.51},
        {"min_gpu_count": 2},
        {"max_sample_age_s": 29.9},
        {"min_reliability": 0.76},
    ):
        assert names(index, **query) == [], query


def test_reliability_scores_that_arrive_before_the_rows_apply_to_them() -> None:
    early = record("early", cores=16)
    late = record("late", cores=8)
    index = RegistryIndex()
    index.set_reliability({early.agent_id: 0.95, late.agent_id: 0.2})
    index.apply([early, late])
    assert index.reliability(early.agent_id) == 0.95
    assert [
        (m.record.hostname, m.reliability_30d) for m in index.query(CapacityFilter(), CLOCK)
    ] == [
        ("early", 0.95),
        ("late", 0.2),
    ]
    assert names(index, min_reliability=0.5) == ["early"]
    # a newer row of the same agent keeps its score
    index.apply([record("early", cores=4, updated=NOW + timedelta(seconds=1))])
    assert names(index, min_reliability=0.5) == ["early"]
    assert (
        index.query(CapacityFilter(min_reliability=0.5), CLOCK)[0].record.cpu_available_cores == 4
    )


def test_scores_replaced_after_the_order_is_built_apply_at_once() -> None:
    index = seed_fleet()
    assert names(index) == ["agent1", "agent2", "agent3"]  # the order is built
    agent2 = record("agent2").agent_id
    index.set_reliability({agent2: 0.9})
    assert names(index, min_reliability=0.9) == ["agent2"]
    index.set_reliability({})
    assert names(index, min_reliability=0.1) == []
    assert [m.reliability_30d for m in index.query(CapacityFilter(), CLOCK)] == [None] * 3


def counting_passes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many vectorised passes (blocks) each search makes: one list item per pass."""
    passes: list[int] = []
    mask = RegistryIndex._mask

    def counted(self: RegistryIndex, *args: object) -> object:
        passes.append(1)
        return mask(self, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(RegistryIndex, "_mask", counted)
    return passes


def test_a_rare_match_at_the_far_end_of_a_large_fleet_takes_a_handful_of_passes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fleet = [record(f"h{n:05d}", gpus=(gpu(0, 24.0 - n / 1000),), cores=2) for n in range(6000)]
    fleet[-3:] = [record(f"rare{n}", gpus=(gpu(0, 1.0 - n / 10),), cores=64) for n in range(3)]
    index = RegistryIndex()
    index.apply(fleet)
    passes = counting_passes(monkeypatch)
    assert names(index, min_cpu_cores=64, limit=2) == ["rare0", "rare1"]
    assert len(passes) <= 4  # blocks of 64, 512, 4096, ...: not one pass per few agents
    passes.clear()
    assert names(index, min_cpu_cores=64, limit=1000) == ["rare0", "rare1", "rare2"]
    assert len(passes) <= 4
    passes.clear()
    assert len(names(index, min_cpu_cores=2, limit=10)) == 10
    assert len(passes) == 1  # a common query: the first block answers it


def test_sparse_matches_make_the_next_block_cover_what_is_still_wanted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    index = RegistryIndex()
    index.apply(
        [
            record(f"h{n:05d}", gpus=(gpu(0, 24.0 - n / 1000),), cores=64 if n % 150 == 0 else 2)
            for n in range(6000)
        ]
    )
    passes = counting_passes(monkeypatch)
    # 2 matches in the first block of 200: the next one is sized for the 98 still wanted
    assert names(index, min_cpu_cores=64, limit=100) == [f"h{n:05d}" for n in range(0, 6000, 150)]
    assert len(passes) <= 2


def test_a_selective_query_with_a_small_limit_returns_the_first_matches_in_order() -> None:
    index = RegistryIndex()
    index.apply(
        [record(f"h{n:05d}", gpus=(gpu(0, 24.0 - n / 1000),), cores=n % 97) for n in range(6000)]
    )
    expected = [f"h{n:05d}" for n in range(6000) if n % 97 >= 95][:7]
    assert names(index, min_cpu_cores=95, limit=7) == expected
    assert names(index, min_cpu_cores=95, min_gpu_vram_gb=23.0, limit=7) == [
        h for h in expected if int(h[1:]) <= 1000
    ]


def test_the_columns_grow_by_doubling_and_only_with_new_agents() -> None:
    index = RegistryIndex(initial_slots=2)
    for n in range(1000):
        index.apply([record(f"h{n}", cores=n % 16)])
        assert len(index._online) <= max(2, 2 * (n + 1))  # never more than twice what is held
    size = len(index._online)
    assert size >= 1000
    for version in range(1, 4):  # newer rows of the same agents: no growth
        index.apply(
            [
                record(f"h{n}", cores=1, updated=NOW + timedelta(seconds=version))
                for n in range(1000)
            ]
        )
    assert len(index._online) == size
    assert len(index) == 1000
    assert len(names(index, limit=5000)) == 1000
    index.replace_all([record("only")])
    assert len(index) == 1
    assert names(index) == ["only"]


def test_an_index_built_from_a_full_read_answers_at_once_with_its_scores() -> None:
    fleet = [record("a", gpus=(gpu(0, 4.0),), cores=4), record("b", cores=32)]
    fleet.append(record("off", gpus=(gpu(0, 40.0),), status="offline"))
    index = RegistryIndex.from_records(fleet, reliability={fleet[1].agent_id: 0.5})
    assert len(index) == 3
    assert [
        (m.record.hostname, m.reliability_30d) for m in index.query(CapacityFilter(), CLOCK)
    ] == [
        ("a", None),
        ("b", 0.5),
    ]
    assert index.reliability_scores == {fleet[1].agent_id: 0.5}
    assert sorted(r.hostname for r in index.records()) == ["a", "b", "off"]
    assert index.updated_at(fleet[0].agent_id) == NOW
    assert index.updated_at(uuid.uuid4()) is None


def test_a_released_index_hands_back_its_records_and_answers_nothing() -> None:
    index = seed_fleet()
    version = index.version
    held = index.release()
    assert sorted(r.hostname for r in held if r is not None) == [
        "agent1",
        "agent2",
        "agent3",
        "asleep",
    ]
    assert index.version > version
    assert len(index) == 0
    assert list(index.records()) == []
    assert index.query(CapacityFilter(), CLOCK) == []


def test_the_gpu_set_table_maps_each_row_of_matches_to_the_positions_set() -> None:
    table = registry_index._gpu_sets()
    assert len(table) == 2**registry_index.TOP_GPUS
    for positions in [(), (0,), (1,), (7,), (1, 3), (0, 2, 4, 6), tuple(range(8))]:
        row = np.zeros(registry_index.TOP_GPUS, dtype=bool)
        row[list(positions)] = True
        assert table[int(row.view(np.uint64)[0])] == positions


def test_ties_break_by_the_full_high_half_of_the_agent_id() -> None:
    """IDs that differ only in the lowest bits of their high 64 bits still sort exactly
    (as PostgreSQL orders uuids), whatever the order they arrived in."""
    high = 0x7FFF_FFFF_FFFF_FF00 << 64
    ids = [uuid.UUID(int=high | (n << 64) | 0xFFFF) for n in (3, 2, 1, 0)]
    index = RegistryIndex()
    index.apply([record(f"h{n}", gpus=(gpu(0, 8.0),), agent_id=i) for n, i in enumerate(ids)])
    assert names(index) == ["h3", "h2", "h1", "h0"]


def test_a_query_after_a_score_change_and_a_row_change_sees_both() -> None:
    index = seed_fleet()
    assert names(index, min_cpu_cores=16) == ["agent1"]
    index.set_reliability({record("agent1").agent_id: 0.9})
    index.apply([record("agent7", cores=16)])
    assert names(index, min_cpu_cores=16) == ["agent1", "agent7"]
    assert names(index, min_reliability=0.9) == ["agent1"]


def test_an_unchanged_index_is_sorted_once_for_any_number_of_queries(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    index = seed_fleet()
    sorts = 0
    lexsort = np.lexsort

    def counted(*args: object, **kwargs: object) -> object:
        nonlocal sorts
        sorts += 1
        return lexsort(*args, **kwargs)  # type: ignore[call-overload]

    monkeypatch.setattr(np, "lexsort", counted)
    for cores in range(10):
        names(index, min_cpu_cores=cores)
    index.set_reliability({record("agent2").agent_id: 0.5})  # the order does not depend on it
    names(index, min_reliability=0.5)
    assert sorts == 1
    index.apply([record("agent8", cores=2)])
    names(index)
    names(index, pool="render")
    assert sorts == 2


def test_without_a_clock_reading_the_freshness_bound_uses_the_wall_clock() -> None:
    now = datetime.now(UTC)
    index = RegistryIndex()
    index.apply(
        [
            record("fresh", last_sampled_at=now - timedelta(seconds=5)),
            record("stale", last_sampled_at=now - timedelta(hours=2)),
        ]
    )
    assert [m.record.hostname for m in index.query(CapacityFilter(max_sample_age_s=600))] == [
        "fresh"
    ]


def test_the_memo_holds_up_to_its_row_bound_exactly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry_index, "MEMO_ROWS", 4)
    index = seed_fleet()
    index.query(CapacityFilter(), CLOCK)  # 3 rows
    two = index.query(CapacityFilter(min_cpu_cores=8), CLOCK)  # 3 + 2 > 4: cleared, then 2
    assert len(index.query(CapacityFilter(min_cpu_cores=4, limit=2), CLOCK)) == 2  # 4: kept
    assert index.query(CapacityFilter(min_cpu_cores=8), CLOCK) is two


def test_a_degraded_gpu_matches_only_when_the_question_includes_degraded_ones() -> None:
    sick, fine, dead = gpu(0, 20.0, health="degraded"), gpu(1, 8.0), gpu(2, 24.0, health="failed")
    agent = record("ws", gpus=(sick, fine, dead))
    assert matching_gpus(agent, CapacityFilter(min_gpu_vram_gb=4)) == (1,)
    with_degraded = CapacityFilter(min_gpu_vram_gb=4, include_degraded=True)
    assert matching_gpus(agent, with_degraded) == (0, 1)
