"""Generate fleetpulse's Grafana dashboards: ``python dashboards/grafana/build.py``.

Built with Grafana Labs' typed builders (``grafana-foundation-sdk``, the release made for the
Grafana version compose.yaml runs). The JSON under ``dashboards/`` is this file's output and
is committed; a test checks the two agree (``--check`` does the same by hand). Panels query
Prometheus (the API and ingest exporters) or TimescaleDB (the hypertables), through the
datasources provisioned with the uids below. The SDK has no query type for Grafana's
PostgreSQL datasource, so :class:`SqlQuery` is that one, in the SDK's own protocol.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from grafana_foundation_sdk.builders import (
    common as common_builders,
    dashboard as board,
    prometheus,
    stat,
    table,
    timeseries,
)
from grafana_foundation_sdk.cog import builder as cogbuilder, variants as cogvariants
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common, dashboard as model

OUT_DIR: Final = Path(__file__).resolve().parent / "dashboards"
PROM: Final = model.DataSourceRef(type_val="prometheus", uid="fleetpulse-prometheus")
TSDB: Final = model.DataSourceRef(
    type_val="grafana-postgresql-datasource", uid="fleetpulse-timescaledb"
)
GRID_WIDTH: Final = 24

Json = dict[str, Any]
Query = cogbuilder.Builder[cogvariants.Dataquery]
Panel = cogbuilder.Builder[model.Panel]


class SqlQuery(cogvariants.Dataquery):
    """A raw-SQL target of the ``grafana-postgresql-datasource`` plugin."""

    def __init__(self, raw_sql: str, *, table: bool) -> None:
        self.raw_sql = raw_sql
        self.table = table
        self.ref_id = ""

    def to_json(self) -> Json:
        return {
            "datasource": TSDB.to_json(),
            "editorMode": "code",
            "format": "table" if self.table else "time_series",
            "rawQuery": True,
            "rawSql": self.raw_sql,
            "refId": self.ref_id,
        }


class Sql(cogbuilder.Builder[SqlQuery]):
    def __init__(self, raw_sql: str, *, table: bool) -> None:
        self._internal = SqlQuery(raw_sql, table=table)

    def ref_id(self, ref_id: str) -> Sql:
        self._internal.ref_id = ref_id
        return self

    def build(self) -> SqlQuery:
        return self._internal


def prom(expr: str, legend: str = "", *, instant: bool = False) -> prometheus.Dataquery:
    query = prometheus.Dataquery().datasource(PROM).expr(expr).legend_format(legend or "__auto")
    return query.instant() if instant else query


def sql(raw: str, *, table: bool = False) -> Sql:
    return Sql(" ".join(raw.split()), table=table)


_KINDS: Final[dict[str, Callable[[], Any]]] = {
    "stat": stat.Panel,
    "timeseries": timeseries.Panel,
    "table": table.Panel,
}


def panel(
    kind: str,
    title: str,
    targets: list[Any],
    *,
    w: int = 12,
    h: int = 8,
    unit: str = "",
    description: str = "",
    min: float | None = None,
    max: float | None = None,
    color_mode: common.BigValueColorMode | None = None,
) -> Panel:
    built: Any = _KINDS[kind]().title(title).description(description).height(h).span(w)
    built = built.datasource(PROM if isinstance(targets[0], prometheus.Dataquery) else TSDB)
    for n, target in enumerate(targets):
        built = built.with_target(target.ref_id(chr(ord("A") + n)))
    if unit:
        built = built.unit(unit)
    if min is not None:
        built = built.min(min)
    if max is not None:
        built = built.max(max)
    if color_mode is not None:
        built = built.color_mode(color_mode)
    if kind == "stat":  # the latest value, as Grafana's own default says it
        built = built.reduce_options(common_builders.ReduceDataOptions().calcs(["lastNotNull"]))
    result: Panel = built
    return result


def quantile(q: float, histogram: str, by: str = "") -> str:
    """PromQL for the q-quantile of a histogram over Grafana's rate interval."""
    labels = f"le, {by}" if by else "le"
    return (
        f"histogram_quantile({q}, sum by ({labels}) (rate({histogram}_bucket[$__rate_interval])))"
    )


def increase(counter: str, by: str) -> str:
    return f"sum by ({by}) (increase({counter}[$__rate_interval]))"


def layout(panels: list[Panel]) -> list[Panel]:
    """Ids in order and grid positions filled left to right, top to bottom (a panel that
    does not fit the row starts the next one)."""
    x = y = row_h = 0
    for n, p in enumerate(panels, start=1):
        spec = p.build()
        assert spec.grid_pos is not None
        w, h = spec.grid_pos.w, spec.grid_pos.h
        if x + w > GRID_WIDTH:
            x, y, row_h = 0, y + row_h, 0
        p.id(n).grid_pos(model.GridPos(x=x, y=y, w=w, h=h))  # type: ignore[attr-defined]
        x, row_h = x + w, max(row_h, h)
    return panels


def dashboard(
    uid: str,
    title: str,
    panels: list[Panel],
    variables: list[cogbuilder.Builder[model.VariableModel]],
    *,
    description: str = "",
    refresh: str = "30s",
    time_from: str = "now-6h",
) -> Json:
    built = (
        board.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags(["fleetpulse"])
        .timezone("browser")
        .readonly()
        .tooltip(model.DashboardCursorSync.CROSSHAIR)
        .refresh(refresh)
        .time(time_from, "now")
        .link(
            board.DashboardLink("fleetpulse")
            .type(model.DashboardLinkType.DASHBOARDS)
            .tags(["fleetpulse"])
            .as_dropdown(True)
        )
    )
    for variable in variables:
        built = built.with_variable(variable)
    for p in layout(panels):
        built = built.with_panel(p)
    spec: Json = json.loads(JSONEncoder(sort_keys=True).encode(built.build()))
    spec["version"] = 1
    return spec


POOL_VARIABLE: Final = (
    board.QueryVariable("pool")
    .label("Pool")
    .datasource(PROM)
    .query({"query": "label_values(fleetpulse_agents, pool)", "refId": "pool"})
    .refresh(model.VariableRefresh.ON_TIME_RANGE_CHANGED)
    .sort(model.VariableSort.ALPHABETICAL_ASC)
    .multi(True)
    .include_all(True)
    .all_value(".*")
    .current(model.VariableOption(text="All", value="$__all", selected=True))
)

AGENT_VARIABLE: Final = (
    board.QueryVariable("agent")
    .label("Agent")
    .datasource(TSDB)
    .query(
        "SELECT hostname || ' (' || pool_name || ')' AS __text, agent_id::text AS __value "
        "FROM agent_registry ORDER BY hostname"
    )
    .refresh(model.VariableRefresh.ON_DASHBOARD_LOAD)
    .sort(model.VariableSort.DISABLED)
    .multi(False)
    .include_all(False)
)


def fleet_overview() -> Json:
    pool = 'pool=~"$pool"'
    panels = [
        panel(
            "stat",
            "Agents online",
            [prom(f'sum(fleetpulse_agents{{status="online", {pool}}}) or vector(0)', "online")],
            w=4,
            h=4,
            color_mode=common.BigValueColorMode.BACKGROUND,
        ),
        panel(
            "stat",
            "Agents offline",
            [prom(f'sum(fleetpulse_agents{{status="offline", {pool}}}) or vector(0)', "offline")],
            w=4,
            h=4,
            color_mode=common.BigValueColorMode.BACKGROUND,
        ),
        panel(
            "stat",
            "GPUs online",
            [prom(f"sum(fleetpulse_capacity_gpus{{{pool}}}) or vector(0)", "GPUs")],
            w=4,
            h=4,
        ),
        panel(
            "stat",
            "Free VRAM, whole fleet",
            [prom(f"sum(fleetpulse_capacity_gpu_vram_free_bytes{{{pool}}}) or vector(0)", "free")],
            w=4,
            h=4,
            unit="bytes",
        ),
        panel(
            "stat",
            "Available CPU cores",
            [prom(f"sum(fleetpulse_capacity_cpu_available_cores{{{pool}}}) or vector(0)", "cores")],
            w=4,
            h=4,
        ),
        panel(
            "stat",
            "Available memory",
            [prom(f"sum(fleetpulse_capacity_mem_available_bytes{{{pool}}}) or vector(0)", "mem")],
            w=4,
            h=4,
            unit="bytes",
        ),
        panel(
            "timeseries",
            "Agents by pool and status",
            [prom(f"sum by (pool, status) (fleetpulse_agents{{{pool}}})", "{{pool}} {{status}}")],
        ),
        panel(
            "timeseries",
            "Agents reporting, by pool (history)",
            [
                sql(
                    """SELECT $__timeGroupAlias(sampled_at, $__interval), pool_name AS metric,
                    count(DISTINCT agent_id) AS agents FROM agent_samples
                    WHERE $__timeFilter(sampled_at) AND pool_name ~ '^${pool:regex}$'
                    GROUP BY 1, 2 ORDER BY 1"""
                )
            ],
        ),
        panel(
            "timeseries",
            "Free VRAM by pool and GPU type",
            [
                prom(
                    f"sum by (pool, gpu_type) (fleetpulse_capacity_gpu_vram_free_bytes{{{pool}}})",
                    "{{pool}} {{gpu_type}}",
                )
            ],
            w=8,
            unit="bytes",
        ),
        panel(
            "timeseries",
            "GPUs online by pool and GPU type",
            [
                prom(
                    f"sum by (pool, gpu_type) (fleetpulse_capacity_gpus{{{pool}}})",
                    "{{pool}} {{gpu_type}}",
                )
            ],
            w=8,
        ),
        panel(
            "timeseries",
            "Available cores and memory by pool",
            [
                prom(
                    f"sum by (pool) (fleetpulse_capacity_cpu_available_cores{{{pool}}})",
                    "{{pool}} cores",
                ),
                prom(
                    f"sum by (pool) (fleetpulse_capacity_mem_available_bytes{{{pool}}}) / 2^30",
                    "{{pool}} GiB",
                ),
            ],
            w=8,
        ),
        panel(
            "timeseries",
            "VRAM by pool: free (observed), claimable and held by claims",
            [
                prom(
                    f"sum by (pool) (fleetpulse_capacity_gpu_vram_free_bytes{{{pool}}})",
                    "{{pool}} free",
                ),
                prom(
                    f"sum by (pool) (fleetpulse_capacity_gpu_vram_claimable_bytes{{{pool}}})",
                    "{{pool}} claimable",
                ),
                prom(
                    f"sum by (pool) (fleetpulse_capacity_gpu_vram_held_bytes{{{pool}}})",
                    "{{pool}} held",
                ),
            ],
            unit="bytes",
        ),
        panel(
            "timeseries",
            "Active claims by holder, cordons",
            [
                prom("sum by (holder) (fleetpulse_claims_active) or vector(0)", "{{holder}}"),
                prom(
                    f"sum by (kind) (fleetpulse_cordons{{{pool}}}) or vector(0)",
                    "cordoned {{kind}}s",
                ),
            ],
        ),
        panel(
            "timeseries",
            "Withheld by their owners, and unhealthy GPUs",
            [
                prom(
                    f"sum by (reason) (fleetpulse_agents_withheld{{{pool}}})",
                    "withheld: {{reason}}",
                ),
                prom(
                    f"sum by (health) (fleetpulse_gpus_unhealthy{{{pool}}})",
                    "GPUs {{health}}",
                ),
            ],
            description=(
                "Online machines not offered to jobs (user active, an exclusive process,"
                " outside the offer hours) and GPUs left out of capacity (XID errors,"
                " throttling, page retirement, ECC)."
            ),
            w=24,
        ),
        panel(
            "table",
            "Agents",
            [
                sql(
                    """SELECT hostname, pool_name AS pool, status,
                    last_heartbeat_at AS last_heartbeat, gpu_type, gpu_count,
                    gpu_vram_available_gb AS free_vram_gb,
                    cpu_available_cores AS free_cores, mem_available_gb AS free_mem_gb,
                    offered, withheld_reason, gpu_health
                    FROM agent_registry WHERE pool_name ~ '^${pool:regex}$'
                    ORDER BY status DESC, gpu_vram_available_gb DESC, hostname""",
                    table=True,
                )
            ],
            h=10,
        ),
        panel(
            "table",
            "Recent status transitions",
            [
                sql(
                    """SELECT e.at AS "time", r.hostname, r.pool_name AS pool, e.from_status,
                    e.to_status, e.reason FROM agent_status_events e
                    JOIN agent_registry r USING (agent_id)
                    WHERE $__timeFilter(e.at) AND r.pool_name ~ '^${pool:regex}$'
                    ORDER BY e.at DESC LIMIT 200""",
                    table=True,
                )
            ],
            h=10,
        ),
    ]
    return dashboard(
        "fleetpulse-fleet-overview",
        "fleetpulse / Fleet overview",
        panels,
        [POOL_VARIABLE],
        description="Which agents are online and what capacity each pool has free.",
    )


def _agent_series(columns: str, table: str = "agent_samples") -> Sql:
    return sql(
        f"""SELECT $__timeGroupAlias(sampled_at, $__interval), {columns} FROM {table}
        WHERE agent_id = '$agent' AND $__timeFilter(sampled_at) GROUP BY 1 ORDER BY 1"""
    )


def _gpu_series(value: str) -> Sql:
    return sql(
        f"""SELECT $__timeGroupAlias(sampled_at, $__interval), 'GPU ' || gpu_index AS metric,
        {value} FROM gpu_samples WHERE agent_id = '$agent' AND $__timeFilter(sampled_at)
        GROUP BY 1, 2 ORDER BY 1"""
    )


def agent_detail() -> Json:
    agent = 'agent_id="$agent"'
    panels = [
        panel(
            "table",
            "Agent",
            [
                sql(
                    """SELECT hostname, pool_name AS pool, status, status_changed_at,
                    last_heartbeat_at, first_seen_at, agent_version, gpu_type, gpu_count,
                    cpu_cores, mem_total_gb FROM agent_registry WHERE agent_id = '$agent'""",
                    table=True,
                )
            ],
            w=12,
            h=5,
        ),
        panel(
            "stat",
            "Heartbeat age",
            [prom(f"max(fleetpulse_agent_heartbeat_age_seconds{{{agent}}})", "age", instant=True)],
            w=4,
            h=5,
            unit="s",
        ),
        panel(
            "stat",
            "Free VRAM (one GPU)",
            [
                prom(
                    f"max(fleetpulse_agent_gpu_vram_available_bytes{{{agent}}})",
                    "free",
                    instant=True,
                )
            ],
            w=4,
            h=5,
            unit="bytes",
        ),
        panel(
            "stat",
            "Available cores",
            [prom(f"max(fleetpulse_agent_cpu_available_cores{{{agent}}})", "cores", instant=True)],
            w=4,
            h=5,
        ),
        panel(
            "timeseries",
            "CPU load",
            [
                _agent_series(
                    'avg(cpu_load_1m) AS "1m", avg(cpu_load_5m) AS "5m", avg(cpu_load_15m) AS "15m"'
                )
            ],
            w=8,
        ),
        panel(
            "timeseries",
            "CPU cores",
            [_agent_series("max(cpu_cores) AS cores, min(cpu_available_cores) AS available")],
            w=8,
        ),
        panel(
            "timeseries",
            "Memory",
            [_agent_series("max(mem_total_gb) AS total, min(mem_available_gb) AS available")],
            w=8,
            unit="decgbytes",
        ),
        panel(
            "timeseries",
            "Free VRAM per GPU",
            [_gpu_series('min(vram_free_gb) AS "free GB"')],
            w=8,
            unit="decgbytes",
        ),
        panel(
            "timeseries",
            "GPU utilisation",
            [_gpu_series('avg(util_pct) AS "util %"')],
            w=8,
            unit="percent",
            min=0,
            max=100,
        ),
        panel(
            "timeseries",
            "GPU temperature",
            [_gpu_series('max(temp_c) AS "°C"')],
            w=8,
            unit="celsius",
        ),
        panel(
            "table",
            "Status transitions",
            [
                sql(
                    """SELECT at AS "time", from_status, to_status, reason FROM agent_status_events
                    WHERE agent_id = '$agent' AND $__timeFilter(at) ORDER BY at DESC""",
                    table=True,
                )
            ],
            w=24,
        ),
    ]
    return dashboard(
        "fleetpulse-agent-detail",
        "fleetpulse / Agent detail",
        panels,
        [AGENT_VARIABLE],
        description="One agent's load, cores, memory and per-GPU VRAM, utilisation, temperature.",
    )


def pipeline_health() -> Json:
    rate = "$__rate_interval"
    panels = [
        panel(
            "timeseries",
            "Heartbeats ingested by result",
            [
                prom(
                    f"sum by (result) (rate(fleetpulse_ingest_messages_total[{rate}]))",
                    "{{result}}",
                )
            ],
            unit="reqps",
        ),
        panel(
            "timeseries",
            "Ingest lag (receive minus sampled_at)",
            [
                prom(quantile(q, "fleetpulse_ingest_lag_seconds"), f"p{round(q * 100)}")
                for q in (0.5, 0.95, 0.99)
            ],
            unit="s",
        ),
        panel(
            "timeseries",
            "Dead letters by reason",
            [
                prom(
                    f"{increase('fleetpulse_ingest_dead_letters_total', 'reason')} or vector(0)",
                    "{{reason}}",
                )
            ],
            w=8,
        ),
        panel(
            "timeseries",
            "Queue depth",
            [prom("sum(fleetpulse_ingest_queue_depth)", "messages")],
            w=8,
        ),
        panel(
            "timeseries",
            "Batch size and commit time",
            [
                prom(
                    f"sum(rate(fleetpulse_ingest_batch_size_sum[{rate}])) "
                    f"/ sum(rate(fleetpulse_ingest_batch_size_count[{rate}]))",
                    "mean batch",
                ),
                prom(
                    f"{quantile(0.95, 'fleetpulse_ingest_commit_seconds')} * 1000", "commit p95 ms"
                ),
            ],
            w=8,
        ),
        panel(
            "timeseries",
            "Database retries",
            [prom(f"sum(rate(fleetpulse_ingest_db_retries_total[{rate}]))", "retries/s")],
            w=8,
        ),
        panel(
            "timeseries",
            "Detector: leader and sweeps",
            [
                prom("max(fleetpulse_detector_leader)", "leader"),
                prom(f"sum(rate(fleetpulse_detector_runs_total[{rate}]))", "sweeps/s"),
            ],
            w=8,
        ),
        panel(
            "timeseries",
            "Detector view: lag behind the clock and holding",
            [
                prom("max(fleetpulse_detector_lag_seconds)", "lag"),
                prom("max(fleetpulse_detector_holding)", "holding (1 = judges nobody)"),
            ],
            w=8,
            unit="s",
            description="Silence is judged at what ingest has committed, not at the wall clock:"
            " a backlog or an outage shows here as lag, and no agent is marked offline for it.",
        ),
        panel(
            "timeseries",
            "Detector sweep time",
            [prom(quantile(0.95, "fleetpulse_detector_sweep_seconds"), "p95")],
            w=8,
            unit="s",
        ),
        panel(
            "timeseries",
            "Detector transitions",
            [
                prom(
                    increase("fleetpulse_detector_transitions_total", "to_status")
                    + " or vector(0)",
                    "to {{to_status}}",
                )
            ],
            w=8,
        ),
        panel(
            "timeseries",
            "Samples stored (database)",
            [
                sql(
                    """SELECT $__timeGroupAlias(received_at, $__interval), count(*) AS samples
                    FROM agent_samples WHERE $__timeFilter(received_at) GROUP BY 1 ORDER BY 1"""
                )
            ],
            w=8,
        ),
        panel(
            "timeseries",
            "Stored lag, receive minus sampled_at (database)",
            [
                sql(
                    """SELECT $__timeGroupAlias(received_at, $__interval),
                    avg(extract(epoch FROM received_at - sampled_at)) AS "mean lag",
                    max(extract(epoch FROM received_at - sampled_at)) AS "max lag"
                    FROM agent_samples WHERE $__timeFilter(received_at) GROUP BY 1 ORDER BY 1"""
                )
            ],
            w=8,
            unit="s",
        ),
        panel(
            "timeseries",
            "Status transitions by reason (database)",
            [
                sql(
                    """SELECT $__timeGroupAlias(at, $__interval), reason AS metric,
                    count(*) AS events FROM agent_status_events WHERE $__timeFilter(at)
                    GROUP BY 1, 2 ORDER BY 1"""
                )
            ],
            w=8,
        ),
        panel(
            "timeseries",
            "API requests by status",
            [prom(f"sum by (status) (rate(fleetpulse_api_requests_total[{rate}]))", "{{status}}")],
            w=8,
            unit="reqps",
        ),
        panel(
            "timeseries",
            "API latency p95 by path",
            [prom(quantile(0.95, "fleetpulse_api_request_duration_seconds", "path"), "{{path}}")],
            w=8,
            unit="s",
        ),
        panel(
            "timeseries",
            "API metrics snapshot age",
            [prom("max(fleetpulse_metrics_snapshot_age_seconds)", "age")],
            w=8,
            unit="s",
        ),
    ]
    return dashboard(
        "fleetpulse-pipeline-health",
        "fleetpulse / Pipeline health",
        panels,
        [],
        description="Ingest rate, lag, dead letters, the silence detector and the API.",
        refresh="10s",
        time_from="now-1h",
    )


DASHBOARDS: Final = {
    "fleet-overview.json": fleet_overview,
    "agent-detail.json": agent_detail,
    "pipeline-health.json": pipeline_health,
}


def render() -> dict[str, str]:
    """File name → JSON text of every dashboard."""
    return {
        name: json.dumps(build(), indent=2, ensure_ascii=False) + "\n"
        for name, build in DASHBOARDS.items()
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Generate fleetpulse's Grafana dashboards.")
    parser.add_argument("--check", action="store_true", help="fail if the committed JSON differs")
    args = parser.parse_args(argv)
    stale = []
    for name, text in render().items():
        path = OUT_DIR / name
        if args.check:
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                stale.append(name)
        else:
            path.write_text(text, encoding="utf-8")
    if stale:
        print(f"stale dashboards: {', '.join(stale)}; run python dashboards/grafana/build.py")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
