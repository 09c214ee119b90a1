"""Presence: how long the person at this machine has been idle, and whether it is locked.

One small source per platform, chosen at start by what the machine offers
(:func:`detect_source`); each has its I/O in ``read()`` and its parsing or arithmetic in
a pure function beside it, tested on recorded outputs:

- ``logind``  Linux with systemd-logind: the sessions' ``IdleHint``/``IdleSinceHint``/
  ``LockedHint`` over D-Bus (jeepney, pure Python), :func:`logind_presence`;
- ``x11``     Linux X11 without logind: the MIT-SCREEN-SAVER extension's idle time
  through ctypes on libXss;
- ``windows`` ``GetLastInputInfo`` against ``GetTickCount`` (ctypes), :func:`windows_idle_s`;
- ``macos``   ``HIDIdleTime`` from ``ioreg``, :func:`parse_hid_idle`.

A source that fails answers ``user_idle_s`` None (unknown), never raises into the heartbeat.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final, Literal, Protocol

import msgspec

__all__ = [
    "SOURCES",
    "LogindSource",
    "MacSource",
    "PresenceReading",
    "PresenceSource",
    "WindowsSource",
    "X11Source",
    "detect_source",
    "logind_presence",
    "parse_hid_idle",
    "windows_idle_s",
]

log = logging.getLogger(__name__)

SourceName = Literal["auto", "logind", "x11", "windows", "macos", "none"]
SOURCES: Final[tuple[SourceName, ...]] = ("auto", "logind", "x11", "windows", "macos", "none")
GRAPHICAL: Final = frozenset({"x11", "wayland", "mir"})
SYSTEM_BUS_SOCKET: Final = Path("/run/dbus/system_bus_socket")


class PresenceReading(msgspec.Struct, frozen=True, kw_only=True):
    user_idle_s: float | None = None
    locked: bool | None = None
    source: str = "none"


class PresenceSource(Protocol):
    name: str

    def read(self) -> PresenceReading: ...

    def close(self) -> None: ...


# --------------------------------------------------------------------------- logind


def logind_presence(sessions: Sequence[Mapping[str, Any]], now_us: int) -> PresenceReading:
    """The machine's presence from its logind sessions' properties (``GetAll`` of
    ``org.freedesktop.login1.Session``, variants unwrapped) at CLOCK_REALTIME ``now_us``.

    Only local graphical user sessions count (a remote SSH login or a login screen is not
    someone at the keyboard). Idle time is the smallest over them: anyone active makes the
    machine active. Locked only when every such session is locked. No such session: idle
    unknown, not locked (nobody is logged in at the screen)."""
    idle: list[float] = []
    locked: list[bool] = []
    for props in sessions:
        if props.get("Class", "user") != "user" or props.get("Remote", False):
            continue
        if props.get("Type") not in GRAPHICAL:
            continue
        if props.get("IdleHint", False):
            since_us = int(props.get("IdleSinceHint", 0))
            idle.append(max(0.0, (now_us - since_us) / 1e6) if since_us > 0 else 0.0)
        else:
            idle.append(0.0)
        locked.append(bool(props.get("LockedHint", False)))
    if not idle:
        return PresenceReading(
            user_idle_s=None, locked=False if sessions else None, source="logind"
        )
    return PresenceReading(user_idle_s=round(min(idle), 3), locked=all(locked), source="logind")


class LogindSource:
    """systemd-logind over the system bus (or ``bus``, any D-Bus address), one connection
    kept open and reopened after a failure."""

    name = "logind"
    SERVICE: Final = "org.freedesktop.login1"
    MANAGER_PATH: Final = "/org/freedesktop/login1"

    def __init__(self, bus: str = "SYSTEM", timeout_s: float = 1.0) -> None:
        self.bus = bus
        self.timeout_s = timeout_s
        self._conn: Any = None

    def _connection(self) -> Any:
        if self._conn is None:
            from jeepney.io.blocking import open_dbus_connection

            self._conn = open_dbus_connection(self.bus, auth_timeout=self.timeout_s)
        return self._conn

    def _call(self, message: Any) -> Any:
        from jeepney import DBusErrorResponse, MessageType

        reply = self._connection().send_and_get_reply(message, timeout=self.timeout_s)
        if reply.header.message_type == MessageType.error:
            raise DBusErrorResponse(reply)
        return reply.body

    def sessions(self) -> list[dict[str, Any]]:
        from jeepney import DBusAddress, Properties, new_method_call

        manager = DBusAddress(
            self.MANAGER_PATH, bus_name=self.SERVICE, interface=f"{self.SERVICE}.Manager"
        )
        listed = self._call(new_method_call(manager, "ListSessions"))[0]
        found: list[dict[str, Any]] = []
        for entry in listed:
            path = entry[4]
            session = DBusAddress(path, bus_name=self.SERVICE, interface=f"{self.SERVICE}.Session")
            props = self._call(Properties(session).get_all())[0]
            found.append({name: value for name, (_sig, value) in props.items()})
        return found

    def read(self) -> PresenceReading:
        try:
            sessions = self.sessions()
        except Exception as exc:  # a bus that went away, a timeout, an error reply
            self.close()
            log.debug("logind: %s", exc)
            return PresenceReading(source="logind")
        return logind_presence(sessions, time.time_ns() // 1000)

    def available(self) -> bool:
        try:
            self.sessions()
        except Exception:
            self.close()
            return False
        return True

    def close(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            with contextlib.suppress(OSError):
                conn.close()


# --------------------------------------------------------------------------- X11


class _XScreenSaverInfo(ctypes.Structure):
    _fields_ = [
        ("window", ctypes.c_ulong),
        ("state", ctypes.c_int),
        ("kind", ctypes.c_int),
        ("til_or_since", ctypes.c_ulong),
        ("idle", ctypes.c_ulong),
        ("eventMask", ctypes.c_ulong),
    ]


class X11Source:
    """The X server's idle time (MIT-SCREEN-SAVER), through ctypes on libX11 and libXss.
    Locking is not visible here: ``locked`` stays None."""

    name = "x11"

    def __init__(self, display: str | None = None) -> None:
        name = display if display is not None else os.environ.get("DISPLAY")
        if not name:
            raise OSError("no X display (DISPLAY is not set)")
        x11_path = ctypes.util.find_library("X11")
        xss_path = ctypes.util.find_library("Xss")
        if x11_path is None or xss_path is None:
            raise OSError("libX11 or libXss not found")
        self._x11 = ctypes.CDLL(x11_path)
        self._xss = ctypes.CDLL(xss_path)
        self._x11.XOpenDisplay.restype = ctypes.c_void_p
        self._x11.XOpenDisplay.argtypes = [ctypes.c_char_p]
        self._x11.XDefaultRootWindow.restype = ctypes.c_ulong
        self._x11.XDefaultRootWindow.argtypes = [ctypes.c_void_p]
        self._x11.XCloseDisplay.argtypes = [ctypes.c_void_p]
        self._x11.XFree.argtypes = [ctypes.c_void_p]
        self._xss.XScreenSaverQueryExtension.argtypes = [
            ctypes.c_void_p,
            ctypes.POINTER(ctypes.c_int),
            ctypes.POINTER(ctypes.c_int),
        ]
        self._xss.XScreenSaverAllocInfo.restype = ctypes.POINTER(_XScreenSaverInfo)
        self._xss.XScreenSaverQueryInfo.argtypes = [
            ctypes.c_void_p,
            ctypes.c_ulong,
            ctypes.POINTER(_XScreenSaverInfo),
        ]
        self._display = self._x11.XOpenDisplay(name.encode())
        if not self._display:
            raise OSError(f"cannot open X display {name!r}")
        event_base, error_base = ctypes.c_int(), ctypes.c_int()
        if not self._xss.XScreenSaverQueryExtension(
            self._display, ctypes.byref(event_base), ctypes.byref(error_base)
        ):
            self.close()
            raise OSError(f"X display {name!r} has no MIT-SCREEN-SAVER extension")
        self._info = self._xss.XScreenSaverAllocInfo()
        self._root = self._x11.XDefaultRootWindow(self._display)

    def read(self) -> PresenceReading:
        if not self._display:
            return PresenceReading(source="x11")
        if not self._xss.XScreenSaverQueryInfo(self._display, self._root, self._info):
            return PresenceReading(source="x11")
        return PresenceReading(user_idle_s=self._info.contents.idle / 1000.0, source="x11")

    def close(self) -> None:
        if getattr(self, "_display", None):
            if getattr(self, "_info", None):
                self._x11.XFree(self._info)
                self._info = None
            self._x11.XCloseDisplay(self._display)
            self._display = None


# --------------------------------------------------------------------------- Windows

TICK_WRAP: Final = 2**32  # GetTickCount and LASTINPUTINFO.dwTime are 32-bit milliseconds


def windows_idle_s(tick_now_ms: int, last_input_ms: int) -> float:
    """Seconds since the last input; both counters wrap every 49.7 days, so the difference
    is taken modulo 2**32 (an input just before a wrap is still a short idle after it)."""
    return ((tick_now_ms - last_input_ms) % TICK_WRAP) / 1000.0


if sys.platform == "win32":

    class _LastInputInfo(ctypes.Structure):
        _fields_ = [("cbSize", ctypes.c_uint), ("dwTime", ctypes.c_uint)]

    def _windows_idle() -> float | None:
        info = _LastInputInfo()
        info.cbSize = ctypes.sizeof(info)
        if not ctypes.windll.user32.GetLastInputInfo(ctypes.byref(info)):
            return None
        now = int(ctypes.windll.kernel32.GetTickCount()) & (TICK_WRAP - 1)
        return windows_idle_s(now, int(info.dwTime))

else:

    def _windows_idle() -> float | None:
        return None


class WindowsSource:
    """``GetLastInputInfo`` (input in this session) against ``GetTickCount``. Type-checked
    for win32, never run here."""

    name = "windows"

    def __init__(self) -> None:
        if sys.platform != "win32":
            raise OSError("GetLastInputInfo is Windows-only")

    def read(self) -> PresenceReading:
        return PresenceReading(user_idle_s=_windows_idle(), source=self.name)

    def close(self) -> None:
        pass


# --------------------------------------------------------------------------- macOS

_HID_IDLE = re.compile(r'"HIDIdleTime"\s*=\s*(\d+)')


def parse_hid_idle(ioreg_output: str) -> float | None:
    """Seconds idle from ``ioreg -c IOHIDSystem`` output (``"HIDIdleTime" = <ns>``);
    None when absent. Several HID systems: the least idle one."""
    values = [int(m) for m in _HID_IDLE.findall(ioreg_output)]
    return round(min(values) / 1e9, 3) if values else None


class MacSource:
    """``HIDIdleTime`` from ``ioreg``. Parsing tested here on recorded output; never run."""

    name = "macos"
    COMMAND: Final = ("ioreg", "-c", "IOHIDSystem", "-d", "4", "-r", "-k", "HIDIdleTime")

    def __init__(
        self, run: Callable[[Sequence[str]], str] | None = None, timeout_s: float = 1.0
    ) -> None:
        self.timeout_s = timeout_s
        self._run = run or self._ioreg

    def _ioreg(self, command: Sequence[str]) -> str:
        return subprocess.run(
            list(command), capture_output=True, text=True, check=True, timeout=self.timeout_s
        ).stdout

    def read(self) -> PresenceReading:
        try:
            output = self._run(self.COMMAND)
        except (OSError, subprocess.SubprocessError) as exc:
            log.debug("ioreg: %s", exc)
            return PresenceReading(source=self.name)
        return PresenceReading(user_idle_s=parse_hid_idle(output), source=self.name)

    def close(self) -> None:
        pass


# --------------------------------------------------------------------------- choice


def detect_source(
    name: str = "auto", *, platform: str = sys.platform, logind_bus: str = "SYSTEM"
) -> PresenceSource | None:
    """The presence source for this machine: ``name`` if given (OSError if it cannot work
    here), else the first that works of logind, X11 (Linux), Windows, macOS; None if none."""
    if name == "none":
        return None
    wanted = (
        [name]
        if name != "auto"
        else {
            "win32": ["windows"],
            "darwin": ["macos"],
        }.get(platform, ["logind", "x11"])
    )
    for candidate in wanted:
        try:
            if candidate == "logind":
                source = LogindSource(logind_bus)
                if name == "auto" and logind_bus == "SYSTEM" and not SYSTEM_BUS_SOCKET.exists():
                    continue
                if source.available():
                    return source
                if name != "auto":
                    raise OSError("systemd-logind does not answer on the system bus")
            elif candidate == "x11":
                return X11Source()
            elif candidate == "windows":
                return WindowsSource()
            elif candidate == "macos":
                if platform != "darwin" and name == "auto":
                    continue
                return MacSource()
            else:
                raise OSError(f"unknown presence source {candidate!r}")
        except OSError:
            if name != "auto":
                raise
    return None
