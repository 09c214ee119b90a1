"""Faults the agent must ride out: hung or missing GPUs, broker outages, restarts
with a full spool, a broker with nowhere to route to yet (DESIGN.md section 7)."""

from __future__ import annotations

import asyncio
import random
import signal
import sys
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

import msgspec
import pytest

from fleetpulse.agent import Agent, FakeClock, FakeHostCollector, GpuCollector, HostCollector
from fleetpulse.agent.fake_nvml import scenario_env
from tests.fixtures.agent import (
    Inbox,
    agent_settings,
    declare_exchange,
    eventually,
    running,
    via_port,
)
from tests.fixtures.tcp_proxy import TcpProxy

pytestmark = [pytest.mark.timeout(40), pytest.mark.slow(5)]

DEVICE = {
    "name": "NVIDIA GeForce RTX 4090",
    "uuid": "GPU-aaaa",
    "total_gb": 24.0,
    "free_gb": 20.5,
    "util": 3,
    "temp": 41,
    "power_mw": 31500,
}


def gpu(timeout_s: float, scenario: dict[str, object]) -> GpuCollector:
    return GpuCollector(
        timeout_s=timeout_s,
        respawn_initial_s=0.05,
        respawn_max_s=0.1,
        nvml_module="fake_nvml",
        env=scenario_env(scenario),
    )


async def test_a_gpu_probe_that_hangs_forever_lets_heartbeats_out_on_time(
    amqp_url: str, tmp_path: Path, inbox: Inbox
) -> None:
    timeout_s, interval_s = 0.25, 0.5
    settings = agent_settings(amqp_url, tmp_path, heartbeat_interval_s=interval_s)
    probe = gpu(timeout_s, {"devices": [DEVICE], "hang": "sample"})
    async with running(Agent(settings, collectors=[HostCollector(), probe])):
        beats = await inbox.wait_heartbeats(4, timeout_s=15)
    for beat in beats[:4]:
        metrics = beat.resource_metrics
        assert metrics.cpu_cores >= 1  # CPU metrics still go out
        assert metrics.gpu_type == "none"
        assert metrics.gpu_vram_available_gb == 0.0
        assert metrics.gpu_count == 0
        assert metrics.errors[0].startswith("gpu: ")
        assert beat.agent_stats is not None
        # never delayed beyond the timeout (plus slack for a loaded 2-core box)
        assert beat.agent_stats.collect_ms < (timeout_s + 0.35) * 1000
    assert "gpu: timeout after 0.25s" in {e for b in beats for e in b.resource_metrics.errors}
    # drift-corrected: the grid holds although every collection waited out the timeout
    offsets = [(b.sampled_at - beats[0].sampled_at).total_seconds() for b in beats[:4]]
    assert all(abs(o - i * interval_s) < 0.3 for i, o in enumerate(offsets))  # not 0.75 apart
    failures = [b.agent_stats.gpu_probe_failures_total for b in beats[:4]]  # type: ignore[union-attr]
    assert failures == sorted(failures)
    assert failures[-1] >= 3
    assert probe.spawns_total >= 2  # killed and respawned


async def test_a_respawned_probe_recovers_after_a_hang(tmp_path: Path) -> None:
    scenario = {"devices": [DEVICE], "hang": "sample", "hang_marker": str(tmp_path / "hung")}
    async with gpu(0.3, scenario) as probe:
        first = await probe.collect()
        assert first.errors == ("gpu: timeout after 0.3s",)
        assert first.gpu_failed
        await eventually(lambda: probe._respawn_at <= probe._monotonic())
        later = await probe.collect()
        deadline = asyncio.get_running_loop().time() + 10
        while later.errors == ("gpu: probe starting",):  # a loaded box starts Python slowly
            assert asyncio.get_running_loop().time() < deadline
            later = await probe.collect()
    assert later.errors == ()
    assert later.gpus is not None
    assert [g.vram_free_gb for g in later.gpus] == [20.5]
    assert probe.spawns_total == 2


async def test_one_lost_gpu_marks_only_that_device(
    amqp_url: str, tmp_path: Path, inbox: Inbox
) -> None:
    scenario = {
        "devices": [
            {**DEVICE, "uuid": "GPU-0", "free_gb": 10.0},
            {**DEVICE, "uuid": "GPU-1", "lost": True},
            {**DEVICE, "uuid": "GPU-2", "free_gb": 12.0, "unsupported": ["power_mw", "temp"]},
        ]
    }
    settings = agent_settings(amqp_url, tmp_path)
    agent = Agent(settings, collectors=[FakeHostCollector(), gpu(2.0, scenario)], clock=FakeClock())
    async with running(agent):
        [beat] = await inbox.wait_heartbeats(1)
    metrics = beat.resource_metrics
    assert metrics.gpu_count == 2
    assert metrics.gpu_vram_available_gb == 12.0
    assert metrics.gpu_vram_total_gb == 48.0
    assert [g.error for g in metrics.gpus] == [None, "gpu 1: GPU is lost", None]
    assert metrics.gpus[2].power_w is None
    assert metrics.gpus[2].temp_c is None
    assert metrics.gpus[0].power_w == 31.5
    assert metrics.errors == ["gpu 1: GPU is lost"]


async def test_the_probe_ignores_a_ctrl_c_meant_for_the_agent() -> None:
    async with gpu(2.0, {"devices": [DEVICE]}) as probe:
        await probe.collect()
        assert probe._proc is not None
        probe._proc.send_signal(signal.SIGINT)  # what a terminal sends the process group
        again = await probe.collect()
    assert again.errors == ()
    assert probe.spawns_total == 1


async def test_a_probe_that_cannot_be_started_is_an_error_not_a_crash(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sys, "executable", "/nonexistent/python")
    probe = GpuCollector(timeout_s=0.5, respawn_initial_s=0.01, respawn_max_s=0.01)
    async with probe:
        assert probe.failures_total == 1  # at start: logged, counted, the agent runs on
        await eventually(lambda: probe._respawn_at <= probe._monotonic())
        again = await probe.collect()
    assert again.gpu_failed
    assert again.errors[0].startswith("gpu: cannot start the probe: ")
    assert probe.spawns_total == 0


async def test_a_crashing_probe_is_reported_and_respawned(tmp_path: Path) -> None:
    async with gpu(1.0, {"devices": [DEVICE], "crash_after": 1}) as probe:
        ok = await probe.collect()
        crashed = await probe.collect()
    assert ok.errors == ()
    assert crashed.errors == ("gpu: probe exited with code 3",)
    assert probe.failures_total == 1


class LongestWait(random.Random):
    """Backoff at its ceiling every time, so the test knows no respawn is due."""

    def uniform(self, a: float, b: float) -> float:
        return b


async def test_a_probe_that_never_starts_is_waited_for_then_killed() -> None:
    probe = GpuCollector(
        timeout_s=0.1, start_timeout_s=0.4, nvml_module="fake_nvml",
        env=scenario_env({"hang": "import"}), respawn_initial_s=60.0, rng=LongestWait(),
    )  # fmt: skip
    try:
        starting = await probe.collect()  # spawns; the interpreter is not ready yet
        assert starting.errors == ("gpu: probe starting",)
        assert probe.failures_total == 0  # starting is not a probe failure
        await eventually(lambda: probe._monotonic() - probe._spawned_at > 0.4)
        killed = await probe.collect()
        assert killed.errors == ("gpu: probe did not start within 0.4s",)
        assert probe.failures_total == 1
        waiting = await probe.collect()  # in backoff: no new child yet
        assert waiting.errors == ("gpu: probe restarting after: probe did not start within 0.4s",)
        assert probe.spawns_total == 1
    finally:
        await probe.close()


async def test_no_driver_is_reported_once_and_costs_nothing_after(
    amqp_url: str, tmp_path: Path, inbox: Inbox, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="fleetpulse.agent.gpu")
    probe = GpuCollector(timeout_s=2.0)  # the real pynvml: this machine has no NVIDIA driver
    clock = FakeClock()
    agent = Agent(
        agent_settings(amqp_url, tmp_path), collectors=[HostCollector(), probe], clock=clock
    )
    async with running(agent):
        await inbox.wait_heartbeats(1)
        await eventually(lambda: clock.sleepers > 0)
        await clock.advance(1.0)
        await inbox.wait_heartbeats(2)
    assert probe.absent is not None
    assert "no NVIDIA driver" in probe.absent
    assert probe.spawns_total == 1
    assert probe._proc is None
    for beat in inbox.heartbeats:
        assert beat.resource_metrics.gpu_type == "none"
        assert beat.resource_metrics.errors == []
        assert beat.agent_stats is not None
        assert beat.agent_stats.gpu_probe_failures_total == 0
    assert sum("no NVIDIA driver" in r.getMessage() for r in caplog.records) == 1


async def test_a_cut_connection_loses_nothing_and_keeps_order(
    amqp_url: str, tmp_path: Path, inbox: Inbox
) -> None:
    broker = urlsplit(amqp_url)
    async with TcpProxy(broker.hostname or "127.0.0.1", broker.port or 5672) as proxy:
        clock = FakeClock()
        settings = agent_settings(via_port(amqp_url, proxy.port), tmp_path)
        agent = Agent(settings, collectors=[FakeHostCollector()], clock=clock)
        start = clock.now()
        async with running(agent):
            assert agent.publisher is not None
            await inbox.wait_heartbeats(1)
            await eventually(lambda: agent.spool.depth == 0, what="first confirm")
            await proxy.cut()
            await eventually(lambda: not agent.publisher.connected.is_set(), what="loss noticed")
            for n in range(1, 4):  # three samples while the broker is unreachable
                await eventually(lambda: clock.sleepers > 0)
                await clock.advance(1.0)
                await eventually(lambda n=n: agent.spool.depth == n, what=f"{n} spooled")
            assert len(inbox.heartbeats) == 1
            await proxy.restore()
            await inbox.wait_heartbeats(4)
            await eventually(lambda: clock.sleepers > 0)
            await clock.advance(1.0)
            await inbox.wait_heartbeats(5)
            await eventually(lambda: agent.spool.depth == 0)
        beats = inbox.heartbeats
        assert [b.seq for b in beats] == [0, 1, 2, 3, 4]
        assert [b.sampled_at for b in beats] == [start + timedelta(seconds=k) for k in range(5)]
        for spooled in beats[1:4]:  # stamped when it finally left, all at once
            assert spooled.sent_at == start + timedelta(seconds=3)
        assert beats[2].agent_stats is not None
        assert beats[2].agent_stats.spool_depth == 1  # it saw the sample before it waiting
        assert beats[4].agent_stats is not None
        assert beats[4].agent_stats.reconnects_total >= 1
        assert agent.publisher.reconnects_total >= 1
        assert proxy.connections_total >= 2


async def test_a_restart_with_a_full_spool_delivers_it_first(
    amqp_url: str, tmp_path: Path, inbox: Inbox
) -> None:
    async with TcpProxy("127.0.0.1", 1) as dead:  # a port that answers nothing
        await dead.cut()
        clock = FakeClock()
        offline = agent_settings(via_port(amqp_url, dead.port), tmp_path, goodbye_timeout_s=0.3)
        first = Agent(offline, collectors=[FakeHostCollector()], clock=clock)
        async with running(first):
            for _n in range(1, 3):
                await eventually(lambda: clock.sleepers > 0)
                await clock.advance(1.0)
            await eventually(lambda: first.spool.depth == 3, what="3 spooled")
        assert not first.goodbye_sent
    sampled = [clock.now() - timedelta(seconds=k) for k in (2, 1, 0)]
    second = Agent(
        agent_settings(amqp_url, tmp_path), collectors=[FakeHostCollector()], clock=clock
    )
    async with running(second):
        beats = await inbox.wait_heartbeats(4)
    assert first.identity is not None
    assert second.identity is not None
    # the same agent in a new run; the spooled samples keep the run that took them
    assert second.identity.incarnation != first.identity.incarnation
    same_run = msgspec.structs.replace(first.identity, incarnation=second.identity.incarnation)
    assert same_run == second.identity
    assert [b.incarnation for b in beats] == [first.identity.incarnation] * 3 + [
        second.identity.incarnation
    ]
    assert [b.sampled_at for b in beats[:3]] == sampled
    assert [b.seq for b in beats] == [0, 1, 2, 4]  # seq 3 went to the undelivered goodbye
    assert beats[3].sampled_at == clock.now()


async def test_samples_wait_in_the_spool_until_a_queue_is_bound(
    amqp_url: str, tmp_path: Path
) -> None:
    clock = FakeClock()
    await declare_exchange(amqp_url)  # as ingest does; nothing bound to it yet
    agent = Agent(agent_settings(amqp_url, tmp_path), collectors=[FakeHostCollector()], clock=clock)
    start = clock.now()
    async with agent:
        task = asyncio.create_task(agent.run())
        assert agent.publisher is not None
        await asyncio.wait_for(agent.publisher.connected.wait(), 10)
        await eventually(lambda: clock.sleepers > 0)
        assert agent.spool.depth == 1  # returned as unroutable, kept
        async with Inbox(amqp_url) as inbox:
            [beat] = await inbox.wait_heartbeats(1)
            agent.request_stop()
            await asyncio.wait_for(task, 5)
    assert beat.seq == 0
    assert beat.sampled_at == start
