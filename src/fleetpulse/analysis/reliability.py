"""Liveness history: status intervals, offline incidents and reliability.

Reliability is the definition the API serves: the share of a window (30 days) an agent
was online, where online time runs from a transition to ``online`` to the next transition
(or the end of the window), clipped to the window, and an agent first seen inside the
window is judged from its ``first_seen_at``.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Final

import polars as pl

from fleetpulse.analysis.load import utc
from fleetpulse.store import RELIABILITY_WINDOW

__all__ = [
    "RELIABILITY_WINDOW",
    "offline_incidents",
    "reliability",
    "rolling_reliability",
    "status_intervals",
]

_US: Final = pl.Datetime("us", "UTC")


def status_intervals(events: pl.DataFrame, *, until: datetime) -> pl.DataFrame:
    """One row per stretch of one status: from a transition to the agent's next one, the
    last one open until ``until``. Columns: agent_id, status, reason, started_at, ended_at
    (null while it lasts), end (``ended_at`` or ``until``)."""
    end = pl.lit(utc(until)).cast(_US)
    return (
        events.sort("agent_id", "at")
        .with_columns(ended_at=pl.col("at").shift(-1).over("agent_id"))
        .select(
            "agent_id",
            pl.col("to_status").alias("status"),
            "reason",
            pl.col("at").cast(_US).alias("started_at"),
            pl.col("ended_at").cast(_US),
        )
        .with_columns(end=pl.coalesce("ended_at", end))
        .filter(pl.col("started_at") < end)
    )


def offline_incidents(events: pl.DataFrame, *, until: datetime) -> pl.DataFrame:
    """Every stretch offline: when, why (``silence`` or ``shutdown``), how long (seconds,
    up to ``until`` when it still lasts), and whether it still lasts."""
    keys = [c for c in ("agent_id", "hostname", "pool_name") if c in events.columns]
    names = events.select(keys).unique(subset="agent_id")
    return (
        status_intervals(events, until=until)
        .filter(pl.col("status") == "offline")
        .join(names, on="agent_id", how="left")
        .select(
            *keys,
            "reason",
            "started_at",
            "ended_at",
            duration_s=(pl.col("end") - pl.col("started_at")).dt.total_microseconds() / 1e6,
            ongoing=pl.col("ended_at").is_null(),
        )
        .sort("started_at", "agent_id")
    )


def rolling_reliability(
    events: pl.DataFrame,
    registry: pl.DataFrame,
    *,
    start: datetime,
    end: datetime,
    every: str = "1d",
    window: timedelta = RELIABILITY_WINDOW,
) -> pl.DataFrame:
    """Each agent's reliability over the ``window`` before each instant from ``start`` to
    ``end`` in steps of ``every``. Columns: agent_id, hostname, pool_name, at,
    online_s, judged_s, reliability (null before the agent was first seen, or while it
    has no status event)."""
    times = pl.DataFrame(
        {"at": pl.datetime_range(utc(start), utc(end), every, eager=True, time_zone="UTC")}
    ).with_columns(pl.col("at").cast(_US))
    return _reliability_at(events, registry, times, window)


def reliability(
    events: pl.DataFrame,
    registry: pl.DataFrame,
    *,
    now: datetime,
    window: timedelta = RELIABILITY_WINDOW,
) -> pl.DataFrame:
    """Each agent's share of the ``window`` before ``now`` spent online."""
    times = pl.DataFrame({"at": [utc(now)]}).with_columns(pl.col("at").cast(_US))
    return _reliability_at(events, registry, times, window).drop("at")


def _reliability_at(
    events: pl.DataFrame, registry: pl.DataFrame, times: pl.DataFrame, window: timedelta
) -> pl.DataFrame:
    last = times.get_column("at").max()
    assert isinstance(last, datetime)
    online = status_intervals(events, until=last).filter(pl.col("status") == "online")
    first_event = events.group_by("agent_id").agg(first_event_at=pl.col("at").min().cast(_US))
    judged = (
        registry.select("agent_id", "hostname", "pool_name", pl.col("first_seen_at").cast(_US))
        .join(first_event, on="agent_id", how="left")
        .join(times, how="cross")
        .with_columns(
            from_=pl.max_horizontal(pl.col("at") - window, pl.col("first_seen_at")),
        )
    )
    overlap = (
        judged.join(online, on="agent_id")
        .with_columns(
            lo=pl.max_horizontal("started_at", "from_"),
            hi=pl.min_horizontal("end", "at"),
        )
        .group_by("agent_id", "at")
        .agg(
            online_s=(
                (pl.col("hi") - pl.col("lo")).dt.total_microseconds().clip(lower_bound=0)
            ).sum()
            / 1e6
        )
    )
    return (
        judged.join(overlap, on=["agent_id", "at"], how="left")
        .with_columns(
            online_s=pl.col("online_s").fill_null(0.0),
            judged_s=(pl.col("at") - pl.col("from_")).dt.total_microseconds().clip(lower_bound=0)
            / 1e6,
        )
        .with_columns(
            # Unknown, as the API says, until there is time to judge and an event to go by.
            reliability=pl.when(
                (pl.col("judged_s") > 0) & (pl.col("first_event_at") <= pl.col("at"))
            ).then((pl.col("online_s") / pl.col("judged_s")).clip(upper_bound=1.0))
        )
        .select("agent_id", "hostname", "pool_name", "at", "online_s", "judged_s", "reliability")
        .sort("hostname", "at")
    )
