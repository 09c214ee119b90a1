"""``fleetpulse export``: agent samples of a time range to one Parquet file."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import polars as pl

from fleetpulse.analysis.load import DEFAULT_ENGINE, Engine, load_agent_samples, utc
from fleetpulse.config import Settings
from fleetpulse.errors import ConfigError

__all__ = ["export_samples", "run_export"]


def export_samples(
    url: str,
    out: str | Path,
    *,
    since: datetime,
    until: datetime | None = None,
    engine: Engine = DEFAULT_ENGINE,
) -> pl.DataFrame:
    """Write the samples with ``since <= sampled_at < until`` to ``out``, ordered by agent
    and time, and return them. The file is written beside its final name and moved into
    place, so a reader never sees half a file."""
    target = Path(out)
    frame = load_agent_samples(url, since=since, until=until, engine=engine).sort(
        "agent_id", "sampled_at"
    )
    partial = target.with_name(f".{target.name}.partial")
    frame.write_parquet(partial, compression="zstd", statistics=True)
    partial.replace(target)
    return frame


def run_export(settings: Settings, *, since: datetime, until: datetime | None, out: str) -> int:
    """The CLI entry point; naive timestamps are UTC and ``until`` defaults to now."""
    end = utc(until) if until is not None else datetime.now(UTC)
    start = utc(since)
    if start >= end:
        raise ConfigError(f"--since {start.isoformat()} is not before --until {end.isoformat()}")
    parent = Path(out).parent
    if not parent.is_dir():
        raise ConfigError(f"--out {out}: folder {parent} does not exist")
    frame = export_samples(settings.database.url, out, since=start, until=end)
    agents = frame.get_column("agent_id").n_unique()
    print(
        f"wrote {frame.height} samples of {agents} agents "
        f"({start.isoformat()} to {end.isoformat()}) to {out}"
    )
    return 0
