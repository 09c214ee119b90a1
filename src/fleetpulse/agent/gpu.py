"""The GPU collector: NVML through a child process the agent can kill.

``nvml_probe.py`` runs as a child; each ``collect()`` asks it for one sample and waits
at most ``timeout_s``. A late, crashed or failing probe costs that heartbeat its GPU
part only (``gpu_type: "none"``, zeros, the reason in ``errors``): a late child is
terminated (SIGKILL after a grace period, in the background) and respawned after a
capped, jittered backoff. A child still starting its interpreter is not killed by the
sample timeout (that is Python, not NVML), only after ``start_timeout_s``. No driver
at all is reported once, at INFO, and the collector then costs nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import msgspec

from fleetpulse.agent.collectors import Contribution
from fleetpulse.lifecycle import Backoff
from fleetpulse.messages import GpuMetrics

__all__ = ["PROBE_SCRIPT", "GpuCollector"]

log = logging.getLogger(__name__)

PROBE_SCRIPT = Path(__file__).with_name("nvml_probe.py")
KILL_GRACE_S = 0.5  # between SIGTERM and SIGKILL of a late probe


class GpuCollector:
    def __init__(
        self,
        *,
        timeout_s: float = 2.0,
        respawn_initial_s: float = 0.5,
        respawn_max_s: float = 60.0,
        start_timeout_s: float = 10.0,
        nvml_module: str = "pynvml",
        xid_hold_s: float = 600.0,
        env: Mapping[str, str] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self.timeout_s = timeout_s
        self.start_timeout_s = start_timeout_s
        self.nvml_module = nvml_module
        self.xid_hold_s = xid_hold_s
        self._env = {**os.environ, **(env or {})}
        self._monotonic = monotonic
        self._backoff = Backoff(respawn_initial_s, respawn_max_s, rng=rng)
        self._proc: asyncio.subprocess.Process | None = None
        self._ready: asyncio.Task[bytes] | None = None
        self._spawned_at = 0.0
        self._respawn_at = 0.0
        self._last_error = ""
        self._reapers: set[asyncio.Task[None]] = set()
        self.absent: str | None = None
        self.failures_total = 0
        self.spawns_total = 0

    async def __aenter__(self) -> Self:
        """Start the probe and wait for its interpreter (not for NVML) up to
        ``start_timeout_s``, so the first heartbeat can already carry GPU metrics."""
        try:
            await self._spawn()
        except OSError as exc:
            self._fail_and_respawn_later(f"gpu: cannot start the probe: {exc}")
            return self
        assert self._ready is not None
        await asyncio.wait({self._ready}, timeout=self.start_timeout_s)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._proc is not None:
            self._kill()
        if self._reapers:
            await asyncio.wait(self._reapers, timeout=2.0)

    async def _spawn(self) -> None:
        self._proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(PROBE_SCRIPT),
            self.nvml_module,
            repr(float(self.xid_hold_s)),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env=self._env,
        )
        self.spawns_total += 1
        self._spawned_at = self._monotonic()
        assert self._proc.stdout is not None
        self._ready = asyncio.ensure_future(self._proc.stdout.readline())

    def _kill(self) -> None:
        """SIGTERM, SIGKILL after a grace period, reaped in the background: a child wedged
        in the driver may take a while to die and the heartbeat does not wait for it."""
        proc, ready = self._proc, self._ready
        self._proc = self._ready = None
        if proc is None:
            return
        if ready is not None and not ready.done():
            ready.cancel()
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        reaper = asyncio.ensure_future(self._reap(proc))
        self._reapers.add(reaper)
        reaper.add_done_callback(self._reapers.discard)

    @staticmethod
    async def _reap(proc: asyncio.subprocess.Process) -> None:
        try:
            await asyncio.wait_for(proc.wait(), timeout=KILL_GRACE_S)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), timeout=10.0)

    def _failed(self, reason: str, *, counted: bool = True) -> Contribution:
        if counted:
            self.failures_total += 1
            self._last_error = reason
        return Contribution(gpus=(), errors=(reason,), gpu_failed=True)

    def _fail_and_respawn_later(self, reason: str) -> Contribution:
        self._kill()
        self._respawn_at = self._monotonic() + self._backoff.next_delay()
        log.warning(
            "%s; GPU probe restarts in %.1fs",
            reason,
            self._respawn_at - self._monotonic(),
            extra={"reason": reason},
        )
        return self._failed(reason)

    async def collect(self) -> Contribution:
        if self.absent is not None:
            return Contribution(gpus=())
        start = self._monotonic()
        deadline = start + self.timeout_s
        if self._proc is None:
            if start < self._respawn_at:
                return self._failed(
                    f"gpu: probe restarting after: {self._last_error.removeprefix('gpu: ')}",
                    counted=False,
                )
            try:
                await self._spawn()
            except OSError as exc:
                return self._fail_and_respawn_later(f"gpu: cannot start the probe: {exc}")
        proc, ready = self._proc, self._ready
        assert proc is not None
        assert ready is not None
        if not ready.done():
            await asyncio.wait({ready}, timeout=max(0.0, deadline - self._monotonic()))
            if not ready.done():
                if self._monotonic() - self._spawned_at > self.start_timeout_s:
                    return self._fail_and_respawn_later(
                        f"gpu: probe did not start within {self.start_timeout_s:g}s"
                    )
                return self._failed("gpu: probe starting", counted=False)
        if ready.cancelled() or ready.exception() is not None or not ready.result():
            return await self._exited(proc, deadline)
        try:
            line = await asyncio.wait_for(
                self._exchange(proc), timeout=max(0.001, deadline - self._monotonic())
            )
        except TimeoutError:
            return self._fail_and_respawn_later(f"gpu: timeout after {self.timeout_s:g}s")
        except (ConnectionError, BrokenPipeError):
            return await self._exited(proc, deadline)
        if not line:
            return await self._exited(proc, deadline)
        return self._parse(line)

    @staticmethod
    async def _exchange(proc: asyncio.subprocess.Process) -> bytes:
        assert proc.stdin is not None
        assert proc.stdout is not None
        proc.stdin.write(b"sample\n")
        await proc.stdin.drain()
        return await proc.stdout.readline()

    async def _exited(self, proc: asyncio.subprocess.Process, deadline: float) -> Contribution:
        """The probe closed its output: report its exit code if it comes within the deadline."""
        code: int | None
        try:
            code = await asyncio.wait_for(
                proc.wait(), timeout=max(0.0, deadline - self._monotonic())
            )
        except TimeoutError:
            code = proc.returncode
        return self._fail_and_respawn_later(f"gpu: probe exited with code {code}")

    def _parse(self, line: bytes) -> Contribution:
        try:
            answer: dict[str, Any] = json.loads(line)
        except ValueError:
            return self._fail_and_respawn_later("gpu: probe sent garbage")
        if "absent" in answer:
            self.absent = str(answer["absent"])
            log.info("%s; GPU metrics off for this run", self.absent)
            self._kill()
            return Contribution(gpus=())
        if "error" in answer:
            return self._failed(str(answer["error"])[:1024])
        try:
            gpus = msgspec.convert(answer.get("gpus", []), tuple[GpuMetrics, ...])
        except (msgspec.ValidationError, ValueError) as exc:
            return self._failed(f"gpu: probe answer invalid: {exc}"[:1024])
        self._backoff.reset()
        errors = tuple(str(e)[:1024] for e in answer.get("errors", []))
        return Contribution(gpus=gpus, errors=errors)
