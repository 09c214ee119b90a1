"""The row cache: spliced capacity rows, reuse rules and the pinned answer bytes."""

from __future__ import annotations

from datetime import timedelta

import msgspec
import pytest

from fleetpulse.api.rows import RowCache, encode_without
from fleetpulse.api.schemas import CapacityList, capacity_of
from fleetpulse.store import AgentRecord, Allotment, CapacityFilter, CapacityMatch, RegistryIndex
from tests.unit.api.records import NOW, gpu, record


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


def test_row_cache_reuses_rows_only_while_record_and_reliability_hold(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cache = RowCache()
    now = NOW.timestamp() + 10
    encoded: list[str] = []
    encode = RowCache._encode

    def counting(
        record: AgentRecord, reliability: float | None, allotment: Allotment | None
    ) -> bytes:
        encoded.append(record.hostname)
        return encode(record, reliability, allotment)

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


# The rows cut ``sample_age_s`` out by field, not by searching the encoded bytes.
class First(msgspec.Struct):
    sample_age_s: float | None
    hostname: str
    gpus: list[int]


class Middle(msgspec.Struct):
    hostname: str
    sample_age_s: float | None
    gpus: list[int]


class Last(msgspec.Struct):
    hostname: str
    gpus: list[int]
    sample_age_s: float | None


@pytest.mark.parametrize("shape", [First, Middle, Last])
def test_a_field_is_left_out_wherever_it_is_declared(shape: type[msgspec.Struct]) -> None:
    # A value that spells the key, and commas, must not confuse it either.
    row = shape(hostname='x","sample_age_s":1,', gpus=[1, 2], sample_age_s=0.0)
    encoded = encode_without(row, "sample_age_s")
    assert msgspec.json.decode(encoded) == {"hostname": 'x","sample_age_s":1,', "gpus": [1, 2]}
    whole = msgspec.json.encode(row)
    order = [f for f in shape.__struct_fields__ if f != "sample_age_s"]
    assert list(msgspec.json.decode(encoded)) == order
    # the very bytes the struct's own encoding has for the other fields
    rest = {k: v for k, v in msgspec.json.decode(whole).items() if k != "sample_age_s"}
    assert encoded == msgspec.json.encode(rest)
