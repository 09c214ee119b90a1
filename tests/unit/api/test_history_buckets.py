"""History bucket widths: parsed from the query or chosen from the range."""

from __future__ import annotations

from datetime import timedelta

from fleetpulse.api.routes.agents import _auto_bucket, parse_bucket


def test_bucket_parsing_and_automatic_width() -> None:
    assert parse_bucket("90") == timedelta(seconds=90)
    assert parse_bucket("5m") == timedelta(minutes=5)
    assert parse_bucket("2h") == timedelta(hours=2)
    assert parse_bucket("1d") == timedelta(days=1)
    assert _auto_bucket(timedelta(hours=1), 10_000) == timedelta(seconds=10)
    assert _auto_bucket(timedelta(days=30), 10_000) == timedelta(hours=3)
    assert _auto_bucket(timedelta(days=3650), 10_000) == timedelta(seconds=876_000)
