"""Ingest's HTTP endpoint: ``/metrics`` (Prometheus), ``/healthz`` and ``/readyz``.

``/readyz`` answers 503 with one reason per line while ingest is not consuming or its broker
topology is broken (the heartbeat exchange deleted or re-declared, the queue unbound): an
orchestrator or a load balancer sees a fault that would otherwise only show as silence.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

__all__ = ["serve_endpoint"]


def serve_endpoint(
    host: str,
    port: int,
    registry: CollectorRegistry,
    problems: Callable[[], list[str]],
) -> tuple[ThreadingHTTPServer, threading.Thread]:
    """Start the endpoint in a daemon thread; ``problems()`` empty means ready."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: scrapers reuse their connection

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._answer(200, generate_latest(registry), CONTENT_TYPE_LATEST)
            elif path == "/healthz":
                self._answer(200, b"ok\n")
            elif path == "/readyz":
                found = problems()
                if found:
                    self._answer(503, ("\n".join(found) + "\n").encode())
                else:
                    self._answer(200, b"ready\n")
            else:
                self._answer(404, b"not found\n")

        def _answer(self, status: int, body: bytes, content_type: str = "text/plain") -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            """Scrapes every few seconds are not worth a log line."""

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="ingest-endpoint", daemon=True)
    thread.start()
    return server, thread
