# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Reliability of the fleet
#
# Which machines can a scheduler trust? From the status transitions the silence detector
# records, this notebook lists every offline incident with its duration and plots each
# agent's rolling 30-day reliability — the share of the last 30 days it was online, the
# same definition the capacity API serves. Reads `FLEETPULSE_DATABASE_URL`; set
# `FLEETPULSE_NOTEBOOK_FIGURES` to save the plots.

# %%
import os
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
now = datetime.now(UTC)

events = analysis.load_status_events(URL)
registry = analysis.load_registry(URL)
print(f"{events.height} status transitions of {registry.height} agents")

# %% [markdown]
# ## Offline incidents
#
# Every stretch an agent spent offline: `silence` means the detector stopped hearing it,
# `shutdown` that it said goodbye. Ongoing incidents run up to now.

# %%
incidents = analysis.offline_incidents(events, until=now)
incidents.select(
    "hostname", "pool_name", "reason", "started_at", "ongoing",
    duration=pl.duration(seconds=pl.col("duration_s").round(0).cast(pl.Int64)),
)  # fmt: skip

# %%
per_agent = (
    incidents.group_by("hostname", "reason")
    .agg(hours=(pl.col("duration_s").sum() / 3600), incidents=pl.len())
    .sort("hostname")
)
fig, ax = plt.subplots(figsize=(10, 3), constrained_layout=True)
colours = {"silence": "tab:red", "shutdown": "tab:gray"}
for reason, frame in per_agent.partition_by("reason", as_dict=True).items():
    ax.barh(
        frame["hostname"], frame["hours"], color=colours.get(reason[0], "tab:blue"), label=reason[0]
    )
ax.set_xlabel("hours offline")
ax.set_title("Time offline per agent, by reason")
if per_agent.height:
    ax.legend()
plt.show()

# %% [markdown]
# ## Rolling 30-day reliability
#
# Evaluated every six hours over the history. An agent first seen inside the window is
# judged from its first heartbeat, so a new machine starts at its true record, not at a
# penalty for the days before it existed.

# %%
rolling = analysis.rolling_reliability(
    events, registry, start=now - timedelta(days=DAYS), end=now, every="6h"
)
fig, ax = plt.subplots(figsize=(10, 4), constrained_layout=True)
for host, frame in rolling.drop_nulls("reliability").partition_by("hostname", as_dict=True).items():
    ax.step(frame["at"], frame["reliability"] * 100, where="post", label=host[0])
ax.set_ylabel("online, last 30 days (%)")
ax.set_title("Rolling 30-day reliability per agent")
ax.grid(alpha=0.3)
ax.legend(loc="lower left", ncols=3, fontsize=8)
if FIGURES:
    fig.savefig(Path(FIGURES) / "reliability_rolling.png", dpi=100)
plt.show()

# %% [markdown]
# ## Least reliable first
#
# Today's 30-day reliability; the top of this table is where to look first.

# %%
analysis.reliability(events, registry, now=now).select(
    "hostname", "pool_name", pl.col("reliability").round(4), online_h=pl.col("online_s") / 3600,
    judged_h=pl.col("judged_s") / 3600,
).sort("reliability", nulls_last=True)  # fmt: skip
