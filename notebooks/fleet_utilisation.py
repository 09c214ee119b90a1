# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Fleet utilisation
#
# How busy is each pool, and how much GPU memory can a job count on? This notebook reads
# the fleet's history from TimescaleDB (`FLEETPULSE_DATABASE_URL`) with
# `fleetpulse.analysis`, and answers both questions with two plots:
#
# 1. CPU, memory and GPU-memory utilisation of each pool over time, hour by hour;
# 2. percentiles of free VRAM on one GPU, per GPU type — the p5 is what a scheduler can
#    promise nineteen times out of twenty.
#
# Set `FLEETPULSE_NOTEBOOK_DAYS` to look further back (default 7) and
# `FLEETPULSE_NOTEBOOK_FIGURES` to a folder to save the plots there.

# %%
import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import polars as pl

from fleetpulse import analysis

URL = os.environ.get("FLEETPULSE_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/fleetpulse")
DAYS = float(os.environ.get("FLEETPULSE_NOTEBOOK_DAYS", "7"))
FIGURES = os.environ.get("FLEETPULSE_NOTEBOOK_FIGURES")
until = datetime.now(UTC)
since = until - timedelta(days=DAYS)

# %% [markdown]
# ## Load the history
#
# Samples straight into polars (ADBC by default; `bench/polars_load.py` compares it with
# connectorx on a million rows).

# %%
started = time.perf_counter()
samples = analysis.load_agent_samples(URL, since=since, until=until)
gpus = analysis.load_gpu_samples(URL, since=since, until=until)
print(
    f"{samples.height:,} host samples and {gpus.height:,} GPU samples of "
    f"{samples['agent_id'].n_unique()} agents in {time.perf_counter() - started:.2f} s"
)
samples.group_by("pool_name").agg(
    agents=pl.col("agent_id").n_unique(), samples=pl.len(), gpu_types=pl.col("gpu_type").unique()
).sort("pool_name")

# %% [markdown]
# ## Utilisation by pool
#
# CPU is the 1-minute load over the cores, memory and VRAM what is in use over the total,
# each summed over a pool's machines in the hour — so a big machine weighs more than a
# small one.

# %%
utilisation = analysis.utilisation_by_pool(samples, gpus, every="1h")
pools = sorted(utilisation["pool_name"].unique())
colour = {pool: f"C{n}" for n, pool in enumerate(pools)}
panels = [("cpu_util", "CPU"), ("mem_util", "Memory"), ("gpu_vram_util", "GPU memory")]
fig, axes = plt.subplots(len(panels), 1, figsize=(10, 8), sharex=True, layout="constrained")
for ax, (column, label) in zip(axes, panels, strict=True):
    for pool in pools:
        frame = utilisation.filter(pl.col("pool_name") == pool).drop_nulls(column)
        if frame.height:
            ax.plot(frame["bucket"], frame[column] * 100, color=colour[pool], label=pool)
    ax.set_ylabel(f"{label} in use (%)")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
fig.legend(*axes[0].get_legend_handles_labels(), title="pool", loc="outside right upper")
fig.suptitle(f"Utilisation by pool, hourly, last {DAYS:g} days")
if FIGURES:
    fig.savefig(Path(FIGURES) / "utilisation_by_pool.png", dpi=100)
plt.show()

# %%
utilisation.group_by("pool_name").agg(
    pl.col("cpu_util", "mem_util", "gpu_vram_util").mean().round(3),
    peak_cpu=pl.col("cpu_util").max().round(3),
).sort("pool_name")

# %% [markdown]
# ## Free VRAM per GPU type
#
# The distribution of free memory on one GPU (a job runs on one device). A wide gap
# between p5 and p50 says the type is often nearly full: add machines of that type, or
# move work elsewhere.

# %%
percentiles = analysis.free_vram_percentiles(gpus)
percentiles

# %%
fig, ax = plt.subplots(figsize=(10, 3.5), constrained_layout=True)
for n, row in enumerate(percentiles.iter_rows(named=True)):
    ax.barh(n, row["vram_total_gb"], color="0.9", edgecolor="0.6")
    ax.barh(
        n,
        row["p95_free_gb"] - row["p5_free_gb"],
        left=row["p5_free_gb"],
        color="tab:blue",
        alpha=0.4,
    )
    ax.plot([row["p50_free_gb"]], [n], "o", color="tab:blue")
    ax.annotate(f"p5 {row['p5_free_gb']:.1f} GB", (row["p5_free_gb"], n + 0.3), fontsize=8)
ax.set_yticks(range(percentiles.height), percentiles["gpu_type"].to_list())
ax.set_xlabel("free VRAM on one GPU (GB): grey = total, band = p5–p95, dot = median")
ax.set_title("Free VRAM per GPU type")
if FIGURES:
    fig.savefig(Path(FIGURES) / "free_vram_by_gpu_type.png", dpi=100)
plt.show()
