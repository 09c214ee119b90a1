"""``fleetpulse status``: the fleet as a terminal table, online first, with a summary by pool."""

from __future__ import annotations

import sys
from collections import Counter
from typing import Any, TextIO

import httpx
from rich.console import Console
from rich.table import Table

from fleetpulse.config import Settings

__all__ = ["fleet_table", "pool_summary", "run_status"]

PAGE = 10_000


def _fetch(api_url: str, token: str | None) -> list[dict[str, Any]]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    rows: list[dict[str, Any]] = []
    after: str | None = None
    with httpx.Client(base_url=api_url, headers=headers, timeout=10) as client:
        while True:
            params: dict[str, Any] = {"limit": PAGE}
            if after:
                params["after"] = after
            response = client.get("/api/v1/agents", params=params)
            response.raise_for_status()
            page = response.json()
            rows.extend(page["items"])
            after = page.get("next_after")
            if not after:
                return rows


def _order(row: dict[str, Any]) -> tuple[int, float, int, str]:
    return (
        0 if row["status"] == "online" else 1,
        -float(row["gpu_vram_available_gb"]),
        -int(row["cpu_available_cores"]),
        str(row["hostname"]),
    )


def fleet_table(rows: list[dict[str, Any]]) -> Table:
    table = Table(title="fleetpulse fleet", header_style="bold")
    for name in (
        "host",
        "pool",
        "status",
        "age s",
        "cores free",
        "mem free GiB",
        "GPU",
        "GPUs",
        "VRAM free GiB",
        "reliability",
    ):
        table.add_column(name, justify="right" if name[0].isdigit() or "free" in name else "left")
    for row in sorted(rows, key=_order):
        age = row.get("sample_age_s")
        reliability = row.get("reliability_30d")
        table.add_row(
            row["hostname"],
            row["pool_name"],
            "[green]online[/]" if row["status"] == "online" else "[red]offline[/]",
            "-" if age is None else f"{age:.0f}",
            f"{row['cpu_available_cores']}/{row['cpu_cores']}",
            f"{row['mem_available_gb']:.1f}/{row['mem_total_gb']:.1f}",
            row["gpu_type"],
            str(row["gpu_count"]),
            f"{row['gpu_vram_available_gb']:.1f}",
            "-" if reliability is None else f"{reliability:.1%}",
        )
    return table


def pool_summary(rows: list[dict[str, Any]]) -> str:
    online: Counter[str] = Counter()
    total: Counter[str] = Counter()
    for row in rows:
        total[row["pool_name"]] += 1
        online[row["pool_name"]] += row["status"] == "online"
    parts = [f"{pool} {online[pool]}/{total[pool]} online" for pool in sorted(total)]
    return "pools: " + (", ".join(parts) if parts else "none")


def run_status(
    settings: Settings, *, api_url: str | None, token: str | None, out: TextIO | None = None
) -> int:
    url = api_url or f"http://{settings.api.host}:{settings.api.port}"
    stream = out or sys.stdout
    try:
        rows = _fetch(url, token)
    except httpx.HTTPStatusError as exc:
        hint = " (pass --token)" if exc.response.status_code == 401 else ""
        print(
            f"fleetpulse: the API at {url} answered {exc.response.status_code}{hint}",
            file=sys.stderr,
        )
        return 1
    except httpx.HTTPError as exc:
        print(
            f"fleetpulse: no API at {url} ({type(exc).__name__}); start it with 'fleetpulse api'"
            " or pass --api-url",
            file=sys.stderr,
        )
        return 1
    console = Console(file=stream, width=160, highlight=False)
    console.print(fleet_table(rows))
    console.print(pool_summary(rows))
    return 0
