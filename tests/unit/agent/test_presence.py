"""Presence parsing (recorded outputs) and the offer policy on a fake clock."""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime, time
from typing import Any

import pytest

from fleetpulse.agent import FakeClock
from fleetpulse.agent.offer import (
    OfferHours,
    OfferPolicy,
    PresenceCollector,
    parse_hours,
    process_names,
    running_exclusive,
)
from fleetpulse.agent.presence import (
    MacSource,
    PresenceReading,
    WindowsSource,
    detect_source,
    logind_presence,
    parse_hid_idle,
    windows_idle_s,
)
from fleetpulse.config import AgentSettings, load_settings
from fleetpulse.errors import ConfigError

NOW_US = 1_764_990_000_000_000

# GetAll(org.freedesktop.login1.Session) of a GNOME Wayland session idle for 10 minutes,
# as busctl printed it on a Debian 12 desktop (trimmed to the properties the source reads)
GNOME_IDLE = {
    "Id": "2",
    "Type": "wayland",
    "Class": "user",
    "Remote": False,
    "Active": True,
    "IdleHint": True,
    "IdleSinceHint": NOW_US - 600_000_000,
    "LockedHint": True,
}
SSH = {"Id": "7", "Type": "tty", "Class": "user", "Remote": True, "IdleHint": False}
GREETER = {"Id": "c1", "Type": "x11", "Class": "greeter", "IdleHint": False}


def test_logind_idle_and_locked_of_a_graphical_session() -> None:
    reading = logind_presence([GNOME_IDLE, SSH], NOW_US)
    assert reading == PresenceReading(user_idle_s=600.0, locked=True, source="logind")


def test_logind_anyone_active_makes_the_machine_active_and_unlocked() -> None:
    active = {**GNOME_IDLE, "Id": "3", "IdleHint": False, "LockedHint": False}
    reading = logind_presence([GNOME_IDLE, active], NOW_US)
    assert (reading.user_idle_s, reading.locked) == (0.0, False)


def test_logind_without_a_graphical_user_session_knows_no_idle_time() -> None:
    assert logind_presence([SSH, GREETER], NOW_US).user_idle_s is None
    assert logind_presence([SSH, GREETER], NOW_US).locked is False
    assert logind_presence([], NOW_US).locked is None
    idle_no_since = {**GNOME_IDLE, "IdleSinceHint": 0}
    assert logind_presence([idle_no_since], NOW_US).user_idle_s == 0.0
    future = {**GNOME_IDLE, "IdleSinceHint": NOW_US + 5_000_000}  # clock stepped back
    assert logind_presence([future], NOW_US).user_idle_s == 0.0


def test_windows_idle_arithmetic_survives_the_tick_counter_wrapping() -> None:
    assert windows_idle_s(10_000, 4_000) == 6.0
    assert windows_idle_s(1_500, 2**32 - 500) == 2.0  # input 0.5 s before the wrap
    assert windows_idle_s(7, 7) == 0.0


# `ioreg -c IOHIDSystem -d 4 -r -k HIDIdleTime` on macOS 14 (trimmed)
IOREG = """+-o IOHIDSystem  <class IOHIDSystem, id 0x100000457, registered, matched, active>
    {
      "HIDIdleTime" = 12345678901
      "HIDParameters" = {"HIDClickTime"=500000000}
    }
+-o IOHIDSystem  <class IOHIDSystem, id 0x100000999>
    {
      "HIDIdleTime" = 512000000
    }
"""


def test_macos_hid_idle_time_is_parsed_in_seconds() -> None:
    assert parse_hid_idle(IOREG) == 0.512  # the least idle HID system
    assert parse_hid_idle("+-o IOHIDSystem\n  {}\n") is None


def test_macos_source_runs_ioreg_and_survives_its_failure() -> None:
    seen: list[Any] = []

    def run(command: Any) -> str:
        seen.append(tuple(command))
        return IOREG

    assert MacSource(run).read() == PresenceReading(user_idle_s=0.512, source="macos")
    assert seen[0][0] == "ioreg"

    def broken(command: Any) -> str:
        raise FileNotFoundError("ioreg")

    assert MacSource(broken).read().user_idle_s is None


def test_detect_source_by_name_and_platform(monkeypatch: pytest.MonkeyPatch) -> None:
    assert detect_source("none") is None
    assert isinstance(detect_source("auto", platform="darwin"), MacSource)
    with pytest.raises(OSError, match="Windows"):
        detect_source("windows")
    with pytest.raises(OSError, match="Windows-only"):
        WindowsSource()
    with pytest.raises(OSError, match="unknown"):
        detect_source("bogus")
    # Linux without a logind or a display: nothing, quietly
    monkeypatch.delenv("DISPLAY", raising=False)
    assert detect_source("auto", platform="linux", logind_bus="unix:path=/nonexistent") is None


def test_hours_parse_and_span_midnight() -> None:
    night = parse_hours("19:00-07:00")
    assert night == OfferHours(time(19), time(7))
    assert night.contains(time(23, 30))
    assert night.contains(time(6, 59))
    assert night.contains(time(19))
    assert not night.contains(time(7))
    assert not night.contains(time(12))
    day = parse_hours("09:00 - 17:30")
    assert day.contains(time(9))
    assert not day.contains(time(17, 30))
    assert parse_hours("00:00-00:00").contains(time(12))
    for bad in ("19:00", "7pm-8am", "25:00-01:00"):
        with pytest.raises(ValueError, match="HH:MM"):
            parse_hours(bad)


def test_exclusive_processes_match_case_insensitively_and_without_exe() -> None:
    wanted = ["Blender", "zoom", "steam.exe"]
    assert running_exclusive(wanted, ["bash", "BLENDER.EXE"]) == "Blender"
    assert running_exclusive(wanted, ["steam"]) == "steam.exe"
    assert running_exclusive(wanted, ["zoomer", ""]) is None
    assert running_exclusive([], ["blender"]) is None
    assert len(process_names()) > 0  # this test process at least


LOCAL_NOON = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)


def decide(
    policy: OfferPolicy,
    idle: float | None,
    *,
    locked: bool | None = False,
    exclusive: str | None = None,
    at: datetime = LOCAL_NOON,
) -> tuple[bool, str | None]:
    return policy.decide(PresenceReading(user_idle_s=idle, locked=locked), exclusive, at)


def test_the_default_policy_always_offers() -> None:
    policy = OfferPolicy.from_settings(AgentSettings())
    assert policy.always
    assert decide(policy, 0.0) == (True, None)
    assert decide(policy, None) == (True, None)


def test_idle_threshold() -> None:
    policy = OfferPolicy(idle_threshold_s=300)
    assert decide(policy, 299.0) == (False, "user_active")
    assert decide(policy, 300.0) == (True, None)
    assert decide(policy, 5.0, locked=True) == (True, None)  # locked: the owner is away
    assert decide(policy, None) == (True, None)  # unknown does not hold the machine back


def test_exclusive_process_wins_over_idle_and_hours_win_over_all() -> None:
    policy = OfferPolicy(
        idle_threshold_s=300, exclusive_processes=("blender",), hours=parse_hours("19:00-07:00")
    )
    night = datetime(2026, 12, 6, 22, 0, tzinfo=UTC)
    assert decide(policy, 10.0, at=LOCAL_NOON, exclusive="blender") == (False, "outside_hours")
    assert decide(policy, 10.0, at=night, exclusive="blender") == (
        False,
        "exclusive_process:blender",
    )
    assert decide(policy, 10.0, at=night) == (False, "user_active")
    assert decide(policy, 900.0, at=night) == (True, None)


def test_policy_settings_parse_from_toml_and_bad_hours_name_the_setting(tmp_path: Any) -> None:
    path = tmp_path / "fleetpulse.toml"
    path.write_text(
        '[agent]\noffer_idle_s = 600\noffer_exclusive_processes = ["blender", "zoom"]\n'
        'offer_hours = "19:00-07:00"\npresence_source = "logind"\n'
    )
    agent = load_settings(path, environ={}).agent
    policy = OfferPolicy.from_settings(agent)
    assert policy == OfferPolicy(
        idle_threshold_s=600.0,
        exclusive_processes=("blender", "zoom"),
        hours=OfferHours(time(19), time(7)),
    )
    path.write_text('[agent]\noffer_hours = "7pm-7am"\n')
    with pytest.raises(ConfigError, match=r"agent\.offer_hours"):
        load_settings(path, environ={})
    with pytest.raises(ConfigError, match=r"agent\.presence_source"):
        load_settings(None, environ={"FLEETPULSE_AGENT_PRESENCE_SOURCE": "beos"})


class ScriptedSource:
    name = "scripted"

    def __init__(self) -> None:
        self.idle: float | None = 0.0
        self.locked: bool | None = False
        self.block: threading.Event | None = None
        self.reads = 0
        self.closed = False

    def read(self) -> PresenceReading:
        self.reads += 1
        if self.block is not None:
            self.block.wait(10)
        return PresenceReading(user_idle_s=self.idle, locked=self.locked, source=self.name)

    def close(self) -> None:
        self.closed = True


async def test_the_collector_follows_the_clock_and_the_processes() -> None:
    clock = FakeClock(start=datetime(2026, 12, 6, 18, 59, tzinfo=UTC))
    source = ScriptedSource()
    running: list[str] = ["bash"]
    policy = OfferPolicy(
        idle_threshold_s=60, exclusive_processes=("zoom",), hours=parse_hours("19:00-07:00")
    )
    async with PresenceCollector(
        source, policy, now=clock.now, processes=lambda: running, tz=UTC
    ) as collector:

        async def offer() -> tuple[bool, str | None]:
            part = await collector.collect()
            assert part.presence is not None
            return part.presence.offered, part.presence.withheld_reason

        assert await offer() == (False, "outside_hours")
        await clock.advance(60)  # 19:00
        assert await offer() == (False, "user_active")
        source.idle = 61.0
        assert await offer() == (True, None)
        running.append("Zoom")
        assert await offer() == (False, "exclusive_process:zoom")
        running.remove("Zoom")
        part = await collector.collect()
        assert part.presence is not None
        assert (part.presence.user_idle_s, part.presence.source) == (61.0, "scripted")
    assert source.closed


async def test_a_wedged_source_costs_one_timeout_and_is_never_read_twice_at_once() -> None:
    source = ScriptedSource()
    source.block = threading.Event()
    collector = PresenceCollector(
        source, OfferPolicy(idle_threshold_s=60), now=FakeClock().now, timeout_s=0.05
    )
    first = await collector.collect()
    second = await collector.collect()
    for part in (first, second):
        assert part.presence is not None
        assert (part.presence.user_idle_s, part.presence.offered) == (None, True)
        assert part.errors[0].startswith("presence: TimeoutError")
    assert source.reads == 1
    source.block.set()
    source.block = None
    deadline = asyncio.get_running_loop().time() + 5
    while (await collector.collect()).errors:  # the late read's answer is taken when it comes
        assert asyncio.get_running_loop().time() < deadline
    await collector.collect()
    assert source.reads == 2


def test_process_names_from_a_proc_tree_restore_truncated_names(tmp_path: Any) -> None:
    from fleetpulse.agent.offer import proc_process_names

    def proc(pid: str, comm: str, cmdline: bytes = b"") -> None:
        (tmp_path / pid).mkdir()
        (tmp_path / pid / "comm").write_text(comm + "\n")
        (tmp_path / pid / "cmdline").write_bytes(cmdline)

    proc("1", "systemd")
    proc("42", "DaVinci Resolve"[:15], b"/opt/resolve/bin/DaVinci Resolve\0--x\0")
    proc("43", "kworker/0:1-eve")  # a kernel thread: no cmdline, keeps its comm
    (tmp_path / "self").mkdir()
    (tmp_path / "44").mkdir()  # gone between listing and reading
    names = proc_process_names(tmp_path)
    assert sorted(names) == ["DaVinci Resolve", "kworker/0:1-eve", "systemd"]
    assert running_exclusive(["davinci resolve"], names) == "davinci resolve"
