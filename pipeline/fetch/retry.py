"""Backoff policy as a small value: exponential with full jitter, capped. Pure.

`delay(attempt)` for attempt n >= 1 is uniform in [0, min(cap, base * 2**(n-1))] ("full
jitter"): concurrent failures spread out instead of returning together.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

from pipeline.config import FetchConfig


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How long to wait before attempt n+1 after n failures; `rand` returns floats in [0, 1)."""

    base_s: float = 1.0
    cap_s: float = 60.0
    rand: Callable[[], float] = field(default=random.random, compare=False)

    @classmethod
    def from_config(
        cls, config: FetchConfig, rand: Callable[[], float] = random.random
    ) -> RetryPolicy:
        return cls(base_s=config.backoff_base_s, cap_s=config.backoff_max_s, rand=rand)

    def ceiling(self, attempt: int) -> float:
        """The upper bound of the delay after `attempt` failures (attempt >= 1)."""
        if attempt < 1:
            return 0.0
        # Cap the exponent too: 2**1000 is still a float but pointless.
        return min(self.cap_s, self.base_s * 2.0 ** min(attempt - 1, 60))

    def delay(self, attempt: int) -> float:
        """A jittered delay in [0, ceiling(attempt)]."""
        return self.rand() * self.ceiling(attempt)


__all__ = ["RetryPolicy"]
