"""Presence sources against the real things: logind's D-Bus interfaces served on a real
dbus-daemon, and the MIT-SCREEN-SAVER extension of a real X server (Xvfb)."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fleetpulse.agent.presence import LogindSource, X11Source, detect_source
from tests.fixtures.logind import FakeLogind, dbus_daemon, session


@pytest.fixture
def logind(tmp_path: Path) -> Iterator[FakeLogind]:
    with dbus_daemon(tmp_path) as address:
        service = FakeLogind(address).start()
        try:
            yield service
        finally:
            service.stop()


def test_logind_source_reads_idle_and_lock_from_the_sessions(logind: FakeLogind) -> None:
    source = LogindSource(logind.address)
    try:
        now_us = time.time_ns() // 1000
        logind.sessions = {
            "2": session("2", idle_since_us=now_us - 600_000_000),
            "9": session("9", kind="tty", remote=True),  # an SSH login: not at the keyboard
        }
        reading = source.read()
        assert reading.source == "logind"
        assert reading.user_idle_s is not None
        assert 600 <= reading.user_idle_s < 660
        assert reading.locked is False

        logind.sessions["2"] = session("2", idle_since_us=now_us - 5_000_000, locked=True)
        reading = source.read()
        assert reading.user_idle_s is not None
        assert 5 <= reading.user_idle_s < 65
        assert reading.locked is True

        logind.sessions["3"] = session("3", kind="x11")  # someone active on another seat
        assert source.read().user_idle_s == 0.0
        assert source.read().locked is False
    finally:
        source.close()


def test_logind_source_is_detected_and_a_gone_service_reads_unknown(
    logind: FakeLogind,
) -> None:
    logind.sessions = {"2": session("2")}
    source = detect_source("logind", logind_bus=logind.address)
    assert isinstance(source, LogindSource)
    try:
        assert source.read().user_idle_s == 0.0
        logind.stop()
        reading = source.read()
        assert (reading.user_idle_s, reading.source) == (None, "logind")
    finally:
        source.close()


def test_a_named_logind_source_that_does_not_answer_is_an_error(tmp_path: Path) -> None:
    with dbus_daemon(tmp_path) as address, pytest.raises(OSError, match="logind"):
        detect_source("logind", logind_bus=address)


@pytest.fixture
def xvfb() -> Iterator[str]:
    binary = shutil.which("Xvfb")
    if binary is None:
        if os.environ.get("CI"):
            pytest.fail("Xvfb is missing: apt-get install xvfb (make services does)")
        pytest.skip("Xvfb is missing: apt-get install xvfb (make services does)")
    display = f":{90 + os.getpid() % 400}"
    proc = subprocess.Popen(
        [binary, display, "-nolisten", "tcp", "-screen", "0", "320x240x24"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 15
        socket = Path(f"/tmp/.X11-unix/X{display[1:]}")
        while not socket.exists():
            assert proc.poll() is None, "Xvfb exited"
            assert time.monotonic() < deadline, "Xvfb did not start"
            time.sleep(0.02)
        yield display
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_x11_source_reads_the_screen_saver_idle_time(xvfb: str) -> None:
    source = X11Source(xvfb)
    try:
        first = source.read()
        assert first.source == "x11"
        assert first.user_idle_s is not None
        assert first.locked is None
        deadline = time.monotonic() + 10
        later = source.read()
        while later.user_idle_s is not None and later.user_idle_s <= first.user_idle_s:
            assert time.monotonic() < deadline, "the X idle time never grew"
            time.sleep(0.05)
            later = source.read()
        assert later.user_idle_s is not None
        assert later.user_idle_s > first.user_idle_s
    finally:
        source.close()
    assert source.read().user_idle_s is None  # closed: unknown, no crash


def test_x11_source_without_a_display_is_an_os_error() -> None:
    with pytest.raises(OSError, match="display"):
        X11Source(":999")
