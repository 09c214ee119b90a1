"""``fleetpulse ingest``: the worker, the detector and the metrics endpoint, wired together."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable
from datetime import datetime

from prometheus_client import start_http_server

from fleetpulse.config import Settings
from fleetpulse.ingest.detector import SilenceDetector
from fleetpulse.ingest.metrics import IngestMetrics
from fleetpulse.ingest.worker import Ingest, utc_now

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
    loop = asyncio.get_running_loop()
    ingest = Ingest(settings, metrics=metrics, clock=clock)

    def on_signal() -> None:
        stop.set()
        ingest.request_stop()

    if install_signals:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, on_signal)
    try:
        async with contextlib.AsyncExitStack() as stack:
            await stack.enter_async_context(ingest)
            if settings.ingest.detector_enabled:
                await stack.enter_async_context(
                    SilenceDetector(settings, metrics=metrics, clock=clock)
                )
            await stop.wait()
            log.info("ingest stopping: draining in-flight batch")
    finally:
        if install_signals:
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(signum)
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
    return 0


def run_ingest(settings: Settings) -> int:
    """Block running ingest (on uvloop when available); exit status 0 after a clean stop."""
    try:
        import uvloop

        factory: Callable[[], asyncio.AbstractEventLoop] | None = uvloop.new_event_loop
    except ImportError:  # pragma: no cover - uvloop is a dependency
        factory = None
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(serve(settings))
