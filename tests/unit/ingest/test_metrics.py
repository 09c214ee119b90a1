"""Ingest metrics: names are the dashboards contract."""

from __future__ import annotations

from prometheus_client import generate_latest

from fleetpulse.ingest import IngestMetrics


def test_metric_names_match_the_dashboard_contract() -> None:
    metrics = IngestMetrics()
    text = generate_latest(metrics.registry).decode()
    for name in (
        'fleetpulse_ingest_messages_total{result="stored"}',
        'fleetpulse_ingest_messages_total{result="unauthorised"}',
        "fleetpulse_ingest_batch_size_bucket",
        "fleetpulse_ingest_commit_seconds_bucket",
        "fleetpulse_ingest_lag_seconds_bucket",
        "fleetpulse_ingest_queue_depth",
        "fleetpulse_ingest_db_retries_total",
        "fleetpulse_detector_runs_total",
        'fleetpulse_detector_transitions_total{to_status="offline"}',
        "fleetpulse_detector_leader",
        "fleetpulse_detector_sweep_seconds_bucket",
    ):
        assert name in text, name
    metrics.dead_letters.labels("malformed").inc()
    assert (
        'fleetpulse_ingest_dead_letters_total{reason="malformed"} 1.0'
        in generate_latest(metrics.registry).decode()
    )
    IngestMetrics()  # a second registry in one process does not collide
