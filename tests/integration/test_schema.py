"""The schema on a real TimescaleDB: hypertables, indexes, idempotent migrations."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from psycopg import sql

from fleetpulse import store
from fleetpulse.config import DatabaseSettings
from fleetpulse.errors import ServiceUnavailable
from fleetpulse.store.rows import columns
from tests.conftest import RUN_ID, with_database


def test_hypertables_exist_on_timescaledb(db_url: str) -> None:
    with psycopg.connect(db_url) as conn:
        rows = conn.execute(
            "SELECT hypertable_name FROM timescaledb_information.hypertables ORDER BY 1"
        ).fetchall()
    assert [r[0] for r in rows] == ["agent_samples", "gpu_samples"]


def test_capacity_and_heartbeat_indexes_exist_and_none_mentions_status(db_url: str) -> None:
    """0003: a status change must not need an index entry (so a sweep's updates are HOT)."""
    with psycopg.connect(db_url) as conn:
        rows = conn.execute(
            "SELECT indexname, indexdef FROM pg_indexes"
            " WHERE tablename IN ('agent_registry', 'agent_status_events')"
        ).fetchall()
        options = conn.execute(
            "SELECT reloptions FROM pg_class WHERE relname = 'agent_registry'"
        ).fetchone()
    defs = dict(rows)
    assert "gpu_vram_available_gb DESC" in defs["agent_registry_capacity"]
    assert "(last_heartbeat_at)" in defs["agent_registry_heartbeat"]
    assert "agent_registry_silence" not in defs
    registry = [d for name, d in defs.items() if name.startswith("agent_registry")]
    assert not [d for d in registry if "status" in d]
    assert "USING brin (at)" in defs["agent_status_events_at"]
    assert options == (["fillfactor=90"],)


async def test_a_sweep_changes_rows_in_place_and_only_in_its_slice(db_url: str) -> None:
    """The detector's sweep: heap-only updates, one event each, only heartbeats in
    [since, cutoff) looked at, ``updated_at`` untouched."""
    far = datetime(2101, 1, 1, tzinfo=UTC)  # clear of every other test's agents
    ids = [uuid.uuid4() for _ in range(4)]
    heard = [far, far + timedelta(seconds=1), far - timedelta(seconds=30), far]
    with psycopg.connect(db_url, autocommit=True) as conn:
        for n, (agent, at) in enumerate(zip(ids, heard, strict=True)):
            conn.execute(
                "INSERT INTO agent_registry (agent_id, hostname, pool_name, status,"
                " status_changed_at, first_seen_at, last_heartbeat_at, agent_version,"
                " updated_at) VALUES (%s, %s, 'cpu', %s, %s, %s, %s, '0.1.0', %s)",
                (agent, f"slice-{n}", "offline" if n == 3 else "online", at, at, at, at),
            )
    conn2 = await store.connect(db_url, autocommit=False)
    async with conn2:
        marked = await store.sweep_silent(
            conn2,
            now=far + timedelta(seconds=90.5),
            offline_after_s=90,
            since=far - timedelta(seconds=10),
        )
        cur = await conn2.execute(
            "SELECT pg_stat_get_xact_tuples_updated('agent_registry'::regclass),"
            " pg_stat_get_xact_tuples_hot_updated('agent_registry'::regclass)"
        )
        assert await cur.fetchone() == (1, 1)  # one row, changed in place
        await conn2.commit()
    assert marked == 1
    with psycopg.connect(db_url) as conn:
        rows = dict(
            conn.execute(
                "SELECT hostname, status FROM agent_registry WHERE agent_id = ANY(%s)", (ids,)
            ).fetchall()
        )
        events = conn.execute(
            "SELECT agent_id, reason FROM agent_status_events WHERE agent_id = ANY(%s)", (ids,)
        ).fetchall()
        updated = conn.execute(
            "SELECT updated_at FROM agent_registry WHERE agent_id = %s", (ids[0],)
        ).fetchone()
    # slice-1 is not silent yet; slice-2 is, but before the slice (a full sweep's job)
    assert rows == {
        "slice-0": "offline",
        "slice-1": "online",
        "slice-2": "online",
        "slice-3": "offline",
    }
    assert events == [(ids[0], "silence")]
    assert updated == (far,)


def test_status_transitions_write_no_per_row_checks(db_url: str) -> None:
    """0002: a sweep's events run no foreign-key lookup and its rows feed no unused index."""
    with psycopg.connect(db_url) as conn:
        fks = conn.execute(
            "SELECT conname FROM pg_constraint"
            " WHERE conrelid = 'agent_status_events'::regclass AND contype = 'f'"
        ).fetchall()
        indexes = conn.execute(
            "SELECT indexname FROM pg_indexes WHERE tablename = 'agent_registry'"
        ).fetchall()
    assert fks == []
    assert "agent_registry_pool" not in {name for (name,) in indexes}


def test_upgrade_is_idempotent_and_downgrade_reverses(db_admin_url: str, worker_id: str) -> None:
    url = with_database(db_admin_url, f"fleetpulse_test_migrate_{RUN_ID}_{worker_id}")
    with psycopg.connect(db_admin_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(url.rsplit("/", 1)[1])
            )
        )
    try:
        assert store.ensure_database(url) is True
        assert store.ensure_database(url) is False
        store.upgrade(url)
        store.upgrade(url)
        assert store.current_revision(url) == store.head_revision()
        store.downgrade(url, "base")
        assert store.current_revision(url) is None
        with psycopg.connect(url) as conn:
            left = conn.execute(
                "SELECT count(*) FROM pg_tables"
                " WHERE tablename LIKE 'agent_%' OR tablename = 'gpu_samples'"
            ).fetchone()
        assert left == (0,)
        store.upgrade(url)
        assert store.current_revision(url) == store.head_revision()
    finally:
        with psycopg.connect(db_admin_url, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                    sql.Identifier(url.rsplit("/", 1)[1])
                )
            )


def test_duplicate_sample_violates_uniqueness(db_url: str) -> None:
    insert = """INSERT INTO agent_samples (agent_id, sampled_at, received_at, seq, hostname,
        pool_name, work_state, cpu_load_1m, cpu_load_5m, cpu_load_15m, cpu_cores,
        cpu_available_cores, mem_total_gb, mem_available_gb, gpu_type, gpu_count,
        gpu_vram_total_gb, gpu_vram_available_gb)
        VALUES ('3f0c1a7e-8d4b-4c2a-9f1e-2b3c4d5e6f70', '2026-11-24T04:00:00Z', now(), 1, 'h',
        'cpu', 'idle', 0, 0, 0, 4, 4, 8, 8, 'none', 0, 0, 0)"""
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(insert)
        with pytest.raises(psycopg.errors.UniqueViolation):
            conn.execute(insert)


async def test_database_detects_apache_or_timescale_edition(db_url: str) -> None:
    async with store.Database(DatabaseSettings(url=db_url)) as db:
        assert db.state == "open"
        assert db.edition in {"apache", "timescale"}
        async with db.connection() as conn:
            cur = await conn.execute("SHOW timescaledb.license")
            row = await cur.fetchone()
        assert row is not None
        assert db.edition == ("timescale" if row[0] == "timescale" else "apache")
    assert db.state == "closed"


async def test_unreachable_database_is_one_clear_line() -> None:
    settings = DatabaseSettings(
        url="postgresql://postgres:pw@127.0.0.1:1/fleetpulse", connect_timeout_s=1
    )
    with pytest.raises(ServiceUnavailable) as info:
        await store.Database(settings).open()
    message = str(info.value)
    assert "127.0.0.1:1" in message
    assert "pw" not in message
    assert "make services" in message
    assert "\n" not in message


def column_types(db_url: str, table: str) -> dict[str, str]:
    with psycopg.connect(db_url) as conn:
        rows = conn.execute(
            "SELECT column_name, udt_name FROM information_schema.columns WHERE table_name = %s",
            (table,),
        ).fetchall()
    return dict(rows)


@pytest.mark.parametrize(
    ("row", "table"),
    [
        (store.SampleRow, "agent_samples"),
        (store.GpuRow, "gpu_samples"),
        (store.EventRow, "agent_status_events"),
    ],
)
def test_the_row_declarations_match_the_migrated_tables(db_url: str, row: type, table: str) -> None:
    """The write path derives every column list and type from the row classes; the
    migrations state the tables once more: the two must name the same columns and types."""
    found = column_types(db_url, table)
    arrays = {"text[]": "_text"}
    for name, pg in columns(row):
        landed = pg.cast or pg.name
        assert found.get(name) == arrays.get(landed, landed), (table, name)


def test_a_registry_row_field_lands_on_a_registry_column_of_its_type(db_url: str) -> None:
    found = column_types(db_url, "agent_registry")
    target = {
        "first_received_at": "first_seen_at",
        "received_at": "last_heartbeat_at",
        "sampled_at": "last_sampled_at",
        "seq": "last_seq",
    }
    for name, pg in columns(store.RegistryRow):
        assert found.get(target.get(name, name)) == (pg.cast or pg.name), name
