"""The three-node cluster of scripts/cluster.sh and the fleetpulse processes around it.

``Cluster`` drives the nodes (who leads a queue, kill -9, restart) through the script and
the management API; ``Fleet`` starts ingest, API and agent processes as a user would, with
``[amqp] urls`` naming the three nodes; ``RecordingSpool`` remembers which heartbeats of a
simulator the broker confirmed.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from fleetpulse.agent.spool import MemorySpool, SpoolEntry
from fleetpulse.messages import Heartbeat, decode

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "cluster.sh"
PORT_BASE = int(os.environ.get("FLEETPULSE_CLUSTER_PORT_BASE", "5700"))
CLUSTER_DIR = Path(os.environ.get("FLEETPULSE_CLUSTER_DIR", "/var/tmp/fleetpulse-cluster"))
NODES = (1, 2, 3)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_for(
    condition: Callable[[], Any], timeout_s: float, what: str, every_s: float = 0.1
) -> Any:
    """Poll ``condition`` until it is truthy; its value. HTTP errors count as not yet."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            value = condition()
        except (httpx.HTTPError, OSError):
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(every_s)


def node_name(n: int) -> str:
    return f"fleetpulse-{n}@localhost"


class Cluster:
    def __init__(self) -> None:
        self.http = httpx.Client(auth=("guest", "guest"), timeout=5)

    def close(self) -> None:
        self.http.close()

    @staticmethod
    def script(*args: str, timeout_s: float = 240) -> str:
        result = subprocess.run(
            ["bash", str(SCRIPT), *args],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
        assert result.returncode == 0, result.stderr or result.stdout
        return result.stdout

    @staticmethod
    def amqp_url(n: int, vhost: str) -> str:
        return f"amqp://guest:guest@127.0.0.1:{PORT_BASE + n}/{quote(vhost, safe='')}"

    @staticmethod
    def api(n: int) -> str:
        return f"http://127.0.0.1:{PORT_BASE + 10000 + n}"

    @staticmethod
    def pid(n: int) -> int | None:
        try:
            pid = int((CLUSTER_DIR / f"node{n}" / "pid").read_text().strip())
            os.kill(pid, 0)
        except (OSError, ValueError):
            return None
        return pid

    def running(self, n: int) -> bool:
        try:
            body = self.http.get(f"{self.api(n)}/api/overview").json()
        except (httpx.HTTPError, ValueError):
            return False
        return bool(body.get("node") == node_name(n))

    def alive(self) -> list[int]:
        return [n for n in NODES if self.running(n)]

    def get(self, path: str) -> Any:
        """GET from the first node that answers."""
        for n in self.alive():
            try:
                response = self.http.get(f"{self.api(n)}{path}")
            except httpx.HTTPError:
                continue
            if response.status_code == 200:
                return response.json()
        return None

    def create_vhost(self, vhost: str) -> None:
        n = self.alive()[0]
        self.http.put(f"{self.api(n)}/api/vhosts/{quote(vhost, safe='')}").raise_for_status()
        self.http.put(
            f"{self.api(n)}/api/permissions/{quote(vhost, safe='')}/guest",
            json={"configure": ".*", "write": ".*", "read": ".*"},
        ).raise_for_status()

    def delete_vhost(self, vhost: str) -> None:
        for n in self.alive()[:1]:
            self.http.delete(f"{self.api(n)}/api/vhosts/{quote(vhost, safe='')}")

    def queue(self, vhost: str, name: str) -> dict[str, Any] | None:
        queue = self.get(f"/api/queues/{quote(vhost, safe='')}/{quote(name, safe='')}")
        return queue if isinstance(queue, dict) else None

    def leader(self, vhost: str, name: str) -> int | None:
        """The node number leading a quorum queue (as the nodes still up see it)."""
        queue = self.queue(vhost, name) or {}
        leader = queue.get("leader") or queue.get("node")
        for n in NODES:
            if leader == node_name(n):
                return n
        return None

    def kill(self, n: int) -> None:
        pid = self.pid(n)
        assert pid is not None, f"node {n} has no live pid"
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: self.pid(n) is None, 10, f"node {n} to die")

    def start(self, *nodes: int) -> None:
        """Start nodes again with their data, all at once; returns when each answers."""
        children = [
            subprocess.Popen(
                ["bash", str(SCRIPT), "start", str(n)],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            for n in nodes
        ]
        for child in children:
            out, _ = child.communicate(timeout=240)
            assert child.returncode == 0, out


class RecordingSpool(MemorySpool):
    """A simulator's spool that remembers each heartbeat the broker confirmed (the publisher
    removes an entry only after its confirm)."""

    def __init__(self, max_bytes: int = 64 * 1024 * 1024) -> None:
        super().__init__(max_bytes)
        self._bodies: dict[int, bytes] = {}
        self.confirmed: set[tuple[str, int]] = set()
        self.confirmed_total = 0

    def peek(self, limit: int) -> list[SpoolEntry]:
        entries = super().peek(limit)
        for entry in entries:
            self._bodies[entry.id] = entry.body
        return entries

    def remove(self, ids: Iterable[int]) -> None:
        ids = list(ids)
        for i in ids:
            body = self._bodies.pop(i, None)
            if body is None:
                continue
            message = decode(body)
            if isinstance(message, Heartbeat):
                self.confirmed.add((str(message.agent_id), message.seq))
                self.confirmed_total += 1
        super().remove(ids)


@dataclass
class Process:
    name: str
    popen: subprocess.Popen[bytes]
    port: int = 0
    log: Path | None = None

    def alive(self) -> bool:
        return self.popen.poll() is None


@dataclass
class Fleet:
    """fleetpulse processes (ingest, api, agent) as separate OS processes."""

    env: dict[str, str]
    logs: Path
    processes: list[Process] = field(default_factory=list)

    def start(self, name: str, args: list[str], port: int = 0, **env: str) -> Process:
        log = self.logs / f"{name}.log"
        child_env = {**self.env, **env}
        with log.open("wb") as out:
            popen = subprocess.Popen(
                [sys.executable, "-m", "fleetpulse", *args],
                env=child_env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        process = Process(name, popen, port, log)
        self.processes.append(process)
        return process

    def ingest(self, name: str) -> Process:
        port = free_port()
        return self.start(name, ["ingest"], port, FLEETPULSE_INGEST_METRICS_PORT=str(port))

    def api(self, name: str) -> Process:
        port = free_port()
        return self.start(name, ["api"], port, FLEETPULSE_API_PORT=str(port))

    def stop(self, process: Process, sig: int = signal.SIGTERM, timeout_s: float = 20) -> int:
        if process.alive():
            process.popen.send_signal(sig)
        try:
            return process.popen.wait(timeout_s)
        except subprocess.TimeoutExpired:
            process.popen.kill()
            return process.popen.wait(5)

    def stop_all(self) -> None:
        for process in reversed(self.processes):
            self.stop(process)

    def tail(self) -> str:
        parts = []
        for process in self.processes:
            if process.log is not None and process.log.exists():
                lines = process.log.read_text(errors="replace").splitlines()[-15:]
                parts.append(f"--- {process.name}\n" + "\n".join(lines))
        return "\n".join(parts)


def metric(port: int, name: str, labels: str = "") -> float:
    """One sample of a Prometheus text endpoint (0 when absent)."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    wanted = f"{name}{{{labels}}}" if labels else name
    for line in text.splitlines():
        if line.startswith(wanted + " "):
            return float(line.split()[-1])
    return 0.0
