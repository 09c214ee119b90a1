"""The analysis loaders and ``fleetpulse export`` against a real, seeded TimescaleDB."""

from __future__ import annotations

import uuid
from datetime import timedelta
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from fleetpulse import analysis, store
from fleetpulse.cli import main
from fleetpulse.errors import ServiceUnavailable, StoreError
from tests.fixtures.dash import SeededFleet, seed_fleet


@pytest.fixture
def fleet(db_url: str) -> SeededFleet:
    return seed_fleet(db_url, days=2, step=timedelta(minutes=10))


@pytest.mark.parametrize("engine", analysis.ENGINES)
def test_loaders_read_the_whole_history(db_url: str, fleet: SeededFleet, engine: str) -> None:
    samples = analysis.load_agent_samples(db_url, engine=engine)  # type: ignore[arg-type]
    gpus = analysis.load_gpu_samples(db_url, engine=engine)  # type: ignore[arg-type]
    events = analysis.load_status_events(db_url, engine=engine)  # type: ignore[arg-type]
    registry = analysis.load_registry(db_url, engine=engine)  # type: ignore[arg-type]
    assert samples.height == fleet.samples
    assert gpus.height == fleet.gpu_samples
    assert events.height == fleet.events
    assert registry["hostname"].to_list() == sorted(a.hostname for a in fleet.agents)
    assert samples.schema["sampled_at"] == pl.Datetime("us", "UTC")
    assert events.schema["at"] == pl.Datetime("us", "UTC")


def test_both_engines_return_the_same_frame(db_url: str, fleet: SeededFleet) -> None:
    frames = [
        analysis.load_agent_samples(db_url, since=fleet.now - timedelta(hours=6), engine=e).sort(
            "agent_id", "sampled_at"
        )
        for e in analysis.ENGINES
    ]
    assert frames[0].height > 0
    assert_frame_equal(frames[0], frames[1])


def test_time_range_is_half_open(db_url: str, fleet: SeededFleet) -> None:
    since = fleet.now - timedelta(hours=1)
    samples = analysis.load_agent_samples(db_url, since=since, until=fleet.now)
    assert samples["sampled_at"].min() == since
    assert samples["sampled_at"].max() < fleet.now


def test_reliability_of_the_seeded_fleet(db_url: str, fleet: SeededFleet) -> None:
    events = analysis.load_status_events(db_url)
    registry = analysis.load_registry(db_url)
    result = analysis.reliability(events, registry, now=fleet.now)
    share = dict(zip(result["hostname"], result["reliability"], strict=True))
    assert share["ws-render-1"] == 1.0
    assert share["ws-train-2"] == pytest.approx(1 - 3 / 48)
    assert share["ws-cpu-2"] == pytest.approx(1 - 1 / 72)  # first seen 3 days ago, 1 h off
    incidents = analysis.offline_incidents(events, until=fleet.now)
    assert incidents["hostname"].to_list() == ["ws-train-2", "ws-cpu-2"]
    assert incidents["duration_s"].to_list() == [3 * 3600, 3600]


def test_export_writes_parquet_through_the_cli(
    db_url: str, fleet: SeededFleet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("FLEETPULSE_DATABASE_URL", db_url)
    out = tmp_path / "samples.parquet"
    since = (fleet.now - timedelta(hours=12)).isoformat()
    until = fleet.now.isoformat()
    assert main(["export", "--since", since, "--until", until, "--out", str(out)]) == 0
    written = pl.read_parquet(out)
    expected = analysis.load_agent_samples(
        db_url, since=fleet.now - timedelta(hours=12), until=fleet.now
    )
    assert written.height == expected.height > 0
    assert written.columns == expected.columns
    assert f"wrote {written.height} samples of 6 agents" in capsys.readouterr().out
    assert not list(tmp_path.glob(".*partial"))


def test_export_to_an_unreachable_database_is_one_clear_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("FLEETPULSE_DATABASE_URL", "postgresql://postgres@127.0.0.1:1/nowhere")
    code = main(["export", "--since", "2026-11-01", "--out", str(tmp_path / "x.parquet")])
    assert code == 1
    err = capsys.readouterr().err
    assert "database at postgresql://postgres@127.0.0.1:1/nowhere is unreachable" in err
    assert not (tmp_path / "x.parquet").exists()


def test_a_refused_query_is_a_store_error(db_url: str) -> None:
    with pytest.raises(StoreError, match="query failed"):
        analysis.read_sql(db_url, "SELECT * FROM no_such_table")
    with pytest.raises(ServiceUnavailable):
        analysis.read_sql("postgresql://postgres@127.0.0.1:1/x", "SELECT 1", engine="adbc")


@pytest.mark.skipif(
    not hasattr(store, "fetch_reliability"), reason="the API's store.fetch_reliability not merged"
)
async def test_reliability_matches_the_api_store_query(db_url: str, fleet: SeededFleet) -> None:
    events = analysis.load_status_events(db_url)
    registry = analysis.load_registry(db_url)
    for now in (fleet.now, fleet.now - timedelta(hours=30), fleet.now - timedelta(minutes=30)):
        ours = analysis.reliability(events, registry, now=now)
        async with await store.connect(db_url) as conn:
            api = await store.fetch_reliability(conn, now=now)
        assert {uuid.UUID(a): r for a, r in zip(ours["agent_id"], ours["reliability"], strict=True)
                if r is not None} == pytest.approx(api, abs=1e-6)  # fmt: skip
