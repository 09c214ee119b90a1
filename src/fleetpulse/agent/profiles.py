"""Simulated machines for ``fleetpulse simulate``, demos and other components' tests.

Profiles (``--profile``):

* ``seed`` — exactly the original scenario's three agents, cycling for N > 3, with
  fixed numbers that capacity filters can rely on (no movement, load 0):
  ``seed-gpu-high`` 16 cores, 64 GB RAM (48 free), one "NVIDIA GeForce RTX 3060" 12 GB
  with exactly 8.0 GB free; ``seed-gpu-low`` 4 cores, 16 GB RAM (12 free), one
  "NVIDIA GeForce GTX 1650" 4 GB with exactly 2.0 GB free; ``seed-cpu-only`` 8 cores,
  32 GB RAM (24 free), no GPU.
* ``gpu-high`` — 16 cores, 64 GB, one RTX 4090 24 GB; free VRAM moves in [8, 20] GB,
  load in [0, 4].
* ``gpu-low`` — 4 cores, 16 GB, one GTX 1650 4 GB; free VRAM moves in [1, 2] GB, load
  in [0, 2].
* ``cpu-only`` — 8 cores, 32 GB, no GPU; load in [0, 6].
* ``mixed`` — each agent drawn (seeded) from a catalogue of workstations: 1–2× RTX 4090,
  RTX A6000 48 GB, RTX 3060 12 GB, Tesla T4 16 GB, or CPU-only with 8–64 cores.

Movement is a slow sine per metric with a phase drawn from (seed, agent index), so a
fleet is deterministic given its seed, agents differ, and dashboards show motion.
Agent ids are UUIDs derived from (profile, seed, index): a restarted simulation is the
same fleet.
"""

from __future__ import annotations

import math
import random
import uuid
from typing import Final

import msgspec

from fleetpulse.agent.collectors import Contribution, HostReading
from fleetpulse.messages import GpuMetrics

__all__ = ["PROFILES", "Machine", "Profile", "build_fleet"]

PROFILES: Final = ("mixed", "gpu-high", "gpu-low", "cpu-only", "seed")
_NAMESPACE: Final = uuid.UUID("6d1f3c52-5a0b-4c1e-9a57-0f1e2d3c4b5a")


class GpuSpec(msgspec.Struct, frozen=True):
    name: str
    vram_total_gb: float
    free_min_gb: float
    free_max_gb: float


class Profile(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    cpu_cores: int
    mem_total_gb: float
    mem_free_min_gb: float
    mem_free_max_gb: float
    load_max: float = 0.0
    gpus: tuple[GpuSpec, ...] = ()

    @property
    def fixed(self) -> bool:
        return (
            self.load_max == 0.0
            and self.mem_free_min_gb == self.mem_free_max_gb
            and all(g.free_min_gb == g.free_max_gb for g in self.gpus)
        )


_RTX3060 = GpuSpec("NVIDIA GeForce RTX 3060", 12.0, 8.0, 8.0)
_GTX1650_FIXED = GpuSpec("NVIDIA GeForce GTX 1650", 4.0, 2.0, 2.0)
_RTX4090 = GpuSpec("NVIDIA GeForce RTX 4090", 24.0, 8.0, 20.0)
_GTX1650 = GpuSpec("NVIDIA GeForce GTX 1650", 4.0, 1.0, 2.0)

SEED: Final = (
    Profile(
        name="seed-gpu-high",
        cpu_cores=16,
        mem_total_gb=64.0,
        mem_free_min_gb=48.0,
        mem_free_max_gb=48.0,
        gpus=(_RTX3060,),
    ),
    Profile(
        name="seed-gpu-low",
        cpu_cores=4,
        mem_total_gb=16.0,
        mem_free_min_gb=12.0,
        mem_free_max_gb=12.0,
        gpus=(_GTX1650_FIXED,),
    ),
    Profile(
        name="seed-cpu-only",
        cpu_cores=8,
        mem_total_gb=32.0,
        mem_free_min_gb=24.0,
        mem_free_max_gb=24.0,
    ),
)
NAMED: Final = {
    "gpu-high": Profile(
        name="gpu-high",
        cpu_cores=16,
        mem_total_gb=64.0,
        mem_free_min_gb=24.0,
        mem_free_max_gb=56.0,
        load_max=4.0,
        gpus=(_RTX4090,),
    ),
    "gpu-low": Profile(
        name="gpu-low",
        cpu_cores=4,
        mem_total_gb=16.0,
        mem_free_min_gb=6.0,
        mem_free_max_gb=12.0,
        load_max=2.0,
        gpus=(_GTX1650,),
    ),
    "cpu-only": Profile(
        name="cpu-only",
        cpu_cores=8,
        mem_total_gb=32.0,
        mem_free_min_gb=12.0,
        mem_free_max_gb=28.0,
        load_max=6.0,
    ),
}


def _mixed(rng: random.Random) -> Profile:
    kind = rng.choice(["4090", "4090x2", "a6000", "3060", "t4", "cpu"])
    if kind == "cpu":
        cores = rng.choice([8, 16, 32, 64])
        mem = float(cores * 4)
        return Profile(
            name="mixed-cpu",
            cpu_cores=cores,
            mem_total_gb=mem,
            mem_free_min_gb=mem * 0.2,
            mem_free_max_gb=mem * 0.9,
            load_max=cores * 0.8,
        )
    gpu, count, cores = {
        "4090": (GpuSpec("NVIDIA GeForce RTX 4090", 24.0, 2.0, 23.5), 1, 16),
        "4090x2": (GpuSpec("NVIDIA GeForce RTX 4090", 24.0, 2.0, 23.5), 2, 32),
        "a6000": (GpuSpec("NVIDIA RTX A6000", 48.0, 4.0, 47.0), 1, 24),
        "3060": (GpuSpec("NVIDIA GeForce RTX 3060", 12.0, 1.0, 11.5), 1, 8),
        "t4": (GpuSpec("Tesla T4", 16.0, 1.0, 15.0), 1, 8),
    }[kind]
    mem = float(cores * 4)
    return Profile(
        name=f"mixed-{kind}",
        cpu_cores=cores,
        mem_total_gb=mem,
        mem_free_min_gb=mem * 0.2,
        mem_free_max_gb=mem * 0.9,
        load_max=cores * 0.8,
        gpus=(gpu,) * count,
    )


class Machine:
    """One simulated machine: its id, hostname, profile and metrics at tick ``k``."""

    PERIOD_TICKS: Final = 40.0

    def __init__(self, profile: Profile, *, agent_id: uuid.UUID, hostname: str, rng: random.Random):
        self.profile = profile
        self.agent_id = agent_id
        self.hostname = hostname
        self._phases = [rng.uniform(0.0, 2 * math.pi) for _ in range(2 + len(profile.gpus))]
        self._uuids = [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in profile.gpus]
        self.ticks = 0

    def _wave(self, i: int, k: int, low: float, high: float) -> float:
        if low == high:
            return low
        x = 0.5 + 0.5 * math.sin(2 * math.pi * k / self.PERIOD_TICKS + self._phases[i])
        return round(low + (high - low) * x, 3)

    def contribution(self, k: int) -> Contribution:
        p = self.profile
        load = self._wave(0, k, 0.0, p.load_max)
        gpus = tuple(
            GpuMetrics(
                index=i,
                uuid=f"GPU-{self._uuids[i]}",
                name=g.name,
                vram_total_gb=g.vram_total_gb,
                vram_free_gb=self._wave(2 + i, k, g.free_min_gb, g.free_max_gb),
                util_pct=round(100.0 * (1 - (g.free_min_gb / g.vram_total_gb)), 1)
                if p.fixed
                else self._wave(2 + i, k + 20, 0.0, 100.0),
                temp_c=40.0 if p.fixed else self._wave(2 + i, k + 10, 35.0, 80.0),
                power_w=30.0 if p.fixed else self._wave(2 + i, k + 5, 20.0, 300.0),
            )
            for i, g in enumerate(p.gpus)
        )
        return Contribution(
            host=HostReading(
                cpu_load_1m=load,
                cpu_load_5m=round(load * 0.9, 3),
                cpu_load_15m=round(load * 0.8, 3),
                cpu_cores=p.cpu_cores,
                mem_total_gb=p.mem_total_gb,
                mem_available_gb=self._wave(1, k, p.mem_free_min_gb, p.mem_free_max_gb),
            ),
            gpus=gpus,
        )

    async def collect(self) -> Contribution:
        """The collector face, so an ``Agent`` can run as this machine."""
        part = self.contribution(self.ticks)
        self.ticks += 1
        return part


def build_fleet(profile: str, agents: int, *, seed: int = 0) -> list[Machine]:
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose one of {', '.join(PROFILES)}")
    fleet: list[Machine] = []
    for index in range(agents):
        rng = random.Random(f"{profile}:{seed}:{index}")
        if profile == "seed":
            chosen = SEED[index % len(SEED)]
        elif profile == "mixed":
            chosen = _mixed(rng)
        else:
            chosen = NAMED[profile]
        fleet.append(
            Machine(
                chosen,
                agent_id=uuid.uuid5(_NAMESPACE, f"{profile}:{seed}:{index}"),
                hostname=f"sim-{profile}-{index:05d}",
                rng=rng,
            )
        )
    return fleet
