"""The house's one way to wait, retry and stop (fleetpulse.lifecycle)."""

from __future__ import annotations

import asyncio
import random
import signal
import sys
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


# -- what a caller can rely on, beyond the delays themselves ------------------------------


async def test_backoff_wait_without_a_stop_event_reports_not_stopped() -> None:
    slept: list[float] = []

    async def instant(seconds: float) -> None:
        slept.append(seconds)

    backoff = Backoff(2.0, 8.0, sleep=instant, rng=random.Random(5))
    assert [await backoff.wait() for _ in range(3)] == [False, False, False]
    assert len(slept) == 3
    assert all(0.0 <= s <= c for s, c in zip(slept, (2.0, 4.0, 8.0), strict=True))
    assert backoff.attempts == 3


def test_backoff_without_an_injected_random_source_still_jitters_within_the_ceiling() -> None:
    backoff = Backoff(1.0, 1.0)
    delays = {backoff.next_delay() for _ in range(50)}
    assert all(0.0 <= d <= 1.0 for d in delays)
    assert len(delays) > 1


async def test_wait_or_stop_leaves_no_task_behind() -> None:
    def others() -> set[asyncio.Task[object]]:
        return {t for t in asyncio.all_tasks() if t is not asyncio.current_task()}

    stop = asyncio.Event()
    assert await wait_or_stop(stop, asyncio.sleep(0)) is False  # the awaitable won
    assert others() == set()
    asyncio.get_running_loop().call_soon(stop.set)
    assert await wait_or_stop(stop, asyncio.Event().wait()) is True  # the stop won
    assert others() == set()


async def test_when_stopped_the_awaitable_has_finished_its_cleanup_on_return() -> None:
    stop = asyncio.Event()
    steps: list[str] = []

    async def slow_to_cancel() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            for _ in range(3):  # cleanup that takes a few turns of the loop
                await asyncio.sleep(0)
            steps.append("cleaned up")
            raise

    asyncio.get_running_loop().call_soon(stop.set)
    assert await wait_or_stop(stop, slow_to_cancel()) is True
    assert steps == ["cleaned up"]


async def test_stop_tasks_gives_up_on_a_task_that_ignores_cancellation() -> None:
    stop = asyncio.Event()
    release = asyncio.Event()

    async def stubborn() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            await release.wait()  # ignores the cancellation until released

    task = asyncio.create_task(stubborn())
    await asyncio.sleep(0)
    started = time.monotonic()
    await asyncio.wait_for(stop_tasks(stop, [task], grace_s=0.05), 5.0)
    assert time.monotonic() - started < 5.0
    assert not task.done()
    release.set()
    await task


async def test_stop_tasks_logs_each_failed_task_once_by_name(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def broken() -> None:
        raise RuntimeError("boom")

    async def fine() -> None:
        return None

    tasks = [asyncio.create_task(f(), name=f.__name__) for f in (broken, fine)]
    await stop_tasks(asyncio.Event(), tasks, grace_s=0.05)
    warnings = [r.getMessage() for r in caplog.records if r.name == "fleetpulse.lifecycle"]
    assert warnings == ["broken ended with RuntimeError('boom')"]


def test_run_main_runs_on_uvloop_where_installed() -> None:
    pytest.importorskip("uvloop")

    async def main() -> int:
        return 0 if type(asyncio.get_running_loop()).__module__.startswith("uvloop") else 1

    assert run_main(main()) == 0


def test_run_main_falls_back_to_the_stock_loop_without_uvloop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import uvloop -> ImportError

    async def main() -> int:
        return 0 if isinstance(asyncio.get_running_loop(), asyncio.BaseEventLoop) else 1

    assert run_main(main()) == 0


def test_on_windows_the_fallback_handler_also_takes_ctrl_break(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sys, "platform", "win32")
    monkeypatch.setattr(signal, "SIGBREAK", 21, raising=False)
    assert lifecycle._stop_signal_numbers(True) == [signal.SIGINT, signal.SIGTERM, 21]
    assert lifecycle._stop_signal_numbers(False) == [signal.SIGINT, signal.SIGTERM]
    monkeypatch.setattr(sys, "platform", "linux")
    assert lifecycle._stop_signal_numbers(True) == [signal.SIGINT, signal.SIGTERM]


def test_run_main_on_the_stock_loop_when_asked_and_uvloop_otherwise() -> None:
    import asyncio

    from fleetpulse.lifecycle import run_main

    async def loop_module() -> int:
        return 0 if type(asyncio.get_running_loop()).__module__.startswith("asyncio") else 1

    assert run_main(loop_module(), fast_loop=False) == 0  # the agent's choice
    assert run_main(loop_module()) == 1  # uvloop, installed here
