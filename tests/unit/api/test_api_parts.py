"""Pure parts of the API: metrics rendering, auth compare, row splicing, buckets, the table."""

from __future__ import annotations

import io
from datetime import timedelta

import msgspec
import pytest
from rich.console import Console

from fleetpulse.api.auth import token_matches
from fleetpulse.api.metrics import GIB, render_fleet
from fleetpulse.api.routes.agents import _auto_bucket, parse_bucket
from fleetpulse.api.rows import RowCache
from fleetpulse.api.schemas import CapacityList, capacity_of
from fleetpulse.api.status import fleet_table, pool_summary
from fleetpulse.store import AgentRecord, CapacityFilter, CapacityMatch, RegistryIndex
from tests.unit.api.records import NOW, gpu, record


def test_render_fleet_totals_escaping_and_cap() -> None:
    rows = [
        record(
            'we"ird\\host',
            gpus=(gpu(0, 10.0), gpu(1, 2.0, error="Xid")),
            cores=8,
            gpu_probe_failures_total=2,
            spool_dropped_total=0,
        ),
        record("b", gpus=(gpu(0, 4.0),), cores=4),
        record("c", status="offline", pool="cpu"),
    ]
    text, omitted = render_fleet(rows, now=NOW.timestamp() + 3, per_agent_limit=2)
    lines = text.decode().splitlines()
    assert 'fleetpulse_agents{pool="render",status="online"} 2' in lines
    assert 'fleetpulse_agents{pool="cpu",status="offline"} 1' in lines
    assert 'fleetpulse_agents{pool="cpu",status="online"} 0' in lines
    assert (
        f'fleetpulse_capacity_gpu_vram_free_bytes{{pool="render",gpu_type="RTX"}} {int(14 * GIB)}'
        in lines
    )
    assert 'fleetpulse_capacity_gpus{pool="render",gpu_type="RTX"} 2' in lines
    assert 'fleetpulse_capacity_cpu_available_cores{pool="render"} 12' in lines
    assert omitted == 1
    assert "fleetpulse_metrics_agents_omitted 1" in lines
    assert sum(1 for line in lines if line.startswith("fleetpulse_agent_up{")) == 2
    assert any('hostname="we\\"ird\\\\host"' in line for line in lines)
    assert any(
        line.startswith("fleetpulse_agent_heartbeat_age_seconds{") and line.endswith(" 3")
        for line in lines
    )


def test_token_compare_checks_every_token() -> None:
    assert token_matches(b"b", [b"a", b"b"])
    assert not token_matches(b"c", [b"a", b"b"])
    assert not token_matches(b"", [])


def test_spliced_rows_equal_the_struct_encoding() -> None:
    index = RegistryIndex()
    index.apply([record("a", gpus=(gpu(0, 8.0), gpu(1, 3.0))), record("b", sampled_ago_s=None)])
    matches = index.query(CapacityFilter(min_gpu_vram_gb=0), NOW.timestamp())
    cache = RowCache(max_entries=1)
    now = NOW.timestamp() + 10
    for _ in range(2):  # second pass from the cache (bounded: cleared when full)
        body = cache.capacity_list(matches, as_of=NOW, now=now)
        decoded = msgspec.json.decode(body, type=CapacityList)
        expected = CapacityList(items=[capacity_of(m, now) for m in matches], count=2, as_of=NOW)
        assert decoded == expected
    assert decoded.items[0].sample_age_s == 11.0
    assert decoded.items[1].sample_age_s is None


def test_bucket_parsing_and_automatic_width() -> None:
    assert parse_bucket("90") == timedelta(seconds=90)
    assert parse_bucket("5m") == timedelta(minutes=5)
    assert parse_bucket("2h") == timedelta(hours=2)
    assert parse_bucket("1d") == timedelta(days=1)
    assert _auto_bucket(timedelta(hours=1), 10_000) == timedelta(seconds=10)
    assert _auto_bucket(timedelta(days=30), 10_000) == timedelta(hours=3)
    assert _auto_bucket(timedelta(days=3650), 10_000) == timedelta(seconds=876_000)


def test_fleet_table_online_first_and_pool_summary() -> None:
    rows = [
        {
            "hostname": "off",
            "pool_name": "cpu",
            "status": "offline",
            "sample_age_s": None,
            "cpu_available_cores": 8,
            "cpu_cores": 8,
            "mem_available_gb": 1.0,
            "mem_total_gb": 2.0,
            "gpu_type": "none",
            "gpu_count": 0,
            "gpu_vram_available_gb": 0.0,
            "reliability_30d": None,
        },
        {
            "hostname": "on",
            "pool_name": "gpu",
            "status": "online",
            "sample_age_s": 3.2,
            "cpu_available_cores": 2,
            "cpu_cores": 8,
            "mem_available_gb": 1.0,
            "mem_total_gb": 2.0,
            "gpu_type": "L4",
            "gpu_count": 1,
            "gpu_vram_available_gb": 20.0,
            "reliability_30d": 0.995,
        },
    ]
    out = io.StringIO()
    Console(file=out, width=160).print(fleet_table(rows))
    text = out.getvalue()
    assert text.index("on ") < text.index("off")
    assert "99.5%" in text
    assert pool_summary(rows) == "pools: cpu 0/1 online, gpu 1/1 online"
    assert pool_summary([]) == "pools: none"


def test_row_cache_reuses_rows_only_while_record_and_reliability_hold(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cache = RowCache()
    now = NOW.timestamp() + 10
    encoded: list[str] = []
    encode = RowCache._encode

    def counting(record: AgentRecord, reliability: float | None) -> bytes:
        encoded.append(record.hostname)
        return encode(record, reliability)

    monkeypatch.setattr(RowCache, "_encode", staticmethod(counting))

    def answer(match: CapacityMatch) -> dict[str, object]:
        items = msgspec.json.decode(cache.capacity_list([match], as_of=NOW, now=now))["items"]
        item: dict[str, object] = items[0]
        assert item == msgspec.json.decode(msgspec.json.encode(capacity_of(match, now)))
        return item

    first = CapacityMatch(record("a", cores=8), (), 0.5)
    assert answer(first)["cpu_cores"] == 8
    assert answer(first)["sample_age_s"] == 11.0  # the very same record: cached row and time
    assert encoded == ["a"]
    # Another object (the index holds one per write) is encoded again, to the same row.
    same_write = CapacityMatch(record("a", cores=8), (), 0.5)
    assert answer(same_write)["sample_age_s"] == 11.0
    assert encoded == ["a", "a"]
    # A newer write is encoded again.
    newer = CapacityMatch(record("a", cores=12, updated=NOW + timedelta(seconds=1)), (), 0.5)
    assert answer(newer)["cpu_cores"] == 12
    # So is a changed reliability score.
    rescored = CapacityMatch(newer.record, (), 0.9)
    assert answer(rescored)["reliability_30d"] == 0.9
    assert len(encoded) == 4


GOLDEN_ROW = (
    b'{"items":[{"sample_age_s":3.500,"matching_gpus":[0],'
    b'"agent_id":"4f3f2898-69e3-5a0d-820a-c4e87987dbce","hostname":"a","pool_name":"render",'
    b'"status":"online","status_changed_at":"2026-11-24T04:00:00Z",'
    b'"first_seen_at":"2026-11-23T04:00:00Z","last_heartbeat_at":"2026-11-24T04:00:00Z",'
    b'"last_sampled_at":"2026-11-24T03:59:59Z","agent_version":"0.1.0","work_state":"idle",'
    b'"cpu_cores":8,"cpu_available_cores":8,"cpu_load_1m":0.0,"mem_total_gb":32.0,'
    b'"mem_available_gb":16.0,"gpu_type":"RTX","gpu_count":2,"gpu_vram_total_gb":48.0,'
    b'"gpu_vram_available_gb":8.0,"gpus":[{"index":0,"uuid":"","name":"RTX",'
    b'"vram_total_gb":24.0,"vram_free_gb":8.0,"util_pct":null,"temp_c":null,"power_w":null,'
    b'"error":null},{"index":1,"uuid":"","name":"RTX","vram_total_gb":24.0,"vram_free_gb":3.0,'
    b'"util_pct":null,"temp_c":null,"power_w":null,"error":"Xid"}],"errors":[],'
    b'"reliability_30d":0.25},{"sample_age_s":null,"matching_gpus":[]'
)


def test_capacity_answer_bytes_are_pinned() -> None:
    """Byte for byte what the API has answered so far (field order, three-decimal ages)."""
    matches = [
        CapacityMatch(record("a", gpus=(gpu(0, 8.0), gpu(1, 3.0, error="Xid"))), (0,), 0.25),
        CapacityMatch(record("b", sampled_ago_s=None), (), None),
    ]
    cache = RowCache()
    for as_of in (NOW, NOW + timedelta(seconds=1), NOW + timedelta(seconds=1)):
        body = cache.capacity_list(matches, as_of=as_of, now=NOW.timestamp() + 2.5)
        assert body.startswith(GOLDEN_ROW)
        assert body.endswith(b'"count":2,"as_of":%b}' % msgspec.json.encode(as_of))
    sampled_only = cache.capacity_list(matches[:1], as_of=NOW, now=NOW.timestamp() + 2.5)
    first_row = GOLDEN_ROW[: GOLDEN_ROW.index(b',{"sample_age_s":null')]
    assert sampled_only == first_row + b'],"count":1,"as_of":"2026-11-24T04:00:00Z"}'
    empty = cache.capacity_list([], as_of=NOW, now=NOW.timestamp())
    assert empty == b'{"items":[],"count":0,"as_of":"2026-11-24T04:00:00Z"}'


def test_per_agent_series_follow_agent_id_order() -> None:
    rows = [record(f"host{n}") for n in range(20)]
    text, _ = render_fleet(rows, now=NOW.timestamp(), per_agent_limit=20)
    ids = [
        line.split('agent_id="')[1].split('"')[0]
        for line in text.decode().splitlines()
        if line.startswith("fleetpulse_agent_up{")
    ]
    assert ids == [str(r.agent_id) for r in sorted(rows, key=lambda r: r.agent_id)]


def test_a_list_served_again_keeps_its_rows_and_recomputes_its_ages(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("fleetpulse.api.rows.MAX_LISTS", 2)
    cache = RowCache()
    matches = [
        CapacityMatch(record("a", gpus=(gpu(0, 8.0),)), (0,), None),
        CapacityMatch(record("b", sampled_ago_s=30), (), 0.5),
    ]
    for later in (0.0, 2.25, 7.5):
        now = NOW.timestamp() + later
        body = cache.capacity_list(matches, as_of=NOW, now=now)
        expected = CapacityList(items=[capacity_of(m, now) for m in matches], count=2, as_of=NOW)
        assert msgspec.json.decode(body, type=CapacityList) == expected
    assert [i.sample_age_s for i in expected.items] == [8.5, 37.5]
    for n in range(3):  # more lists than kept: the first is built again, to the same bytes
        cache.capacity_list([matches[n % 2]], as_of=NOW, now=NOW.timestamp())
    assert cache.capacity_list(matches, as_of=NOW, now=NOW.timestamp() + 7.5) == body
    monkeypatch.setattr("fleetpulse.api.rows.MAX_LISTS", 100)
    monkeypatch.setattr("fleetpulse.api.rows.MAX_LIST_ROWS", 3)  # and more rows than kept
    lists = [[matches[0]], [matches[1]], list(matches)]
    for listed in lists:
        cache.capacity_list(listed, as_of=NOW, now=NOW.timestamp())
    assert cache._list_rows <= 3
    assert all(len(held[0]) for held in cache._lists.values())
    assert cache.capacity_list(lists[0], as_of=NOW, now=NOW.timestamp()).startswith(GOLDEN_ROW[:10])
