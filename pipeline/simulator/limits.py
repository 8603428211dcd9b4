"""The portal's two limits (Bitrix24 REST docs, `limits.md`), driven by simulated time.

* `LeakyBucket`: one counter per portal, +1 per HTTP request (a `batch` is one request), drained
  at `rate` per second; a request that would lift it above `burst` is refused (503
  QUERY_LIMIT_EXCEEDED) and does not count.
* `OperatingMeter`: per (caller, method) execution time in 10 one-minute buckets. A call is
  refused (429 OPERATION_TIME_LIMIT) when the total is already over the budget **before** it; the
  call that crosses the budget still completes. `operating_reset_at` is the first call of the
  oldest live bucket plus 10 minutes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

WINDOW_S = 600.0
BUCKET_S = 60.0


class LeakyBucket:
    """Request-rate limiter of the portal. `rate=0` admits everything."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = burst
        self._level = 0.0
        self._at: float | None = None

    def admit(self, now: float) -> bool:
        """Count one request at monotonic time `now`; False when it must be refused."""
        if self.rate <= 0:
            return True
        if self._at is not None:
            self._level = max(0.0, self._level - (now - self._at) * self.rate)
        self._at = now
        if self._level + 1 > self.burst:
            return False
        self._level += 1
        return True

    @property
    def level(self) -> float:
        return self._level


@dataclass
class _Bucket:
    minute: int
    first_call: float
    seconds: float = 0.0


@dataclass
class _Account:
    buckets: list[_Bucket] = field(default_factory=list)

    def expire(self, now: float) -> None:
        # A bucket stays in the window for 10 minutes after the first call that opened it.
        self.buckets = [b for b in self.buckets if b.first_call + WINDOW_S > now]

    def total(self) -> float:
        return sum(b.seconds for b in self.buckets)


class OperatingMeter:
    """Accumulated execution time per (caller, method) over a sliding 10-minute window."""

    def __init__(self, budget_s: float | None) -> None:
        self.budget_s = budget_s
        self._accounts: dict[tuple[str, str], _Account] = {}
        self.charged_s = 0.0

    def _account(self, caller: str, method: str, now: float) -> _Account:
        acc = self._accounts.get((caller, method))
        if acc is None:
            acc = self._accounts[(caller, method)] = _Account()
        acc.expire(now)
        return acc

    def blocked(self, caller: str, method: str, now: float) -> bool:
        """True when this method is over budget for this caller before the call."""
        if self.budget_s is None:
            return False
        return self._account(caller, method, now).total() > self.budget_s

    def charge(self, caller: str, method: str, seconds: float, now: float) -> tuple[float, int]:
        """Add `seconds` of execution; returns (`operating`, `operating_reset_at`) after it."""
        acc = self._account(caller, method, now)
        minute = int(now // BUCKET_S)
        if acc.buckets and acc.buckets[-1].minute == minute:
            bucket = acc.buckets[-1]
        else:
            bucket = _Bucket(minute, now)
            acc.buckets.append(bucket)
        bucket.seconds += seconds
        self.charged_s += seconds
        return round(acc.total(), 6), int(acc.buckets[0].first_call + WINDOW_S)


__all__ = ["BUCKET_S", "WINDOW_S", "LeakyBucket", "OperatingMeter"]
