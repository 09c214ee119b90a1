"""Capacity and utilisation of the fleet, as pure functions on polars DataFrames."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import polars as pl

__all__ = ["free_vram_percentiles", "utilisation_by_pool"]

DEFAULT_QUANTILES: Final = (0.05, 0.25, 0.5, 0.75, 0.95)


def utilisation_by_pool(
    samples: pl.DataFrame, gpu_samples: pl.DataFrame | None = None, *, every: str = "1h"
) -> pl.DataFrame:
    """Share of each pool's CPU, memory and GPU in use, per time bucket of ``every``.

    CPU is the 1-minute load over the cores (capped at the cores), memory and VRAM what is
    not available over the total; each is a ratio of sums, so bigger machines weigh more.
    GPU columns come from ``gpu_samples`` (joined to their host sample for the pool) and
    are null for pools without GPUs.
    """
    bucketed = samples.with_columns(bucket=pl.col("sampled_at").dt.truncate(every))
    host = bucketed.group_by("bucket", "pool_name").agg(
        agents=pl.col("agent_id").n_unique(),
        cpu_util=pl.min_horizontal("cpu_load_1m", "cpu_cores").sum() / pl.col("cpu_cores").sum(),
        mem_util=1 - pl.col("mem_available_gb").sum() / pl.col("mem_total_gb").sum(),
    )
    if gpu_samples is None or gpu_samples.is_empty():
        gpu = pl.DataFrame(
            schema={
                "bucket": bucketed.schema["bucket"],
                "pool_name": pl.String,
                "gpu_vram_util": pl.Float64,
                "gpu_util": pl.Float64,
            }
        )
    else:
        gpu = (
            gpu_samples.join(
                bucketed.select("agent_id", "sampled_at", "pool_name", "bucket"),
                on=["agent_id", "sampled_at"],
            )
            .group_by("bucket", "pool_name")
            .agg(
                gpu_vram_util=1 - pl.col("vram_free_gb").sum() / pl.col("vram_total_gb").sum(),
                gpu_util=pl.col("util_pct").mean() / 100,
            )
        )
    return host.join(gpu, on=["bucket", "pool_name"], how="left").sort("bucket", "pool_name")


def free_vram_percentiles(
    gpu_samples: pl.DataFrame, quantiles: Sequence[float] = DEFAULT_QUANTILES
) -> pl.DataFrame:
    """Percentiles of free VRAM on one GPU, per GPU type (``name``): what a job can count on.

    Columns ``p5_free_gb``, ``p50_free_gb``…, plus how many GPUs and samples stand behind them.
    """
    for q in quantiles:
        if not 0 <= q <= 1:
            raise ValueError(f"quantile {q} is outside [0, 1]")
    return (
        gpu_samples.group_by(pl.col("name").alias("gpu_type"))
        .agg(
            pl.struct("agent_id", "gpu_index").n_unique().alias("gpus"),
            pl.len().alias("samples"),
            pl.col("vram_total_gb").max(),
            *[
                pl.col("vram_free_gb")
                .quantile(q, interpolation="linear")
                .alias(f"p{round(q * 100):g}_free_gb")
                for q in quantiles
            ],
        )
        .sort("gpu_type")
    )
