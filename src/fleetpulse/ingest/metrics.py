"""Ingest's Prometheus metrics, on a registry of their own (tests run several per process)."""

from __future__ import annotations

from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["IngestMetrics"]

_BATCH_BUCKETS: Final = (1, 5, 10, 25, 50, 100, 250, 500, 1000, 2000, 5000)
_SECONDS_BUCKETS: Final = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)
_LAG_BUCKETS: Final = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)


class IngestMetrics:
    """Every metric ingest exports; names are a contract with the dashboards."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.messages = Counter(
            "fleetpulse_ingest_messages",
            "Messages consumed, by result",
            ["result"],
            registry=r,
        )
        for result in ("stored", "duplicate", "invalid", "unauthorised"):
            self.messages.labels(result)
        self.batch_size = Histogram(
            "fleetpulse_ingest_batch_size",
            "Messages per committed batch",
            buckets=_BATCH_BUCKETS,
            registry=r,
        )
        self.commit_seconds = Histogram(
            "fleetpulse_ingest_commit_seconds",
            "Time to write and commit one batch",
            buckets=_SECONDS_BUCKETS,
            registry=r,
        )
        self.lag_seconds = Histogram(
            "fleetpulse_ingest_lag_seconds",
            "Receive time minus the agent's sampled_at",
            buckets=_LAG_BUCKETS,
            registry=r,
        )
        self.clock_offset_seconds = Histogram(
            "fleetpulse_ingest_clock_offset_seconds",
            "How far an agent's clock is off ingest's, per heartbeat (|sent_at - receive time|)",
            buckets=(0.1, 0.5, 1.0, 5.0, 30.0, 60.0, 300.0, 3600.0, 86_400.0, 31_536_000.0),
            registry=r,
        )
        self.clock_skewed = Counter(
            "fleetpulse_ingest_clock_skewed_samples",
            "Samples whose sampled_at lay outside the accepted bounds around their receive time"
            " (stored at the receive time, flagged)",
            registry=r,
        )
        self.identity_clashes = Counter(
            "fleetpulse_ingest_identity_clashes",
            "Agents found heard from two runs at once (two machines with one agent_id)",
            registry=r,
        )
        self.queue_depth = Gauge(
            "fleetpulse_ingest_queue_depth", "Messages ready in the ingest queue", registry=r
        )
        self.dead_letters = Counter(
            "fleetpulse_ingest_dead_letters",
            "Messages sent to the dead-letter queue, by reason",
            ["reason"],
            registry=r,
        )
        self.db_retries = Counter(
            "fleetpulse_ingest_db_retries",
            "Batch writes retried after a database fault",
            registry=r,
        )
        self.topology_ok = Gauge(
            "fleetpulse_ingest_topology_ok",
            "1 while the heartbeat exchange and the ingest queue's binding are as declared",
            registry=r,
        )
        self.topology_repairs = Counter(
            "fleetpulse_ingest_topology_repairs",
            "Broker topology faults found and repaired, by problem",
            ["problem"],
            registry=r,
        )
        for problem in ("exchange_missing", "exchange_mismatch"):
            self.topology_repairs.labels(problem)
        self.unacked_bytes = Gauge(
            "fleetpulse_ingest_unacked_bytes",
            "Bytes of message bodies ingest holds, received and not yet settled",
            registry=r,
        )
        self.consumer_pauses = Counter(
            "fleetpulse_ingest_consumer_pauses",
            "Times ingest stopped consuming because it held ingest.max_unacked_bytes",
            registry=r,
        )
        self.detector_runs = Counter(
            "fleetpulse_detector_runs", "Silence sweeps run by the acting detector", registry=r
        )
        self.detector_transitions = Counter(
            "fleetpulse_detector_transitions",
            "Agents the detector moved, by new status",
            ["to_status"],
            registry=r,
        )
        self.detector_transitions.labels("offline")
        self.detector_leader = Gauge(
            "fleetpulse_detector_leader", "1 while this process is the acting detector", registry=r
        )
        self.detector_lag_seconds = Gauge(
            "fleetpulse_detector_lag_seconds",
            "How far the detector's view trails the clock: receive times ingest cannot vouch"
            " for yet (a backlog, an outage); silence is judged at the view",
            registry=r,
        )
        self.detector_holding = Gauge(
            "fleetpulse_detector_holding",
            "1 while the detector judges nobody: no ingest worker reported its watermark lately",
            registry=r,
        )
        self.seen_through = Gauge(
            "fleetpulse_ingest_seen_through_timestamp_seconds",
            "This worker's watermark: every heartbeat received before it is committed",
            registry=r,
        )
        self.detector_sweep_seconds = Histogram(
            "fleetpulse_detector_sweep_seconds",
            "Time of one silence sweep statement",
            buckets=_SECONDS_BUCKETS,
            registry=r,
        )
