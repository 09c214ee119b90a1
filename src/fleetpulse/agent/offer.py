"""Whether this machine is offered to jobs: the owner's policy against presence, processes
and the hour.

The policy (``[agent]`` in the TOML file): offer only after the user has been idle
``offer_idle_s`` seconds (default 0: always, the behaviour before presence existed; a
locked session counts as idle; an idle time that cannot be known does not hold the
machine back), never while one of ``offer_exclusive_processes`` runs, and only within
``offer_hours`` local time when set (``"19:00-07:00"`` spans midnight). The first reason
that applies is reported: ``outside_hours``, ``exclusive_process:<name>``, ``user_active``.
:meth:`OfferPolicy.decide` is pure; :class:`PresenceCollector` is its I/O shell.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, time, tzinfo
from pathlib import Path
from typing import NamedTuple

import msgspec

from fleetpulse.agent.collectors import Contribution
from fleetpulse.agent.presence import PresenceReading, PresenceSource
from fleetpulse.config import AgentSettings
from fleetpulse.errors import ConfigError
from fleetpulse.messages import Presence

__all__ = [
    "OfferHours",
    "OfferPolicy",
    "PresenceCollector",
    "parse_hours",
    "proc_process_names",
    "process_names",
    "running_exclusive",
]

log = logging.getLogger(__name__)


class OfferHours(NamedTuple):
    start: time
    end: time

    def contains(self, moment: time) -> bool:
        """Start inclusive, end exclusive; an end before the start spans midnight and equal
        ends mean the whole day."""
        moment = moment.replace(tzinfo=None)
        if self.start == self.end:
            return True
        if self.start < self.end:
            return self.start <= moment < self.end
        return moment >= self.start or moment < self.end


def parse_hours(text: str) -> OfferHours:
    """``"HH:MM-HH:MM"`` into :class:`OfferHours`; ValueError naming what is wrong."""
    parts = text.replace(" ", "").split("-")
    if len(parts) != 2:
        raise ValueError(f"expected HH:MM-HH:MM, got {text!r}")
    try:
        start, end = (time.fromisoformat(p) for p in parts)
    except ValueError:
        raise ValueError(f"expected HH:MM-HH:MM, got {text!r}") from None
    return OfferHours(start, end)


def _process_key(name: str) -> str:
    key = name.strip().casefold()
    return key.removesuffix(".exe")


def running_exclusive(wanted: Sequence[str], running: Iterable[str]) -> str | None:
    """The first of ``wanted`` (as configured) among the ``running`` process names; names
    compare case-insensitively and without a Windows ``.exe``."""
    if not wanted:
        return None
    present = {_process_key(name) for name in running if name}
    for name in wanted:
        if _process_key(name) in present:
            return name
    return None


COMM_LENGTH = 15  # the kernel truncates a process name in /proc/PID/comm to this


def proc_process_names(root: Path = Path("/proc")) -> list[str]:
    """Process names from ``/proc`` (Linux): ``comm``, or where the kernel truncated it,
    the program's file name from ``cmdline`` when that is what it was cut from (as psutil
    does). Processes that end or cannot be read meanwhile are skipped."""
    names: list[str] = []
    for entry in root.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            name = (entry / "comm").read_text().rstrip("\n")
            if len(name) >= COMM_LENGTH:
                argv0 = (entry / "cmdline").read_bytes().split(b"\0", 1)[0]
                program = os.path.basename(argv0.decode(errors="replace"))
                if program.startswith(name):
                    name = program
        except OSError:
            continue
        if name:
            names.append(name)
    return names


def process_names() -> list[str]:
    """Names of the processes running now (``/proc`` on Linux, else psutil)."""
    if Path("/proc/self/comm").is_file():
        return proc_process_names()
    return _psutil_process_names()


def _psutil_process_names() -> list[str]:
    import psutil

    names: list[str] = []
    for proc in psutil.process_iter(["name"]):
        name = proc.info.get("name")
        if name:
            names.append(str(name))
    return names


class OfferPolicy(msgspec.Struct, frozen=True, kw_only=True):
    idle_threshold_s: float = 0.0
    exclusive_processes: tuple[str, ...] = ()
    hours: OfferHours | None = None

    @classmethod
    def from_settings(cls, agent: AgentSettings) -> OfferPolicy:
        hours = None
        if agent.offer_hours:
            try:
                hours = parse_hours(agent.offer_hours)
            except ValueError as exc:
                raise ConfigError(
                    f"setting agent.offer_hours = {agent.offer_hours!r}: {exc}"
                ) from None
        return cls(
            idle_threshold_s=agent.offer_idle_s,
            exclusive_processes=tuple(agent.offer_exclusive_processes),
            hours=hours,
        )

    @property
    def always(self) -> bool:
        return self.idle_threshold_s <= 0 and not self.exclusive_processes and self.hours is None

    def decide(
        self, reading: PresenceReading, exclusive: str | None, local_now: datetime
    ) -> tuple[bool, str | None]:
        """(offered, withheld_reason) for this moment."""
        if self.hours is not None and not self.hours.contains(local_now.time()):
            return False, "outside_hours"
        if exclusive is not None:
            return False, f"exclusive_process:{exclusive}"[:128]
        if self.idle_threshold_s > 0 and not reading.locked:
            idle = reading.user_idle_s
            if idle is not None and idle < self.idle_threshold_s:
                return False, "user_active"
        return True, None


class PresenceCollector:
    """Presence and the offer decision as one collector. The source and the process scan
    run in a thread (D-Bus, ioreg and /proc are blocking), bounded by ``timeout_s``."""

    def __init__(
        self,
        source: PresenceSource | None,
        policy: OfferPolicy,
        *,
        now: Callable[[], datetime],
        processes: Callable[[], Iterable[str]] = process_names,
        tz: tzinfo | None = None,
        timeout_s: float = 2.0,
    ) -> None:
        self.source = source
        self.policy = policy
        self._now = now
        self._processes = processes
        self._tz = tz
        self.timeout_s = timeout_s
        self.last: tuple[bool, str | None] | None = None
        self._pending: asyncio.Future[tuple[PresenceReading, str | None]] | None = None

    def _observe(self) -> tuple[PresenceReading, str | None]:
        reading = self.source.read() if self.source is not None else PresenceReading()
        exclusive = None
        if self.policy.exclusive_processes:
            exclusive = running_exclusive(self.policy.exclusive_processes, self._processes())
        return reading, exclusive

    async def collect(self) -> Contribution:
        errors: tuple[str, ...] = ()
        # A read that outlived its timeout still owns the source: never start a second one.
        if self._pending is None or self._pending.done():
            self._pending = asyncio.ensure_future(asyncio.to_thread(self._observe))
        try:
            reading, exclusive = await asyncio.wait_for(
                asyncio.shield(self._pending), timeout=self.timeout_s
            )
        except Exception as exc:  # a wedged bus or /proc: unknown presence, the heartbeat goes on
            name = self.source.name if self.source is not None else "none"
            reading, exclusive = PresenceReading(source=name), None
            text = str(exc) or f"no answer within {self.timeout_s:g}s"
            errors = (f"presence: {type(exc).__name__}: {text}"[:1024],)
        offered, reason = self.policy.decide(reading, exclusive, self._now().astimezone(self._tz))
        if self.last is not None and self.last != (offered, reason):
            log.info("machine %s", "offered" if offered else f"withheld ({reason})")
        self.last = (offered, reason)
        presence = Presence(
            user_idle_s=reading.user_idle_s,
            locked=reading.locked,
            source=reading.source,
            offered=offered,
            withheld_reason=reason,
        )
        return Contribution(presence=presence, errors=errors)

    async def __aenter__(self) -> PresenceCollector:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self.source is not None:
            self.source.close()
