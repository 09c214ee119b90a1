"""``fleetpulse ingest``: the worker, the detector and the metrics endpoint, wired together."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import datetime

from prometheus_client import start_http_server

from fleetpulse.config import Settings
from fleetpulse.ingest.detector import SilenceDetector
from fleetpulse.ingest.metrics import IngestMetrics
from fleetpulse.ingest.worker import Ingest, utc_now
from fleetpulse.lifecycle import run_main, stop_signals

__all__ = ["run_ingest", "serve"]

log = logging.getLogger(__name__)


async def serve(
    settings: Settings,
    *,
    stop: asyncio.Event | None = None,
    clock: Callable[[], datetime] = utc_now,
    install_signals: bool = True,
) -> int:
    """Run until ``stop`` is set (or SIGINT/SIGTERM): stop intake, drain, ack, close."""
    stop = stop or asyncio.Event()
    metrics = IngestMetrics()
    server, thread = start_http_server(
        settings.ingest.metrics_port, settings.ingest.metrics_host, registry=metrics.registry
    )
    log.info(
        "ingest metrics on http://%s:%d/metrics", settings.ingest.metrics_host, server.server_port
    )
    ingest = Ingest(settings, metrics=metrics, clock=clock)

    def on_signal() -> None:
        stop.set()
        ingest.request_stop()

    try:
        async with contextlib.AsyncExitStack() as stack:
            if install_signals:
                stack.enter_context(stop_signals(on_signal))
            await stack.enter_async_context(ingest)
            if settings.ingest.detector_enabled:
                await stack.enter_async_context(
                    SilenceDetector(settings, metrics=metrics, clock=clock)
                )
            await stop.wait()
            log.info("ingest stopping: draining in-flight batch")
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
    return 0


def run_ingest(settings: Settings) -> int:
    """Block running ingest (on uvloop when available); exit status 0 after a clean stop."""
    return run_main(serve(settings))
