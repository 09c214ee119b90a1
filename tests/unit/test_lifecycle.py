"""The house's one way to wait, retry and stop (fleetpulse.lifecycle)."""

from __future__ import annotations

import asyncio
import random
import signal
import time
from collections.abc import Iterator

import pytest

from fleetpulse import lifecycle
from fleetpulse.lifecycle import Backoff, run_main, stop_signals, stop_tasks, wait_or_stop


@pytest.fixture
def testing() -> Iterator[None]:
    lifecycle.set_testing(True)
    try:
        yield
    finally:
        lifecycle.set_testing(False)


def test_backoff_is_capped_exponential_with_full_jitter() -> None:
    backoff = Backoff(0.5, 4.0, rng=random.Random(1))
    ceilings = []
    for _ in range(8):
        ceilings.append(backoff.ceiling())
        assert 0.0 <= backoff.next_delay() <= ceilings[-1]
    assert ceilings == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0, 4.0, 4.0]
    backoff.reset()
    assert backoff.ceiling() == 0.5
    delays = {Backoff(1.0, 1.0, rng=random.Random(s)).next_delay() for s in range(20)}
    assert len(delays) == 20  # jittered: no lock-step


async def test_backoff_is_capped_jittered_and_resettable() -> None:
    slept: list[float] = []

    async def sleep(s: float) -> None:
        slept.append(s)

    backoff = Backoff(0.1, 1.0, sleep=sleep, rng=random.Random(7))
    for _ in range(10):
        await backoff.wait()
    assert all(0 <= s <= 1.0 for s in slept)
    assert max(slept[:1]) <= 0.1
    assert len(set(slept)) == len(slept)  # jittered, not lock-step
    backoff.reset()
    assert backoff.attempts == 0
    assert backoff.next_delay() <= 0.1


def test_set_testing_makes_every_delay_zero_and_still_counts_attempts(testing: None) -> None:
    backoff = Backoff(5.0, 60.0, rng=random.Random(3))
    assert lifecycle.is_testing()
    assert [backoff.next_delay() for _ in range(4)] == [0.0] * 4
    assert backoff.attempts == 4
    assert backoff.ceiling() == 60.0
    lifecycle.set_testing(False)
    assert 0.0 < backoff.next_delay() <= 60.0


async def test_backoff_wait_ends_early_when_stopped() -> None:
    stop = asyncio.Event()
    stop.set()
    started = time.monotonic()
    assert await Backoff(60.0, 60.0).wait(stop) is True
    assert time.monotonic() - started < 5.0
    slept: list[float] = []

    async def instant(seconds: float) -> None:
        slept.append(seconds)

    assert await Backoff(1.0, 1.0, sleep=instant).wait(asyncio.Event()) is False
    assert len(slept) == 1
    assert 0.0 <= slept[0] <= 1.0


async def test_wait_or_stop_on_seconds() -> None:
    stop = asyncio.Event()
    assert await wait_or_stop(stop, 0.01) is False
    asyncio.get_running_loop().call_later(0.01, stop.set)
    started = time.monotonic()
    assert await wait_or_stop(stop, 60.0) is True
    assert time.monotonic() - started < 5.0


async def test_wait_or_stop_on_an_awaitable_cancels_it_when_stopped() -> None:
    stop = asyncio.Event()
    assert await wait_or_stop(stop, asyncio.sleep(0)) is False
    cancelled = asyncio.Event()

    async def forever() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    asyncio.get_running_loop().call_soon(stop.set)
    assert await wait_or_stop(stop, forever()) is True
    assert cancelled.is_set()


async def test_stop_tasks_lets_loops_finish_and_cancels_the_late(
    caplog: pytest.LogCaptureFixture,
) -> None:
    stop = asyncio.Event()

    async def polite() -> None:
        await stop.wait()

    async def deaf() -> None:
        await asyncio.Event().wait()

    async def broken() -> None:
        raise RuntimeError("boom")

    tasks = [asyncio.create_task(f(), name=f.__name__) for f in (polite, deaf, broken)]
    await stop_tasks(stop, tasks, grace_s=0.05)
    assert stop.is_set()
    assert [t.done() for t in tasks] == [True, True, True]
    assert not tasks[0].cancelled()
    assert tasks[1].cancelled()
    assert "broken ended with RuntimeError('boom')" in caplog.text


async def _signalled(signum: int) -> int:
    """Raise ``signum`` inside stop_signals; how many times the stop callback ran."""
    called = asyncio.Event()
    calls: list[int] = []

    def stop() -> None:
        calls.append(signum)
        called.set()

    with stop_signals(stop):
        signal.raise_signal(signum)
        await asyncio.wait_for(called.wait(), 5.0)
    return len(calls)


def _mine(signum: int, frame: object) -> None:
    raise AssertionError("the handler in place before stop_signals ran")


async def test_stop_signals_call_back_through_the_loop() -> None:
    before = signal.signal(signal.SIGTERM, _mine)
    try:
        assert await _signalled(signal.SIGINT) == 1
        assert await _signalled(signal.SIGTERM) == 1
        assert signal.getsignal(signal.SIGTERM) is _mine  # put back, not left at the default
    finally:
        signal.signal(signal.SIGTERM, before)


async def test_stop_signals_fall_back_to_signal_signal_where_the_loop_cannot(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """As on Windows, where ``loop.add_signal_handler`` raises NotImplementedError."""
    loop = asyncio.get_running_loop()

    def unsupported(*_: object) -> None:
        raise NotImplementedError

    monkeypatch.setattr(loop, "add_signal_handler", unsupported)
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    assert await _signalled(signal.SIGTERM) == 1
    assert await _signalled(signal.SIGINT) == 1
    assert {s: signal.getsignal(s) for s in before} == before


def test_run_main_returns_the_exit_status() -> None:
    async def main() -> int:
        await asyncio.sleep(0)
        return 3

    assert run_main(main()) == 3
