"""Capacity answers on a real TimescaleDB: every filter, online only, numbers equal the database."""

from __future__ import annotations

import asyncio
import random
import threading
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from fleetpulse import store
from fleetpulse.config import DatabaseSettings
from tests.fixtures.api import GpuSeed, seed_agent, seed_profiles
from tests.fixtures.capacity_reference import sql_capacity

CAP = "/api/v1/agents/available-capacity"


def hosts(body: dict[str, Any]) -> list[str]:
    return [row["hostname"] for row in body["items"]]


async def test_min_vram_4gb_returns_only_the_high_vram_agent(conn, client_for) -> None:
    ids = seed_profiles(conn)
    async with client_for() as client:
        body = (await client.get(CAP, params={"min_gpu_vram_gb": 4})).json()
    assert hosts(body) == ["agent1"]
    assert body["count"] == 1
    row = body["items"][0]
    assert row["agent_id"] == str(ids["agent1"])
    assert row["gpu_vram_available_gb"] == 8.0
    assert row["matching_gpus"] == [0]


async def test_mixed_capabilities_sorted_by_vram_then_cores(conn, client_for) -> None:
    seed_profiles(conn)
    async with client_for() as client:
        everyone = (await client.get(CAP)).json()
        cores16 = (await client.get(CAP, params={"min_cpu_cores": 16})).json()
        cores8 = (await client.get(CAP, params={"min_cpu_cores": 8})).json()
        any_gpu = (await client.get(CAP, params={"min_gpu_count": 1})).json()
    assert hosts(everyone) == ["agent1", "agent2", "agent3"]
    assert hosts(cores16) == ["agent1"]
    assert hosts(cores8) == ["agent1", "agent3"]
    assert hosts(any_gpu) == ["agent1", "agent2"]
    assert everyone["items"][2]["gpu_type"] == "none"
    assert everyone["items"][2]["matching_gpus"] == []


async def test_offline_agents_are_excluded(conn, client_for) -> None:
    seed_profiles(conn)
    seed_agent(conn, hostname="gone", status="offline", cpu_cores=64, gpus=(GpuSeed(80, 80),))
    async with client_for() as client:
        body = (await client.get(CAP)).json()
        offline = (await client.get("/api/v1/agents", params={"status": "offline"})).json()
    assert "gone" not in hosts(body)
    assert hosts(offline) == ["gone"]


async def test_memory_pool_and_type_filters_one_by_one(conn, client_for) -> None:
    seed_agent(conn, hostname="big-mem", mem_available_gb=200, mem_total_gb=256, pool="train")
    seed_agent(conn, hostname="l4", gpus=(GpuSeed(24, 20, name="NVIDIA L4"),), pool="infer")
    seed_agent(conn, hostname="4090", gpus=(GpuSeed(24, 22),), pool="render")
    async with client_for() as client:
        mem = (await client.get(CAP, params={"min_mem_gb": 100})).json()
        pool = (await client.get(CAP, params={"pool": "infer"})).json()
        kind = (await client.get(CAP, params={"gpu_type": "NVIDIA L4"})).json()
        nobody = (await client.get(CAP, params={"pool": "no-such-pool"})).json()
        no_type = (await client.get(CAP, params={"gpu_type": "NVIDIA H100"})).json()
    assert hosts(mem) == ["big-mem"]
    assert hosts(pool) == ["l4"]
    assert hosts(kind) == ["l4"]
    assert nobody == {"items": [], "count": 0, "as_of": nobody["as_of"]}
    assert no_type["count"] == 0


async def test_gpu_with_error_is_not_capacity_and_gpu_count_is_per_device(conn, client_for) -> None:
    seed_agent(
        conn,
        hostname="two-good",
        gpus=(GpuSeed(24, 16), GpuSeed(24, 12)),
    )
    seed_agent(
        conn,
        hostname="one-broken",
        gpus=(GpuSeed(48, 40, error="gpu 0: Xid 79"), GpuSeed(24, 10)),
    )
    async with client_for() as client:
        two = (await client.get(CAP, params={"min_gpu_vram_gb": 10, "min_gpu_count": 2})).json()
        big = (await client.get(CAP, params={"min_gpu_vram_gb": 30})).json()
        ten = (await client.get(CAP, params={"min_gpu_vram_gb": 10})).json()
    assert hosts(two) == ["two-good"]
    assert two["items"][0]["matching_gpus"] == [0, 1]
    assert big["count"] == 0  # the 40 GB free sit on a GPU that reports an error
    by_host = {row["hostname"]: row["matching_gpus"] for row in ten["items"]}
    assert by_host == {"two-good": [0, 1], "one-broken": [1]}


async def test_sample_age_filter_and_reported_age(conn, client_for) -> None:
    now = datetime.now(UTC)
    seed_agent(conn, hostname="fresh", sampled_at=now - timedelta(seconds=5))
    seed_agent(conn, hostname="stale", sampled_at=now - timedelta(seconds=600))
    async with client_for() as client:
        body = (await client.get(CAP, params={"max_sample_age_s": 60})).json()
        both = (await client.get(CAP)).json()
    assert hosts(body) == ["fresh"]
    ages = {row["hostname"]: row["sample_age_s"] for row in both["items"]}
    assert 4 <= ages["fresh"] < 60
    assert 599 <= ages["stale"] < 700


async def test_filters_combined(conn, client_for) -> None:
    seed_agent(conn, hostname="match", pool="gpu", cpu_cores=32, gpus=(GpuSeed(24, 20),))
    seed_agent(conn, hostname="few-cores", pool="gpu", cpu_cores=4, gpus=(GpuSeed(24, 20),))
    seed_agent(conn, hostname="other-pool", pool="cpu", cpu_cores=32, gpus=(GpuSeed(24, 20),))
    seed_agent(conn, hostname="small-gpu", pool="gpu", cpu_cores=32, gpus=(GpuSeed(8, 6),))
    params = {
        "min_gpu_vram_gb": 16,
        "min_cpu_cores": 16,
        "min_mem_gb": 16,
        "pool": "gpu",
        "gpu_type": "NVIDIA GeForce RTX 4090",
        "max_sample_age_s": 300,
        "limit": 5,
    }
    async with client_for() as client:
        body = (await client.get(CAP, params=params)).json()
    assert hosts(body) == ["match"]


async def test_answers_equal_the_database(conn, client_for, db_url: str) -> None:
    ids = seed_profiles(conn)
    async with client_for() as client:
        rows = (await client.get(CAP)).json()["items"]
        single = (await client.get(f"/api/v1/agents/{ids['agent2']}/capacity")).json()
    columns = (
        "hostname, pool_name, status, cpu_cores, cpu_available_cores, cpu_load_1m,"
        " mem_total_gb, mem_available_gb, gpu_type, gpu_count, gpu_vram_total_gb,"
        " gpu_vram_available_gb, resource_metrics->'gpus'"
    )
    names = [c.strip().split("->")[0] for c in columns.split(",")]
    names[-1] = "gpus"
    for row in [*rows, single]:
        db_row = conn.execute(
            f"SELECT {columns} FROM agent_registry WHERE agent_id = %s", (row["agent_id"],)
        ).fetchone()
        assert db_row is not None
        assert {n: row[n] for n in names} == dict(zip(names, db_row, strict=True))
        sampled = conn.execute(
            "SELECT last_heartbeat_at FROM agent_registry WHERE agent_id = %s",
            (row["agent_id"],),
        ).fetchone()
        assert sampled is not None
        assert datetime.fromisoformat(row["last_heartbeat_at"]) == sampled[0]


async def test_index_answers_equal_sql_on_a_random_fleet(conn, client_for, db_url: str) -> None:
    rng = random.Random(7)
    kinds = ["NVIDIA GeForce RTX 4090", "NVIDIA L4", "NVIDIA A100 80GB"]
    now = datetime.now(UTC)
    for n in range(150):
        gpus = tuple(
            GpuSeed(
                24,
                rng.choice([0.5, 2, 4, 8, 12, 20]),
                name=rng.choice(kinds),
                error="probe failed" if rng.random() < 0.05 else None,
            )
            for _ in range(rng.choice([0, 1, 1, 2, 4]))
        )
        seed_agent(
            conn,
            hostname=f"h{n}",
            pool=rng.choice(["render", "train", "cpu"]),
            status="online" if rng.random() < 0.85 else "offline",
            cpu_cores=rng.choice([4, 8, 16, 32]),
            cpu_load_1m=rng.choice([0.0, 1.5, 3.0, 12.0]),
            mem_available_gb=rng.choice([4.0, 16.0, 48.0]),
            gpus=gpus,
            sampled_at=now - timedelta(seconds=rng.choice([1, 30, 400])),
            events=False,
        )
    queries: list[dict[str, Any]] = [
        {},
        {"min_gpu_vram_gb": 8},
        {"min_gpu_vram_gb": 4, "min_gpu_count": 2},
        {"gpu_type": "NVIDIA L4", "min_cpu_cores": 8},
        {"pool": "train", "min_mem_gb": 16, "max_sample_age_s": 120},
        {"min_gpu_vram_gb": 100},
        {"min_cpu_cores": 30, "limit": 3},
    ]
    async with (
        client_for() as client,
        store.Database(DatabaseSettings(url=db_url)) as db,
        db.connection() as c,
    ):
        for q in queries:
            api = [r["agent_id"] for r in (await client.get(CAP, params=q)).json()["items"]]
            sql = await sql_capacity(c, now=datetime.now(UTC), **q)
            assert api == [str(a) for a in sql], q


async def test_index_follows_registry_writes(conn, client_for) -> None:
    agent = seed_agent(conn, hostname="changing", gpus=(GpuSeed(24, 2),))
    async with client_for() as client:
        assert (await client.get(CAP, params={"min_gpu_vram_gb": 10})).json()["count"] == 0
        conn.execute(
            "UPDATE agent_registry SET gpu_vram_available_gb = 20,"
            " resource_metrics = jsonb_set(resource_metrics, '{gpus,0,vram_free_gb}', '20'),"
            " updated_at = now() WHERE agent_id = %s",
            (agent,),
        )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 5
        while True:
            body = (await client.get(CAP, params={"min_gpu_vram_gb": 10})).json()
            if body["count"] == 1 or loop.time() > deadline:
                break
            await asyncio.sleep(0.02)
        assert hosts(body) == ["changing"]
        assert body["items"][0]["gpu_vram_available_gb"] == 20


async def test_a_full_read_is_built_off_the_event_loop_and_replaces_the_index_whole(
    conn, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for n in range(3):
        seed_agent(conn, hostname=f"full-{n}", gpus=(GpuSeed(24, 10 + n),))
    loop_thread = threading.current_thread()
    applied_in: list[threading.Thread] = []
    apply = store.RegistryIndex.apply

    def spy(index: store.RegistryIndex, records: Any) -> int:
        applied_in.append(threading.current_thread())
        return apply(index, records)

    monkeypatch.setattr(store.RegistryIndex, "apply", spy)
    async with store.Database(DatabaseSettings(url=db_url)) as db:
        follower = store.RegistryFollower(db, store.RegistryIndex())
        assert await follower.refresh(full=True) == 3
        assert applied_in
        assert loop_thread not in applied_in
        index = follower.index  # a full read serves a new index, built in the thread
        version = index.version
        top = index.query(store.CapacityFilter(min_gpu_vram_gb=11))
        assert [m.record.hostname for m in top] == ["full-2", "full-1"]
        conn.execute("DELETE FROM agent_registry WHERE hostname = 'full-2'")
        seed_agent(conn, hostname="full-3", gpus=(GpuSeed(24, 20),))
        applied_in.clear()
        await follower.refresh()  # a few rows: applied in place, on the loop
        assert applied_in == [loop_thread]
        await follower.refresh(full=True)  # drops the deleted agent
        assert follower.index is not index
        index = follower.index
        assert index.version > version
        top = index.query(store.CapacityFilter(min_gpu_vram_gb=11))
        assert [m.record.hostname for m in top] == ["full-3", "full-1"]
        assert index.as_of is not None


async def test_per_agent_capacity_any_known_agent_404_for_unknown(conn, client_for) -> None:
    offline = seed_agent(conn, hostname="asleep", status="offline", gpus=(GpuSeed(24, 20),))
    async with client_for() as client:
        found = await client.get(f"/api/v1/agents/{offline}/capacity")
        agent = await client.get(f"/api/v1/agents/{offline}")
        missing = await client.get(f"/api/v1/agents/{uuid.uuid4()}/capacity")
        missing_agent = await client.get(f"/api/v1/agents/{uuid.uuid4()}")
        malformed = await client.get("/api/v1/agents/not-a-uuid/capacity")
    assert found.status_code == 200
    assert found.json()["status"] == "offline"
    assert found.json()["matching_gpus"] == [0]
    assert agent.json()["hostname"] == "asleep"
    assert missing.status_code == 404
    assert missing.json()["status_code"] == 404
    assert missing_agent.status_code == 404
    assert malformed.status_code == 400
    assert malformed.json()["status_code"] == 400


async def test_agent_list_filters_and_pages(conn, client_for) -> None:
    for n in range(5):
        seed_agent(conn, hostname=f"r{n}", pool="render")
    seed_agent(conn, hostname="c0", pool="cpu", status="offline")
    async with client_for() as client:
        render = (await client.get("/api/v1/agents", params={"pool": "render"})).json()
        first = (await client.get("/api/v1/agents", params={"limit": 4})).json()
        rest = (
            await client.get("/api/v1/agents", params={"limit": 4, "after": first["next_after"]})
        ).json()
    assert sorted(hosts(render)) == [f"r{n}" for n in range(5)]
    assert first["count"] == 4
    assert rest["count"] == 2
    assert rest["next_after"] is None
    assert set(hosts(first)) | set(hosts(rest)) == {"r0", "r1", "r2", "r3", "r4", "c0"}


async def test_reliability_30d_and_min_reliability(conn, client_for) -> None:
    now = datetime.now(UTC)
    steady = seed_agent(conn, hostname="steady", first_seen_at=now - timedelta(days=40))
    flaky = seed_agent(conn, hostname="flaky", events=False, first_seen_at=now - timedelta(days=10))
    conn.execute("DELETE FROM agent_status_events WHERE agent_id = %s", (flaky,))
    from tests.fixtures.api import insert_event

    insert_event(
        conn,
        flaky,
        at=now - timedelta(days=10),
        from_status=None,
        to_status="online",
        reason="first_heartbeat",
    )
    insert_event(
        conn,
        flaky,
        at=now - timedelta(days=5),
        from_status="online",
        to_status="offline",
        reason="silence",
    )
    insert_event(
        conn,
        flaky,
        at=now - timedelta(days=1),
        from_status="offline",
        to_status="online",
        reason="heartbeat",
    )
    unknown = seed_agent(conn, hostname="unknown", events=False)
    async with client_for() as client:
        rows = {r["hostname"]: r for r in (await client.get(CAP)).json()["items"]}
        reliable = (await client.get(CAP, params={"min_reliability": 0.9})).json()
        one = (await client.get(f"/api/v1/agents/{unknown}")).json()
    assert rows["steady"]["reliability_30d"] == 1.0
    assert rows["flaky"]["reliability_30d"] == pytest.approx(0.6, abs=0.001)
    assert rows["unknown"]["reliability_30d"] is None
    assert one["reliability_30d"] is None
    assert hosts(reliable) == ["steady"]
    assert steady  # seeded with its first_heartbeat 40 days ago: online the whole window


def test_store_registry_read_skips_malformed_jsonb(conn) -> None:
    agent = seed_agent(conn, hostname="odd")
    conn.execute(
        'UPDATE agent_registry SET resource_metrics = \'{"gpus": "nope"}\' WHERE agent_id = %s',
        (agent,),
    )
    row = conn.execute(
        f"SELECT {store.queries.REGISTRY_COLUMNS} FROM agent_registry"  # type: ignore[attr-defined]
    ).fetchone()
    assert row is not None
    assert store.queries.record_from_row(row).gpus == ()  # type: ignore[attr-defined]


_ = psycopg


async def test_an_incremental_read_learns_of_a_sweep_from_its_silence_events(
    db_url: str,
) -> None:
    """A sweep leaves updated_at alone (its updates are heap-only): the follower must still
    drop the agent from capacity answers at its next read."""
    far = datetime(2102, 1, 1, tzinfo=UTC)  # a slice of heartbeats no other test uses
    with psycopg.connect(db_url, autocommit=True) as conn:
        agent = seed_agent(conn, hostname="swept-1", gpus=(GpuSeed(24, 20),))
        conn.execute(
            "UPDATE agent_registry SET last_heartbeat_at = %s WHERE agent_id = %s", (far, agent)
        )
    async with store.Database(DatabaseSettings(url=db_url)) as db:
        follower = store.RegistryFollower(db, store.RegistryIndex())
        await follower.refresh(full=True)
        index = follower.index
        wanted = store.CapacityFilter(min_gpu_vram_gb=19, limit=1000)
        assert agent in {m.record.agent_id for m in index.query(wanted)}
        async with db.connection() as conn:
            marked = await store.sweep_silent(
                conn,
                now=far + timedelta(seconds=91),
                offline_after_s=90,
                since=far - timedelta(seconds=1),
            )
        assert marked == 1
        assert await follower.refresh() >= 1
        record = index.get(agent)
        assert record is not None
        assert record.status == "offline"
        assert record.status_changed_at == far + timedelta(seconds=91)
        assert agent not in {m.record.agent_id for m in index.query(wanted)}
        assert await follower.refresh() == 0  # the event is read once
