"""Generate fleetpulse's Grafana dashboards: ``python dashboards/grafana/build.py``.

The JSON under ``dashboards/`` is this file's output and is committed; a test checks the
two agree (``--check`` does the same by hand). Panels query Prometheus (the API and ingest
exporters) or TimescaleDB (the hypertables), through the datasources provisioned with the
uids below.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Final

OUT_DIR: Final = Path(__file__).resolve().parent / "dashboards"
PROM: Final = {"type": "prometheus", "uid": "fleetpulse-prometheus"}
TSDB: Final = {"type": "grafana-postgresql-datasource", "uid": "fleetpulse-timescaledb"}
GRID_WIDTH: Final = 24

Json = dict[str, Any]


def prom(expr: str, legend: str = "", *, instant: bool = False) -> Json:
    target: Json = {"datasource": PROM, "expr": expr, "legendFormat": legend or "__auto"}
    if instant:
        target |= {"instant": True, "range": False}
    return target


def sql(raw: str, *, table: bool = False) -> Json:
    return {
        "datasource": TSDB,
        "editorMode": "code",
        "rawQuery": True,
        "format": "table" if table else "time_series",
        "rawSql": " ".join(raw.split()),
    }


def panel(
    kind: str,
    title: str,
    targets: list[Json],
    *,
    w: int = 12,
    h: int = 8,
    unit: str = "",
    **opts: Any,
) -> Json:
    source = targets[0]["datasource"]
    defaults: Json = {"unit": unit} if unit else {}
    if "min" in opts:
        defaults["min"] = opts.pop("min")
    if "max" in opts:
        defaults["max"] = opts.pop("max")
    return {
        "type": kind,
        "title": title,
        "description": opts.pop("description", ""),
        "datasource": source,
        "gridPos": {"w": w, "h": h},
        "targets": [t | {"refId": chr(ord("A") + n)} for n, t in enumerate(targets)],
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": opts,
    }


def quantile(q: float, histogram: str, by: str = "") -> str:
    """PromQL for the q-quantile of a histogram over Grafana's rate interval."""
    labels = f"le, {by}" if by else "le"
    return (
        f"histogram_quantile({q}, sum by ({labels}) (rate({histogram}_bucket[$__rate_interval])))"
    )


def increase(counter: str, by: str) -> str:
    return f"sum by ({by}) (increase({counter}[$__rate_interval]))"


def layout(panels: list[Json]) -> list[Json]:
    """Ids in order and grid positions filled left to right, top to bottom."""
    x = y = row_h = 0
    for n, p in enumerate(panels, start=1):
        w, h = p["gridPos"]["w"], p["gridPos"]["h"]
        if x + w > GRID_WIDTH:
            x, y, row_h = 0, y + row_h, 0
        p["id"] = n
        p["gridPos"] = {"x": x, "y": y, "w": w, "h": h}
        x, row_h = x + w, max(row_h, h)
    return panels


def dashboard(
    uid: str, title: str, panels: list[Json], variables: list[Json], **extra: Any
) -> Json:
    return {
        "uid": uid,
        "title": title,
        "description": extra.pop("description", ""),
        "tags": ["fleetpulse"],
        "timezone": "browser",
        "editable": False,
        "graphTooltip": 1,
        "schemaVersion": 39,
        "version": 1,
        "refresh": extra.pop("refresh", "30s"),
        "time": {"from": extra.pop("time_from", "now-6h"), "to": "now"},
        "annotations": {"list": []},
        "templating": {"list": variables},
        "links": [
            {
                "type": "dashboards",
                "tags": ["fleetpulse"],
                "asDropdown": True,
                "title": "fleetpulse",
            }
        ],
        "panels": layout(panels),
    }


POOL_VARIABLE: Final[Json] = {
    "name": "pool",
    "label": "Pool",
    "type": "query",
    "datasource": PROM,
    "definition": "label_values(fleetpulse_agents, pool)",
    "query": {"query": "label_values(fleetpulse_agents, pool)", "refId": "pool"},
    "refresh": 2,
    "sort": 1,
    "multi": True,
    "includeAll": True,
    "allValue": ".*",
    "current": {"text": "All", "value": "$__all"},
}

AGENT_VARIABLE: Final[Json] = {
    "name": "agent",
    "label": "Agent",
    "type": "query",
    "datasource": TSDB,
    "definition": "agents from the registry",
    "query": (
        "SELECT hostname || ' (' || pool_name || ')' AS __text, agent_id::text AS __value "
        "FROM agent_registry ORDER BY hostname"
    ),
    "refresh": 1,
    "sort": 0,
    "multi": False,
    "includeAll": False,
}


def fleet_overview() -> Json:
    pool = 'pool=~"$pool"'
    panels = [
        panel(
            "stat",
            "Agents online",
            [prom(f'sum(fleetpulse_agents{{status="online", {pool}}}) or vector(0)', "online")],
            w=4,
            h=4,
            colorMode="background",
        ),
        panel(
            "stat",
            "Agents offline",
            [prom(f'sum(fleetpulse_agents{{status="offline", {pool}}}) or vector(0)', "offline")],
            w=4,
            h=4,
            colorMode="background",
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
            "table",
            "Agents",
            [
                sql(
                    """SELECT hostname, pool_name AS pool, status,
                    last_heartbeat_at AS last_heartbeat, gpu_type, gpu_count,
                    gpu_vram_available_gb AS free_vram_gb,
                    cpu_available_cores AS free_cores, mem_available_gb AS free_mem_gb
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


def _agent_series(columns: str, table: str = "agent_samples") -> Json:
    return sql(
        f"""SELECT $__timeGroupAlias(sampled_at, $__interval), {columns} FROM {table}
        WHERE agent_id = '$agent' AND $__timeFilter(sampled_at) GROUP BY 1 ORDER BY 1"""
    )


def _gpu_series(value: str) -> Json:
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
