"""The virtual clock: time moves only when every task waits, to the earliest wake-up."""

from __future__ import annotations

import asyncio

import pytest

from pipeline.clock import VIRTUAL_EPOCH, VirtualClock, wait_event


async def test_sleepers_wake_at_their_time_in_order() -> None:
    clock = VirtualClock()
    woke: list[tuple[str, float]] = []

    async def sleeper(name: str, seconds: float) -> None:
        await clock.sleep(seconds)
        woke.append((name, clock.monotonic()))

    async with clock.autojump():
        await asyncio.gather(sleeper("c", 3.0), sleeper("a", 1.0), sleeper("b", 1.0))
    assert woke == [("a", 1.0), ("b", 1.0), ("c", 3.0)]  # same time: the order they slept
    assert clock.now() == VIRTUAL_EPOCH + 3.0
    assert clock.jumps == 2


async def test_a_cancelled_sleeper_moves_no_time() -> None:
    clock = VirtualClock()
    async with clock.autojump():
        doomed = asyncio.ensure_future(clock.sleep(100.0))
        await asyncio.sleep(0)
        doomed.cancel()
        await clock.sleep(2.0)
    assert clock.monotonic() == 2.0
    assert clock.next_wakeup() is None


async def test_busy_holds_jumps_off_until_real_io_is_done() -> None:
    clock = VirtualClock()
    async with clock.autojump():
        sleeper = asyncio.ensure_future(clock.sleep(5.0))
        with clock.busy():
            await asyncio.sleep(0.01)  # real time passes, virtual time must not
            assert clock.monotonic() == 0.0
            assert not sleeper.done()
        await sleeper
    assert clock.monotonic() == 5.0


async def test_manual_advance_wakes_due_sleepers_only() -> None:
    clock = VirtualClock(start=0.0)
    early = asyncio.ensure_future(clock.sleep(1.0))
    late = asyncio.ensure_future(clock.sleep(10.0))
    await asyncio.sleep(0)
    clock.advance(2.0)
    await asyncio.sleep(0)
    assert early.done()
    assert not late.done()
    assert clock.next_wakeup() == 10.0
    with pytest.raises(ValueError, match="backwards"):
        clock.advance(-1.0)
    late.cancel()


async def test_wait_event_times_out_on_the_clock_and_returns_early_when_set() -> None:
    clock = VirtualClock()
    event = asyncio.Event()
    async with clock.autojump():
        assert await wait_event(clock, event, 5.0) is False
        assert clock.monotonic() == 5.0
        asyncio.get_running_loop().call_soon(event.set)
        assert await wait_event(clock, event, 5.0) is True
    assert clock.monotonic() == 5.0
    assert clock.next_wakeup() is None  # the timer was cancelled, not left to jump to
