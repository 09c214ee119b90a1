"""``fleetpulse ingest``: the worker, the detector and the metrics endpoint, wired together."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import datetime

from fleetpulse.config import Settings
from fleetpulse.ingest.detector import SilenceDetector
from fleetpulse.ingest.endpoint import serve_endpoint
from fleetpulse.ingest.memory import map_big_blocks
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
    map_big_blocks()
    metrics = IngestMetrics()
    ingest = Ingest(settings, metrics=metrics, clock=clock)
    server, thread = serve_endpoint(
        settings.ingest.metrics_host,
        settings.ingest.metrics_port,
        metrics.registry,
        ingest.readiness,
    )
    log.info(
        "ingest metrics on http://%s:%d/metrics (and /readyz)",
        settings.ingest.metrics_host,
        server.server_port,
    )

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
