"""Every SQL panel of the Grafana dashboards, macros expanded as Grafana does, returns rows
from a real TimescaleDB holding a seeded fleet."""

from __future__ import annotations

import psycopg
import pytest
from psycopg import sql

from tests.conftest import TABLES
from tests.fixtures import dash_grafana as g
from tests.fixtures.dash import AGENTS, SeededFleet, seed_fleet

SQL_TARGETS = list(g.targets(g.TIMESCALEDB_UID))
# Two GPUs and an outage two days ago: every agent panel has something to show.
GPU_AGENT = next(a for a in AGENTS if a.hostname == "ws-train-2")


@pytest.fixture(scope="module")
def seeded(database_url: str) -> tuple[str, SeededFleet]:
    """One seeding for the whole module (the queries only read)."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("TRUNCATE {} RESTART IDENTITY CASCADE").format(
                sql.SQL(", ").join(sql.Identifier(t) for t in TABLES)
            )
        )
    return database_url, seed_fleet(database_url, days=3)


def run(url: str, query: str) -> list[tuple[object, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(query).fetchall()  # type: ignore[arg-type]


def test_there_are_sql_panels_on_every_dashboard() -> None:
    assert {t.dashboard for t in SQL_TARGETS} == {
        "fleet-overview",
        "agent-detail",
        "pipeline-health",
    }


@pytest.mark.parametrize("target", SQL_TARGETS, ids=lambda t: t.name)
def test_sql_panel_returns_rows(seeded: tuple[str, SeededFleet], target: g.Target) -> None:
    url, fleet = seeded
    start, end = g.window(fleet.now, hours=72)
    query = g.expand_sql(
        target.query,
        start=start,
        end=end,
        interval="1h",
        variables={"agent": GPU_AGENT.agent_id, "pool": ".*"},
    )
    rows = run(url, query)
    assert rows, f"{target.name} returned no rows:\n{query}"
    if target.format == "time_series":
        first = rows[0][0]
        assert hasattr(first, "tzinfo"), f"{target.name}: first column must be the time"


def test_agent_variable_lists_every_agent(seeded: tuple[str, SeededFleet]) -> None:
    url, fleet = seeded
    variable = g.dashboards()["agent-detail"]["templating"]["list"][0]
    rows = run(url, variable["query"])
    assert {value for _, value in rows} == {a.agent_id for a in fleet.agents}
    assert ("ws-train-2 (train)", GPU_AGENT.agent_id) in rows


def test_pool_filter_narrows_the_agents_table(seeded: tuple[str, SeededFleet]) -> None:
    url, fleet = seeded
    table = next(t for t in SQL_TARGETS if t.panel_title == "Agents")
    start, end = g.window(fleet.now)
    query = g.expand_sql(table.query, start=start, end=end, variables={"pool": "(render|cpu)"})
    pools = {row[1] for row in run(url, query)}
    assert pools == {"render", "cpu"}


def test_gpu_panels_show_one_series_per_gpu(seeded: tuple[str, SeededFleet]) -> None:
    url, fleet = seeded
    vram = next(t for t in SQL_TARGETS if t.panel_title == "Free VRAM per GPU")
    start, end = g.window(fleet.now, hours=1)
    query = g.expand_sql(vram.query, start=start, end=end, variables={"agent": GPU_AGENT.agent_id})
    assert {row[1] for row in run(url, query)} == {"GPU 0", "GPU 1"}
