"""``fleetpulse cordon``, ``uncordon`` and ``claims``: thin HTTP clients of the API.

(Plain httpx for now; they move onto :mod:`fleetpulse.client` once it has claim calls.)"""

from __future__ import annotations

import getpass
import socket
import sys
import uuid
from collections.abc import Callable
from typing import Any, TextIO

import httpx
from rich.console import Console
from rich.table import Table

from fleetpulse.config import Settings
from fleetpulse.console.commands import api_url_of

__all__ = [
    "claims_table",
    "fetch_agents",
    "resolve_agent",
    "run_claims",
    "run_cordon",
    "run_uncordon",
]


PAGE = 10_000


def _base(settings: Settings, api_url: str | None) -> str:
    return api_url_of(settings, api_url)


def _headers(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


def fetch_agents(client: httpx.Client) -> list[dict[str, Any]]:
    """Every registry row, page by page."""
    rows: list[dict[str, Any]] = []
    after: str | None = None
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


def resolve_agent(target: str, rows: list[dict[str, Any]]) -> str:
    """An agent id from an id or a hostname; a hostname must name exactly one agent."""
    try:
        return str(uuid.UUID(target))
    except ValueError:
        pass
    found = [r["agent_id"] for r in rows if r["hostname"] == target]
    if len(found) == 1:
        return str(found[0])
    if not found:
        raise LookupError(f"no agent with hostname {target!r}")
    raise LookupError(f"{len(found)} agents have hostname {target!r}; give the agent id")


def _call(url: str, action: Callable[[httpx.Client], int], token: str | None) -> int:
    try:
        with httpx.Client(base_url=url, headers=_headers(token), timeout=10) as client:
            return action(client)
    except httpx.HTTPStatusError as exc:
        status = exc.response.status_code
        try:
            detail = exc.response.json().get("detail", "")
        except ValueError:
            detail = exc.response.text[:200]
        hint = " (pass --token)" if status in (401, 403) else ""
        print(f"fleetpulse: the API at {url} answered {status}: {detail}{hint}", file=sys.stderr)
        return 1
    except httpx.HTTPError as exc:
        print(
            f"fleetpulse: no API at {url} ({type(exc).__name__}); start it with 'fleetpulse api'"
            " or pass --api-url",
            file=sys.stderr,
        )
        return 1
    except LookupError as exc:
        print(f"fleetpulse: {exc.args[0]}", file=sys.stderr)
        return 1


def _cordon_path(client: httpx.Client, target: str, gpu: str | None) -> str:
    agent = target if _is_uuid(target) else resolve_agent(target, fetch_agents(client))
    return f"/api/v1/agents/{agent}" + (f"/gpus/{gpu}" if gpu else "") + "/cordon"


def _is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


def run_cordon(
    settings: Settings,
    *,
    target: str,
    gpu: str | None,
    reason: str,
    by: str | None,
    api_url: str | None,
    token: str | None,
    out: TextIO | None = None,
) -> int:
    stream = out or sys.stdout
    author = by or f"{getpass.getuser()}@{socket.gethostname()}"

    def act(client: httpx.Client) -> int:
        response = client.post(
            _cordon_path(client, target, gpu), json={"reason": reason, "by": author}
        )
        response.raise_for_status()
        k = response.json()
        what = f"GPU {k['gpu_uuid']} of {k['hostname']}" if k["gpu_uuid"] else k["hostname"]
        again = "" if response.status_code == 201 else " (already cordoned; reason updated)"
        print(f"cordoned {what} ({k['agent_id']}) by {k['by']}: {k['reason']}{again}", file=stream)
        return 0

    return _call(_base(settings, api_url), act, token)


def run_uncordon(
    settings: Settings,
    *,
    target: str,
    gpu: str | None,
    api_url: str | None,
    token: str | None,
    out: TextIO | None = None,
) -> int:
    stream = out or sys.stdout

    def act(client: httpx.Client) -> int:
        path = _cordon_path(client, target, gpu)
        client.delete(path).raise_for_status()
        print(f"uncordoned {target}" + (f" GPU {gpu}" if gpu else ""), file=stream)
        return 0

    return _call(_base(settings, api_url), act, token)


def claims_table(items: list[dict[str, Any]]) -> Table:
    table = Table(title="fleetpulse claims", header_style="bold")
    for name in ("claim", "holder", "host", "GPUs (index: GiB)", "cores", "mem GiB", "expires"):
        table.add_column(name)
    for c in items:
        gpus = ", ".join(f"{g['index']}: {g['vram_gb']:g}" for g in c["gpus"]) or "-"
        table.add_row(
            c["claim_id"][:8],
            c["holder"],
            c["hostname"],
            gpus,
            str(c["cpu_cores"]),
            f"{c['mem_gb']:g}",
            c["expires_at"][:19].replace("T", " "),
        )
    return table


def run_claims(
    settings: Settings,
    *,
    holder: str | None,
    agent: str | None,
    api_url: str | None,
    token: str | None,
    out: TextIO | None = None,
) -> int:
    stream = out or sys.stdout

    def act(client: httpx.Client) -> int:
        params: dict[str, Any] = {}
        if holder:
            params["holder"] = holder
        if agent:
            params["agent_id"] = (
                agent if _is_uuid(agent) else resolve_agent(agent, fetch_agents(client))
            )
        response = client.get("/api/v1/claims", params=params)
        response.raise_for_status()
        items = response.json()["items"]
        console = Console(file=stream, width=160, highlight=False)
        console.print(claims_table(items))
        console.print(f"{len(items)} active claim(s)")
        return 0

    return _call(_base(settings, api_url), act, token)
