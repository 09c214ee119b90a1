"""Waiting, retrying and stopping, one way for the whole house (a leaf: stdlib only).

* :class:`Backoff`: capped, exponential, fully jittered delays
  (``uniform(0, min(max_s, initial_s * 2**n))``), so a fleet retrying after one outage
  spreads out instead of reconnecting in lock-step. :func:`set_testing` makes every delay
  zero (stamina's switch of the same name), for tests that must not wait.
* :func:`wait_or_stop`: wait a number of seconds (or for an awaitable) unless a stop
  event is set first.
* :func:`stop_tasks`: ask background loops to finish, then cancel the late ones.
* :func:`run_main` and :func:`stop_signals`: a process's event loop (uvloop where
  installed) and SIGINT/SIGTERM turned into a stop callback, on Windows as well
  (``loop.add_signal_handler`` is Unix-only; there ``signal.signal`` hands the signal to
  the loop thread-safely).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import signal
import sys
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from typing import Any, Final

__all__ = [
    "Backoff",
    "is_testing",
    "run_main",
    "set_testing",
    "stop_signals",
    "stop_tasks",
    "wait_or_stop",
]

log = logging.getLogger(__name__)

STOP_GRACE_S: Final = 2.0
_testing = False


def set_testing(testing: bool) -> None:
    """With ``True``, every :class:`Backoff` delay is zero (attempts are still counted)."""
    global _testing
    _testing = testing


def is_testing() -> bool:
    return _testing


class Backoff:
    """``next_delay()`` is uniform in [0, ``ceiling()``], the ceiling doubling per attempt
    from ``initial_s`` up to ``max_s``; ``reset()`` after a success. ``wait`` sleeps the
    next delay through ``sleep`` (tests may pass an instant one)."""

    def __init__(
        self,
        initial_s: float,
        max_s: float,
        *,
        rng: random.Random | None = None,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    ) -> None:
        self.initial_s = initial_s
        self.max_s = max_s
        self.attempts = 0
        self._rng = rng or random.Random()
        self._sleep = sleep

    def ceiling(self) -> float:
        return min(self.max_s, self.initial_s * 2.0 ** min(self.attempts, 62))

    def next_delay(self) -> float:
        ceiling = self.ceiling()
        self.attempts += 1
        return 0.0 if _testing else self._rng.uniform(0.0, ceiling)

    def reset(self) -> None:
        self.attempts = 0

    async def wait(self, stop: asyncio.Event | None = None) -> bool:
        """Sleep the next delay, or less if ``stop`` is set first; True when stopped."""
        delay = self.next_delay()
        if stop is None:
            await self._sleep(delay)
            return False
        if self._sleep is asyncio.sleep:
            return await wait_or_stop(stop, delay)
        return await wait_or_stop(stop, self._sleep(delay))


async def wait_or_stop(stop: asyncio.Event, wait: float | Awaitable[Any]) -> bool:
    """Wait ``wait`` seconds, or for the awaitable, unless ``stop`` is set first.

    True when stopped before the wait was over (the awaitable is then cancelled)."""
    if not isinstance(wait, int | float):
        main = asyncio.ensure_future(wait)
        stopper = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait({main, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (main, stopper):
                if not task.done():
                    task.cancel()
            await asyncio.gather(main, stopper, return_exceptions=True)
        return not (main.done() and not main.cancelled())
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), wait)
    return stop.is_set()


async def stop_tasks(
    stop: asyncio.Event, tasks: list[asyncio.Task[None]], grace_s: float = STOP_GRACE_S
) -> None:
    """Ask background loops to finish (``stop``), give them ``grace_s``, cancel the rest."""
    stop.set()
    if not tasks:
        return
    _, pending = await asyncio.wait(tasks, timeout=grace_s)
    for task in pending:
        task.cancel()
    if pending:
        await asyncio.wait(pending, timeout=grace_s)
    for task in tasks:
        if task.done() and not task.cancelled() and task.exception() is not None:
            log.warning("%s ended with %r", task.get_name(), task.exception())


def run_main(main: Coroutine[Any, Any, int], *, fast_loop: bool = True) -> int:
    """Run a process's main coroutine (on uvloop when it is installed and ``fast_loop``);
    its exit status."""
    factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    try:
        if fast_loop:
            import uvloop

            factory = uvloop.new_event_loop
    except ImportError:  # not on Windows, and optional elsewhere: the stock loop then
        pass
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)


def _stop_signal_numbers(fallback: bool) -> list[int]:
    numbers: list[int] = [signal.SIGINT, signal.SIGTERM]
    if fallback and sys.platform == "win32":  # pragma: no cover - Windows only
        numbers.append(signal.SIGBREAK)  # Ctrl+Break, and what a console close sends
    return numbers


@contextlib.contextmanager
def stop_signals(stop: Callable[[], None]) -> Iterator[None]:
    """Call ``stop`` on SIGINT or SIGTERM while inside; the previous handling after.

    Call it with a running loop. Where the loop cannot take signal handlers (Windows, or a
    loop outside the main thread's control), ``signal.signal`` installs a handler that
    passes the signal on to the loop with ``call_soon_threadsafe``."""
    loop = asyncio.get_running_loop()
    installed: list[int] = []
    # What was there before, put back on the way out (the loop's own removal would leave
    # the default behind, not the handler it found).
    previous = {n: signal.getsignal(n) for n in _stop_signal_numbers(True)}

    def restore() -> None:
        for number in installed:
            loop.remove_signal_handler(number)
        installed.clear()
        for number, before in previous.items():
            if before is not None:
                signal.signal(number, before)

    try:
        for number in _stop_signal_numbers(False):
            loop.add_signal_handler(number, stop)
            installed.append(number)
    except (NotImplementedError, RuntimeError, ValueError):
        restore()

        def handler(signum: int, frame: object) -> None:
            loop.call_soon_threadsafe(stop)

        for number in _stop_signal_numbers(True):
            signal.signal(number, handler)
    try:
        yield
    finally:
        restore()
