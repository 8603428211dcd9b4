"""Time as the pipeline sees it, injectable so that tests and benchmarks never wait on the wall.

`ScaledClock(scale=K)` runs K times faster than the wall clock: `now()` advances K seconds per real
second and `sleep(s)` returns after s/K real seconds. The simulator and the client share the same
scale, so a 10-minute operating window takes 600/K real seconds and Unix timestamps the portal
reports (`operating_reset_at`) stay comparable with the client's `now()`.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol


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


__all__ = ["Clock", "ScaledClock"]
