"""``fleetpulse up``: the whole system on one machine, stopped cleanly by Ctrl-C.

Migrates the database, then starts ingest, the API, a real local agent and a small
simulated fleet as child processes (each in its own session, logs in the state dir),
prints where to look and a live one-line summary of the fleet, and on SIGINT/SIGTERM
stops them in reverse order — agents first, so their goodbyes are still ingested.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO, Any, Final

import httpx

from fleetpulse import store
from fleetpulse.config import Settings, mask_url

__all__ = ["Child", "fleet_summary", "run_up"]

STOP_TIMEOUT_S: Final = 10.0
READY_TIMEOUT_S: Final = 60.0
SUMMARY_INTERVAL_S: Final = 2.0
# Without these the system is down; agents may come and go.
ESSENTIAL: Final = frozenset({"ingest", "api"})


@dataclass
class Child:
    """One supervised ``fleetpulse`` subcommand."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    log: IO[bytes] | None = field(default=None, repr=False)

    def start(self) -> None:
        self.log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            self.argv,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def exit_code(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> int:
        """SIGTERM, wait, then SIGKILL; the exit code (negative: killed by that signal)."""
        process = self.process
        if process is None:
            return 0
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        if self.log is not None:
            self.log.close()
        return process.returncode


def _local(host: str) -> str:
    return "127.0.0.1" if host in {"0.0.0.0", "::", ""} else host


def fleet_summary(items: list[dict[str, Any]]) -> str:
    """One line: agents by status, pools, and free capacity of the online ones."""
    online = [a for a in items if a.get("status") == "online"]
    pools: dict[str, int] = {}
    for agent in online:
        pools[agent["pool_name"]] = pools.get(agent["pool_name"], 0) + 1
    vram = sum(float(a.get("gpu_vram_available_gb") or 0) for a in online)
    cores = sum(int(a.get("cpu_available_cores") or 0) for a in online)
    by_pool = " ".join(f"{p}:{n}" for p, n in sorted(pools.items())) or "-"
    return (
        f"agents {len(online)} online, {len(items) - len(online)} offline"
        f" | pools {by_pool} | free VRAM {vram:.1f} GB (best GPU per agent)"
        f" | {cores} idle cores"
    )


def _children(
    settings: Settings,
    config_path: str | None,
    simulated_agents: int,
    local_agent: bool,
    interval_s: float,
    log_dir: Path,
) -> list[Child]:
    base = [sys.executable, "-m", "fleetpulse", *(["--config", config_path] if config_path else [])]
    env = dict(os.environ)
    agent_env = dict(env)
    agent_env.setdefault("FLEETPULSE_AGENT_HEARTBEAT_INTERVAL_S", str(interval_s))
    specs: list[tuple[str, list[str], dict[str, str]]] = [
        ("ingest", ["ingest"], env),
        ("api", ["api"], env),
    ]
    if local_agent:
        specs.append(("agent", ["agent"], agent_env))
    if simulated_agents > 0:
        specs.append(
            (
                "simulate",
                [
                    "simulate",
                    "--agents",
                    str(simulated_agents),
                    "--profile",
                    "mixed",
                    "--interval",
                    str(interval_s),
                ],
                env,
            )
        )
    return [Child(name, [*base, *args], e, log_dir / f"{name}.log") for name, args, e in specs]


def _wait_ready(api_url: str, children: list[Child], deadline_s: float) -> str | None:
    """None once the API answers /readyz; else why not."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        for child in children:
            code = child.exit_code()
            if code is not None:
                return f"{child.name} exited with code {code}; see {child.log_path}"
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{api_url}/readyz", timeout=1).status_code == 200:
                return None
        time.sleep(0.2)
    return f"the API at {api_url} did not become ready within {deadline_s:.0f} s"


def run_up(
    settings: Settings,
    *,
    config_path: str | None,
    simulated_agents: int,
    local_agent: bool,
    interval_s: float,
) -> int:
    url = settings.database.url
    created = store.ensure_database(url)
    store.upgrade(url)
    print(
        f"database: {mask_url(url)} at revision {store.current_revision(url)}"
        + (" (created)" if created else ""),
        flush=True,
    )
    log_dir = Path(os.environ.get("FLEETPULSE_UP_LOG_DIR", ".state/logs"))
    log_dir.mkdir(parents=True, exist_ok=True)
    children = _children(settings, config_path, simulated_agents, local_agent, interval_s, log_dir)
    stopping = False

    def request_stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    previous = {s: signal.signal(s, request_stop) for s in (signal.SIGINT, signal.SIGTERM)}
    api_url = f"http://{_local(settings.api.host)}:{settings.api.port}"
    headers = (
        {"Authorization": f"Bearer {settings.api.auth_tokens[0]}"}
        if settings.api.auth_tokens
        else {}
    )
    failure: str | None = None
    try:
        for child in children:
            child.start()
            print(
                f"started {child.name} (pid {child.process.pid if child.process else '?'})",
                flush=True,
            )
        failure = _wait_ready(api_url, children, READY_TIMEOUT_S)
        if failure is None:
            ingest_metrics = f"http://{_local(settings.ingest.metrics_host)}:{settings.ingest.metrics_port}/metrics"
            print(
                f"fleetpulse is up\n  API        {api_url}/api/v1/agents\n"
                f"  capacity   {api_url}/api/v1/agents/available-capacity?min_gpu_vram_gb=8\n"
                f"  OpenAPI    {api_url}/schema\n  metrics    {api_url}/metrics\n"
                f"  ingest     {ingest_metrics}\n  status     fleetpulse status\n"
                f"  logs       {log_dir}/\nCtrl-C stops everything.",
                flush=True,
            )
        last_line = ""
        reported: set[str] = set()
        next_summary = 0.0
        while failure is None and not stopping:
            for child in children:
                code = child.exit_code()
                if code is None or child.name in reported:
                    continue
                if child.name in ESSENTIAL:
                    failure = f"{child.name} exited with code {code}; see {child.log_path}"
                else:
                    reported.add(child.name)
                    print(
                        f"{child.name} exited with code {code}; the rest keep running", flush=True
                    )
            now = time.monotonic()
            if failure is None and now >= next_summary:
                next_summary = now + SUMMARY_INTERVAL_S
                with contextlib.suppress(httpx.HTTPError, ValueError, KeyError):
                    response = httpx.get(f"{api_url}/api/v1/agents", headers=headers, timeout=2)
                    line = fleet_summary(response.json()["items"])
                    if line != last_line:
                        print(line, flush=True)
                        last_line = line
            time.sleep(0.1)
    finally:
        codes = [(child.name, child.stop()) for child in reversed(children)]
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        print("stopped: " + ", ".join(f"{name} ({code})" for name, code in codes), flush=True)
    if failure is not None:
        print(f"fleetpulse up: {failure}", file=sys.stderr)
        return 1
    return 0 if all(code == 0 for name, code in codes if name in ESSENTIAL) else 1
