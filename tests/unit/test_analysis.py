"""The analysis computations, on DataFrames built by hand (no database)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import polars as pl
import pytest

from fleetpulse import analysis
from fleetpulse.config import Settings
from fleetpulse.errors import ConfigError

T0 = datetime(2026, 11, 1, tzinfo=UTC)
DAY = timedelta(days=1)


def at(hours: float) -> datetime:
    return T0 + timedelta(hours=hours)


def events(*rows: tuple[str, float, str | None, str, str]) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "agent_id": [r[0] for r in rows],
            "hostname": [f"ws-{r[0]}" for r in rows],
            "pool_name": ["render" for _ in rows],
            "at": [at(r[1]) for r in rows],
            "from_status": [r[2] for r in rows],
            "to_status": [r[3] for r in rows],
            "reason": [r[4] for r in rows],
        },
        schema_overrides={"at": pl.Datetime("us", "UTC")},
    )


def registry(**first_seen_hours: float) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "agent_id": list(first_seen_hours),
            "hostname": [f"ws-{a}" for a in first_seen_hours],
            "pool_name": ["render"] * len(first_seen_hours),
            "first_seen_at": [at(h) for h in first_seen_hours.values()],
        },
        schema_overrides={"first_seen_at": pl.Datetime("us", "UTC")},
    )


def test_utc_treats_naive_as_utc_and_converts_aware() -> None:
    assert analysis.utc(datetime(2026, 1, 1, 12)) == datetime(2026, 1, 1, 12, tzinfo=UTC)
    plus_two = datetime(2026, 1, 1, 14, tzinfo=timezone(timedelta(hours=2)))
    assert analysis.utc(plus_two).hour == 12
    assert analysis.utc(plus_two).tzinfo is UTC


def samples_frame() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "agent_id": ["a", "b", "a", "c"],
            "sampled_at": [at(0), at(0.5), at(1), at(0)],
            "pool_name": ["render", "render", "render", "cpu"],
            "cpu_load_1m": [4.0, 40.0, 8.0, 1.0],
            "cpu_cores": [8, 8, 8, 4],
            "mem_total_gb": [10.0, 30.0, 10.0, 8.0],
            "mem_available_gb": [5.0, 15.0, 10.0, 2.0],
        },
        schema_overrides={"sampled_at": pl.Datetime("us", "UTC")},
    )


def test_utilisation_by_pool_weighs_by_size_and_caps_load_at_cores() -> None:
    gpus = pl.DataFrame(
        {
            "agent_id": ["a", "a", "b", "a"],
            "sampled_at": [at(0), at(0), at(0.5), at(1)],
            "gpu_index": [0, 1, 0, 0],
            "vram_total_gb": [24.0, 24.0, 48.0, 24.0],
            "vram_free_gb": [24.0, 0.0, 12.0, 6.0],
            "util_pct": [0.0, 100.0, 50.0, 25.0],
        },
        schema_overrides={"sampled_at": pl.Datetime("us", "UTC")},
    )
    result = analysis.utilisation_by_pool(samples_frame(), gpus, every="1h")
    rows = {(r["bucket"], r["pool_name"]): r for r in result.iter_rows(named=True)}
    first = rows[(at(0), "render")]
    assert first["agents"] == 2
    assert first["cpu_util"] == pytest.approx((4 + 8) / 16)  # b's load 40 is capped at 8 cores
    assert first["mem_util"] == pytest.approx(1 - 20 / 40)
    assert first["gpu_vram_util"] == pytest.approx(1 - 36 / 96)
    assert first["gpu_util"] == pytest.approx(0.5)
    second = rows[(at(1), "render")]
    assert second["cpu_util"] == pytest.approx(1.0)
    assert second["gpu_vram_util"] == pytest.approx(0.75)
    cpu = rows[(at(0), "cpu")]
    assert cpu["gpu_vram_util"] is None
    assert cpu["mem_util"] == pytest.approx(0.75)
    assert result.get_column("bucket").is_sorted()


def test_utilisation_by_pool_without_gpu_samples_has_null_gpu_columns() -> None:
    result = analysis.utilisation_by_pool(samples_frame(), None, every="1d")
    assert result.height == 2
    assert result.get_column("gpu_util").null_count() == 2
    assert result.filter(pl.col("pool_name") == "render")["agents"].item() == 2


def test_free_vram_percentiles_per_gpu_type() -> None:
    gpus = pl.DataFrame(
        {
            "agent_id": ["a"] * 5 + ["b"] * 5 + ["c"],
            "gpu_index": [0] * 5 + [0, 1, 0, 1, 0] + [0],
            "name": ["A100"] * 10 + ["RTX 4090"],
            "vram_total_gb": [80.0] * 10 + [24.0],
            "vram_free_gb": [0.0, 10, 20, 30, 40, 50, 60, 70, 80, 90, 12.0],
        }
    )
    result = analysis.free_vram_percentiles(gpus, quantiles=(0.0, 0.5, 1.0))
    assert result.columns == [
        "gpu_type", "gpus", "samples", "vram_total_gb", "p0_free_gb", "p50_free_gb",
        "p100_free_gb",
    ]  # fmt: skip
    a100 = result.row(0, named=True)
    assert (a100["gpu_type"], a100["gpus"], a100["samples"]) == ("A100", 3, 10)
    assert (a100["p0_free_gb"], a100["p50_free_gb"], a100["p100_free_gb"]) == (0, 45, 90)
    assert result.row(1, named=True)["p50_free_gb"] == 12.0
    default = analysis.free_vram_percentiles(gpus)
    assert "p5_free_gb" in default.columns
    assert "p95_free_gb" in default.columns


def test_free_vram_percentiles_rejects_a_quantile_outside_0_1() -> None:
    with pytest.raises(ValueError, match=r"quantile 1.5"):
        analysis.free_vram_percentiles(pl.DataFrame(), quantiles=(1.5,))


def test_status_intervals_chain_transitions_and_leave_the_last_open() -> None:
    ev = events(
        ("a", 0, None, "online", "first_heartbeat"),
        ("a", 10, "online", "offline", "silence"),
        ("a", 12, "offline", "online", "heartbeat"),
    )
    result = analysis.status_intervals(ev, until=at(20))
    assert result["status"].to_list() == ["online", "offline", "online"]
    assert result["ended_at"].to_list() == [at(10), at(12), None]
    assert result["end"].to_list() == [at(10), at(12), at(20)]


def test_offline_incidents_with_durations_and_ongoing_ones() -> None:
    ev = events(
        ("a", 0, None, "online", "first_heartbeat"),
        ("b", 1, None, "online", "first_heartbeat"),
        ("a", 10, "online", "offline", "silence"),
        ("a", 12.5, "offline", "online", "heartbeat"),
        ("b", 20, "online", "offline", "shutdown"),
    )
    result = analysis.offline_incidents(ev, until=at(24))
    assert result["hostname"].to_list() == ["ws-a", "ws-b"]
    assert result["reason"].to_list() == ["silence", "shutdown"]
    assert result["duration_s"].to_list() == [2.5 * 3600, 4 * 3600]
    assert result["ongoing"].to_list() == [False, True]
    assert result["ended_at"].to_list() == [at(12.5), None]


def test_reliability_matches_the_api_definition() -> None:
    now = at(40 * 24)
    window_start_h = 10 * 24
    ev = events(
        # a: online long before the window, offline 24 h inside it, back online.
        ("a", 0, None, "online", "first_heartbeat"),
        ("a", window_start_h + 100, "online", "offline", "silence"),
        ("a", window_start_h + 124, "offline", "online", "heartbeat"),
        # b: offline across the window start, online 12 h before now.
        ("b", 0, None, "online", "first_heartbeat"),
        ("b", window_start_h - 5, "online", "offline", "shutdown"),
        ("b", 40 * 24 - 12, "offline", "online", "heartbeat"),
        # c: first seen 48 h before now (inside the window), offline for its last 12 h.
        ("c", 40 * 24 - 48, None, "online", "first_heartbeat"),
        ("c", 40 * 24 - 12, "online", "offline", "silence"),
        # d: first seen exactly now: nothing to judge yet.
        ("d", 40 * 24, None, "online", "first_heartbeat"),
    )
    reg = registry(a=0, b=0, c=40 * 24 - 48, d=40 * 24)
    result = analysis.reliability(ev, reg, now=now)
    share = dict(zip(result["agent_id"], result["reliability"], strict=True))
    window_h = 30 * 24
    assert share["a"] == pytest.approx((window_h - 24) / window_h)
    assert share["b"] == pytest.approx(12 / window_h)
    assert share["c"] == pytest.approx(36 / 48)
    assert share["d"] is None
    assert result.filter(pl.col("agent_id") == "c")["judged_s"].item() == 48 * 3600


def test_reliability_counts_repeated_online_events_once() -> None:
    ev = events(
        ("a", 0, None, "online", "first_heartbeat"),
        ("a", 5, "online", "online", "heartbeat"),
        ("a", 8, "online", "offline", "silence"),
    )
    result = analysis.reliability(ev, registry(a=0), now=at(10), window=timedelta(hours=10))
    assert result["online_s"].item() == 8 * 3600
    assert result["reliability"].item() == pytest.approx(0.8)


def test_an_agent_without_events_has_unknown_reliability_as_in_the_api() -> None:
    ev = events(("a", 0, None, "online", "first_heartbeat"))
    result = analysis.reliability(ev, registry(a=0, b=0), now=at(10))
    assert dict(zip(result["agent_id"], result["reliability"], strict=True)) == {
        "a": 1.0,
        "b": None,
    }


def test_rolling_reliability_steps_through_time() -> None:
    ev = events(
        ("a", 24, None, "online", "first_heartbeat"),
        ("a", 48, "online", "offline", "silence"),
        ("a", 72, "offline", "online", "heartbeat"),
    )
    result = analysis.rolling_reliability(
        ev, registry(a=24), start=T0, end=at(96), every="1d", window=timedelta(days=2)
    )
    assert result["at"].to_list() == [at(h) for h in (0, 24, 48, 72, 96)]
    assert result["reliability"].to_list() == [None, None, 1.0, 0.5, 0.5]


def test_read_sql_refuses_an_unknown_engine() -> None:
    with pytest.raises(ValueError, match="engine must be one of connectorx, adbc"):
        analysis.read_sql("postgresql://nowhere/db", "SELECT 1", engine="odbc")  # type: ignore[arg-type]


def test_default_engine_is_one_of_the_measured_two() -> None:
    assert analysis.DEFAULT_ENGINE in analysis.ENGINES == ("connectorx", "adbc")


def test_export_refuses_an_empty_range_before_touching_the_database(tmp_path: object) -> None:
    with pytest.raises(ConfigError, match="is not before --until"):
        analysis.run_export(Settings(), since=T0, until=T0, out=f"{tmp_path}/x.parquet")


def test_export_refuses_a_missing_folder() -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        analysis.run_export(
            Settings(), since=T0, until=T0 + DAY, out="/nonexistent/folder/x.parquet"
        )


def test_the_reliability_window_is_the_one_the_api_serves() -> None:
    from fleetpulse import analysis, store

    assert analysis.RELIABILITY_WINDOW is store.RELIABILITY_WINDOW == timedelta(days=30)
