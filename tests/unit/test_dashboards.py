"""The generated Grafana dashboards and provisioning, read as files (no services)."""

from __future__ import annotations

import importlib.metadata
from datetime import UTC, datetime

import pytest
import yaml

from tests.fixtures import dash_grafana as g

START = datetime(2026, 11, 1, 10, 0, tzinfo=UTC)
END = datetime(2026, 11, 1, 16, 0, tzinfo=UTC)


def test_committed_json_is_the_generator_output() -> None:
    rendered = g.build_module().render()
    committed = {p.name: p.read_text(encoding="utf-8") for p in g.DASHBOARD_DIR.glob("*.json")}
    assert rendered == committed, "run: python dashboards/grafana/build.py"


def test_check_mode_reports_a_stale_dashboard(tmp_path, monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    build = g.build_module()
    monkeypatch.setattr(build, "OUT_DIR", tmp_path)
    assert build.main(["--check"]) == 1
    assert "stale dashboards: fleet-overview.json" in capsys.readouterr().out
    assert build.main([]) == 0
    assert build.main(["--check"]) == 0


def test_three_dashboards_with_unique_uids_and_laid_out_panels() -> None:
    boards = g.dashboards()
    assert set(boards) == {"fleet-overview", "agent-detail", "pipeline-health"}
    assert len({b["uid"] for b in boards.values()}) == 3
    for board in boards.values():
        ids = [p["id"] for p in board["panels"]]
        assert ids == list(range(1, len(ids) + 1))
        for panel in board["panels"]:
            pos = panel["gridPos"]
            assert pos["x"] >= 0
            assert pos["x"] + pos["w"] <= 24
            assert panel["targets"], panel["title"]


def test_every_query_uses_a_provisioned_datasource() -> None:
    provisioned = yaml.safe_load(
        (g.GRAFANA_DIR / "provisioning" / "datasources" / "fleetpulse.yml").read_text()
    )
    by_uid = {d["uid"]: d for d in provisioned["datasources"]}
    assert by_uid[g.PROMETHEUS_UID]["url"] == "http://prometheus:9090"
    tsdb = by_uid[g.TIMESCALEDB_UID]
    assert tsdb["url"] == "timescaledb:5432"
    assert tsdb["jsonData"]["timescaledb"] is True
    uids = {t.datasource_uid for t in g.targets()}
    assert uids == set(by_uid)


def test_dashboards_provider_points_where_compose_mounts_the_json() -> None:
    provider = yaml.safe_load(
        (g.GRAFANA_DIR / "provisioning" / "dashboards" / "fleetpulse.yml").read_text()
    )
    assert provider["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"


def test_the_builder_is_the_sdk_release_for_the_grafana_compose_runs() -> None:
    compose = yaml.safe_load((g.ROOT / "compose.yaml").read_text())
    grafana = compose["services"]["grafana"]["image"].rsplit(":", 1)[1]
    assert importlib.metadata.version("grafana-foundation-sdk").split("!")[-1] == grafana
    assert {b["schemaVersion"] for b in g.dashboards().values()} == {39}  # Grafana 11.1's


def test_the_agent_dashboard_is_templated_by_agent() -> None:
    board = g.dashboards()["agent-detail"]
    assert [v["name"] for v in board["templating"]["list"]] == ["agent"]
    queries = [t.query for t in g.targets() if t.dashboard == "agent-detail"]
    assert all("$agent" in q for q in queries)


def test_expand_sql_matches_grafana_timescaledb_macros() -> None:
    query = (
        "SELECT $__timeGroupAlias(sampled_at, $__interval), max(x) FROM t "
        "WHERE agent_id = '$agent' AND $__timeFilter(sampled_at) AND pool ~ '^${pool:regex}$' "
        "AND at > $__timeFrom() AND at < $__timeTo() GROUP BY $__timeGroup(sampled_at, 1h)"
    )
    expanded = g.expand_sql(
        query, start=START, end=END, interval="5m", variables={"agent": "a-1", "pool": ".*"}
    )
    assert expanded == (
        """SELECT time_bucket('300s', sampled_at) AS "time", max(x) FROM t """
        "WHERE agent_id = 'a-1' AND sampled_at BETWEEN '2026-11-01T10:00:00Z' AND "
        "'2026-11-01T16:00:00Z' AND pool ~ '^.*$' AND at > '2026-11-01T10:00:00Z' AND "
        "at < '2026-11-01T16:00:00Z' GROUP BY time_bucket('3600s', sampled_at)"
    )


def test_expand_sql_refuses_what_it_does_not_know() -> None:
    with pytest.raises(ValueError, match=r"\$__unixEpochFilter is not supported"):
        g.expand_sql("SELECT $__unixEpochFilter(t)", start=START, end=END)
    with pytest.raises(KeyError, match=r"\$agent has no value"):
        g.expand_sql("SELECT '$agent'", start=START, end=END)
    with pytest.raises(ValueError, match="not a Grafana interval"):
        g.expand_sql("SELECT $__timeGroup(t, soon)", start=START, end=END)


def test_expand_promql_substitutes_variables_and_rate_interval() -> None:
    expr = 'sum(rate(x{agent_id="$agent", pool=~"$pool"}[$__rate_interval]))'
    assert (
        g.expand_promql(expr, {"agent": "a-1", "pool": ".*"})
        == 'sum(rate(x{agent_id="a-1", pool=~".*"}[5s]))'
    )
    with pytest.raises(ValueError, match="unexpanded"):
        g.expand_promql("x[$__range]", {"__range": "$__other"})
