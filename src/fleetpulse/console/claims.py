"""``fleetpulse cordon``, ``uncordon`` and ``claims``, through :mod:`fleetpulse.client`.

A machine is named by hostname or agent id; a hostname must name exactly one agent."""

from __future__ import annotations

import getpass
import socket
import sys
import uuid
from collections.abc import Callable, Sequence
from typing import TextIO

from rich.table import Table

from fleetpulse.client import Claim, Client
from fleetpulse.config import Settings
from fleetpulse.console.commands import PAGE, _api, _console, _guarded
from fleetpulse.errors import NotFound

__all__ = ["claims_table", "resolve_agent", "run_claims", "run_cordon", "run_uncordon"]


def resolve_agent(api: Client, target: str) -> str:
    """An agent id from an id or a hostname (looked up in the registry)."""
    try:
        return str(uuid.UUID(target))
    except ValueError:
        pass
    found = [a.agent_id for a in api.iter_agents(page_size=PAGE) if a.hostname == target]
    if len(found) == 1:
        return str(found[0])
    if not found:
        raise NotFound(f"no agent with hostname {target!r}")
    raise NotFound(f"{len(found)} agents have hostname {target!r}; give the agent id")


def _lookup(action: Callable[[], None]) -> int:
    """:func:`_guarded`, plus a hostname that names no agent (or several) as one line."""
    try:
        return _guarded(action)
    except NotFound as exc:
        print(f"fleetpulse: {exc}", file=sys.stderr)
        return 1


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
    """Take a machine (or one of its GPUs) out of the offer."""
    stream = out or sys.stdout
    author = by or f"{getpass.getuser()}@{socket.gethostname()}"

    def act() -> None:
        with _api(settings, api_url, token) as api:
            k = api.cordon(resolve_agent(api, target), reason=reason, by=author, gpu_uuid=gpu)
        what = f"GPU {k.gpu_uuid} of {k.hostname}" if k.gpu_uuid else k.hostname
        print(f"cordoned {what} ({k.agent_id}) by {k.by}: {k.reason}", file=stream)

    return _lookup(act)


def run_uncordon(
    settings: Settings,
    *,
    target: str,
    gpu: str | None,
    api_url: str | None,
    token: str | None,
    out: TextIO | None = None,
) -> int:
    """Put a cordoned machine (or GPU) back in the offer; idempotent."""
    stream = out or sys.stdout

    def act() -> None:
        with _api(settings, api_url, token) as api:
            api.uncordon(resolve_agent(api, target), gpu_uuid=gpu)
        print(f"uncordoned {target}" + (f" GPU {gpu}" if gpu else ""), file=stream)

    return _lookup(act)


def claims_table(items: Sequence[Claim]) -> Table:
    table = Table(title="fleetpulse claims", header_style="bold")
    for name in ("claim", "holder", "host", "GPUs (index: GiB)", "cores", "mem GiB", "expires"):
        table.add_column(name)
    for c in items:
        gpus = ", ".join(f"{g.index}: {g.vram_gb:g}" for g in c.gpus) or "-"
        table.add_row(
            str(c.claim_id)[:8],
            c.holder,
            c.hostname,
            gpus,
            str(c.cpu_cores),
            f"{c.mem_gb:g}",
            c.expires_at.strftime("%Y-%m-%d %H:%M:%S"),
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
    """Active claims, oldest first."""

    def show() -> None:
        with _api(settings, api_url, token) as api:
            agent_id = None if agent is None else resolve_agent(api, agent)
            items = api.claims(agent_id=agent_id, holder=holder).items
        console = _console(out)
        console.print(claims_table(items))
        console.print(f"{len(items)} active claim(s)")

    return _lookup(show)
