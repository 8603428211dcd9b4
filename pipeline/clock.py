"""Time as the pipeline sees it, injectable so that tests and benchmarks never wait on the wall.

Everything that paces, backs off or re-checks reads and sleeps on one injected `Clock`: the
rate-limit bucket, the operating budget, retry backoffs and the budget's periodic re-check
(`wait_event`). Nothing in the fetch stage reads the event loop's time.

`ScaledClock(scale=K)` runs K times faster than the wall clock: `now()` advances K seconds per real
second and `sleep(s)` returns after s/K real seconds. The simulator and the client share the same
scale, so a 10-minute operating window takes 600/K real seconds and Unix timestamps the portal
reports (`operating_reset_at`) stay comparable with the client's `now()`.

`VirtualClock` never reads the wall: time moves only when every task is waiting. Under
`async with clock.autojump():` the event loop, once it has nothing to run and no socket is
ready, jumps the clock to the earliest wake-up (trio's `MockClock(autojump_threshold=0)` idea,
for asyncio). Real I/O in flight (an HTTP request to a simulator on 127.0.0.1) is declared with
`clock.busy()`, which holds the jumps off until the answer is in, so schedules come out the
same however loaded the machine is.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import selectors
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any, Protocol


class Clock(Protocol):
    """Seconds on the portal's time line."""

    @property
    def scale(self) -> float:
        """How many clock seconds pass per wall-clock second."""
        ...

    def now(self) -> float:
        """Unix time in seconds."""
        ...

    def monotonic(self) -> float:
        """A monotonic reading in clock seconds, for measuring intervals."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait `seconds` of clock time."""
        ...


class ScaledClock:
    """Wall-clock time, optionally compressed by `scale` (1.0 = real time)."""

    def __init__(self, scale: float = 1.0) -> None:
        if scale <= 0:
            raise ValueError("clock scale must be positive")
        self._scale = scale
        self._wall_origin = time.time()
        self._mono_origin = time.monotonic()

    @property
    def scale(self) -> float:
        return self._scale

    def now(self) -> float:
        return self._wall_origin + (time.monotonic() - self._mono_origin) * self._scale

    def monotonic(self) -> float:
        return (time.monotonic() - self._mono_origin) * self._scale

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds) / self._scale)


async def wait_event(clock: Clock, event: asyncio.Event, seconds: float) -> bool:
    """Wait until `event` is set or `seconds` of clock time passed; True if it was set.

    `asyncio.wait_for` would time out on the event loop's clock, which a virtual clock cannot
    drive; racing the event against `clock.sleep` keeps every wait on the injected clock.
    """
    if event.is_set():
        return True
    waiter = asyncio.ensure_future(event.wait())
    timer = asyncio.ensure_future(clock.sleep(seconds))
    try:
        await asyncio.wait((waiter, timer), return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
        timer.cancel()
    return event.is_set()


#: A plausible Unix time for a virtual clock's start (2024-01-01T00:00:00Z).
VIRTUAL_EPOCH = 1_704_067_200.0


class VirtualClock:
    """Virtual time: `sleep` parks the caller until the clock is moved past its wake-up.

    Move it by hand (`advance`, `jump`) or let the loop do it (`autojump`). Sleepers due at the
    same time wake in the order they went to sleep. `scale` is only reported (a simulator
    sharing this clock checks it against its own configuration); it never stretches anything.
    """

    def __init__(self, start: float = VIRTUAL_EPOCH, *, scale: float = 1.0) -> None:
        if scale <= 0:
            raise ValueError("clock scale must be positive")
        self._origin = start
        self._t = 0.0
        self._scale = scale
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()
        self._busy = 0
        #: How many times the clock jumped to a wake-up by itself (autojump) or by `jump()`.
        self.jumps = 0

    @property
    def scale(self) -> float:
        return self._scale

    def now(self) -> float:
        return self._origin + self._t

    def monotonic(self) -> float:
        return self._t

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._t + seconds, next(self._seq), future))
        await future

    def next_wakeup(self) -> float | None:
        """The monotonic time of the earliest pending wake-up (None: nobody sleeps)."""
        self._drop_cancelled()
        return self._sleepers[0][0] if self._sleepers else None

    def advance(self, seconds: float) -> None:
        """Move time forward by `seconds`, waking every sleeper due by then."""
        if seconds < 0:
            raise ValueError("time does not go backwards")
        self._t += seconds
        self._wake_due()

    def jump(self) -> bool:
        """Move time to the earliest wake-up and wake its sleepers; False if nobody sleeps."""
        due = self.next_wakeup()
        if due is None:
            return False
        self._t = max(self._t, due)
        self.jumps += 1
        self._wake_due()
        return True

    @contextlib.contextmanager
    def busy(self) -> Iterator[None]:
        """Hold autojumps off while real I/O is in flight (its answer takes no virtual time)."""
        self._busy += 1
        try:
            yield
        finally:
            self._busy -= 1

    @contextlib.asynccontextmanager
    async def autojump(self) -> AsyncIterator[VirtualClock]:
        """Jump to the next wake-up whenever the running loop would otherwise wait.

        Works on selector event loops (the default on Linux and macOS): the loop's selector is
        wrapped for the duration of the block, so a ready socket always wins over a jump.
        """
        loop = asyncio.get_running_loop()
        real = getattr(loop, "_selector", None)
        if not isinstance(real, selectors.BaseSelector):
            raise RuntimeError("VirtualClock.autojump needs a selector event loop")
        loop._selector = _JumpingSelector(real, self)  # type: ignore[attr-defined]
        try:
            yield self
        finally:
            loop._selector = real  # type: ignore[attr-defined]

    def _idle(self) -> bool:
        """The loop has nothing to do: jump if we may; True if time moved."""
        return self._busy == 0 and self.jump()

    def _drop_cancelled(self) -> None:
        while self._sleepers and self._sleepers[0][2].done():
            heapq.heappop(self._sleepers)

    def _wake_due(self) -> None:
        while self._sleepers and self._sleepers[0][0] <= self._t:
            _, _, future = heapq.heappop(self._sleepers)
            if not future.done():
                future.set_result(None)


class _JumpingSelector(selectors.BaseSelector):
    """A selector that, instead of blocking, first lets a virtual clock jump.

    The loop passes a timeout of 0 whenever callbacks are ready, so a non-zero timeout means it
    is idle apart from I/O; a zero-timeout poll then tells whether any socket is ready.
    """

    def __init__(self, real: selectors.BaseSelector, clock: VirtualClock) -> None:
        self._real = real
        self._clock = clock

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        if timeout is not None and timeout <= 0:
            return self._real.select(timeout)
        ready = self._real.select(0)
        if ready or self._clock._idle():
            return ready
        return self._real.select(timeout)

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._real.register(fileobj, events, data)

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        return self._real.unregister(fileobj)

    def modify(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._real.modify(fileobj, events, data)

    def close(self) -> None:
        self._real.close()

    def get_key(self, fileobj: Any) -> selectors.SelectorKey:
        return self._real.get_key(fileobj)

    def get_map(self) -> Any:
        return self._real.get_map()


__all__ = ["VIRTUAL_EPOCH", "Clock", "ScaledClock", "VirtualClock", "wait_event"]
