"""At the portal's limits (standard plan, with an operating budget) the fetch runs within 1.1x
of the fastest schedule the limits allow, without tripping them. The portal and the client share
one virtual clock (jumps only while every task waits), so the schedule of requests is exact and
does not depend on the machine's load."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import pytest

from pipeline.clock import Clock, VirtualClock
from pipeline.config import FetchConfig, LimitsConfig
from pipeline.outcomes import DealFetched
from pipeline.simulator import SimulatorConfig, running_simulator

from .helpers import fetch_all, virtual_client

WINDOW_S = 600.0  # the documented 10-minute operating window
MINUTE_S = 60.0


def ideal_duration(
    commands: int, *, rate: float, burst: int, budget_s: float, cost_s: float, batch: int = 50
) -> float:
    """When the last request of the fastest possible client goes out (in portal seconds).

    The ideal client knows the portal's exact rules (docs `limits.md`): a leaky bucket that
    refuses a request lifting it above `burst` and drains `rate`/s; per-method operating time in
    one-minute buckets that leave the window 10 minutes after their first call, a call being
    refused only when the total is already over the budget. It sends each request the moment
    both allow, with as many commands as will execute, and spends no time itself.
    """
    t = 0.0
    level, level_at = 0.0, 0.0
    buckets: list[list[float]] = []  # [minute, first_call, seconds]
    remaining = commands
    last = 0.0
    for _ in range(1_000_000):
        if remaining <= 0:
            return last
        current = max(0.0, level - (t - level_at) * rate)
        if current + 1 > burst:
            t += (current + 1 - burst) / rate
            continue
        buckets = [b for b in buckets if b[1] + WINDOW_S > t]
        total = sum(b[2] for b in buckets)
        if total > budget_s:
            t = min(b[1] for b in buckets) + WINDOW_S
            continue
        sent = 0
        minute = math.floor(t / MINUTE_S)
        while sent < min(batch, remaining) and total <= budget_s:
            if not buckets or buckets[-1][0] != minute:
                buckets.append([minute, t, 0.0])
            buckets[-1][2] += cost_s
            total += cost_s
            sent += 1
        remaining -= sent
        level, level_at, last = current + 1, t, t
    raise AssertionError("ideal schedule did not converge")


def test_ideal_duration_examples() -> None:
    # 90 requests, burst 50, 2/s: the 40 after the burst go out 0.5 s apart.
    assert ideal_duration(4500, rate=2, burst=50, budget_s=1e9, cost_s=0.0) == pytest.approx(20.0)
    # 360 commands of 0.5 s against 100 s: 202 run at t=0 (the last call crosses the budget),
    # the rest when the first minute leaves the window.
    assert ideal_duration(360, rate=2, burst=50, budget_s=100, cost_s=0.5) == pytest.approx(600)


@dataclass(frozen=True)
class Scenario:
    name: str
    deals: int
    budget_s: float
    processing_ms: float
    #: When each request goes out (portal seconds from the start), exactly.
    schedule: tuple[float, ...]
    #: How far the client's clock runs ahead of the portal's (machines without NTP drift).
    skew_s: float = 0.0


#: Rate-bound at 2/s and burst 50 with 2 % headroom: the client's bucket is 49 deep and drains
#: 1.96/s, so 49 batches go at once and the other 41 one drain interval apart.
RATE_BOUND = (0.0,) * 49 + tuple(k / 1.96 for k in range(1, 42))
#: Operating-bound, 25 s per batch against 100 s: a probe, three more that fit, then nothing
#: until the first minute leaves the window (reset + 1 s margin), then the remaining 160 deals.
OPERATING_BOUND = (0.0,) * 4 + (601.0,) * 4


class SkewedClock:
    """The portal's time line, read off a clock that is `skew_s` ahead of it."""

    def __init__(self, base: Clock, skew_s: float) -> None:
        self._base = base
        self._skew = skew_s

    @property
    def scale(self) -> float:
        return self._base.scale

    def now(self) -> float:
        return self._base.now() + self._skew

    def monotonic(self) -> float:
        return self._base.monotonic()

    async def sleep(self, seconds: float) -> None:
        await self._base.sleep(seconds)


SCENARIOS = [
    # Rate-bound: 90 batches at 2/s after a burst of 50; the budget is there but roomy.
    Scenario("rate-bound", deals=4500, budget_s=480.0, processing_ms=20.0, schedule=RATE_BOUND),
    # Operating-bound: 1.8 budgets of work, so one 10-minute window must pass.
    Scenario(
        "operating-bound",
        deals=360,
        budget_s=100.0,
        processing_ms=500.0,
        schedule=OPERATING_BOUND,
    ),
    # The same with a client clock two minutes ahead: reset times must be read on the portal's
    # clock (learnt from each answer's `finish`), or the client probes early and meets 429s.
    Scenario(
        "operating-bound-clock-ahead",
        deals=360,
        budget_s=100.0,
        processing_ms=500.0,
        schedule=OPERATING_BOUND,
        skew_s=120.0,
    ),
]


@pytest.mark.parametrize("sc", SCENARIOS, ids=lambda s: s.name)
async def test_fetch_at_the_limits_is_near_optimal_and_never_blocked(sc: Scenario) -> None:
    cfg = SimulatorConfig(
        deals=int(sc.deals * 1.2) + 50,
        seed=21,
        plan="standard",
        operating_budget_s=sc.budget_s,
        processing_ms=sc.processing_ms,
        hidden_fraction=0.0,
        deleted_fraction=0.0,
    )
    clock = VirtualClock()
    async with clock.autojump(), running_simulator(cfg, clock=clock) as sim:
        ids = sim.portal.visible_ids[: sc.deals]
        assert len(ids) == sc.deals
        random.Random(1).shuffle(ids)
        # Headroom against the simulator's real limits: one token of burst (absorbs the
        # latency jitter between our bucket and the portal's) and no operating headroom.
        limits = LimitsConfig(
            rate=cfg.rate,
            burst=cfg.burst,
            headroom=0.02,
            operating_budget_s=sc.budget_s,
            operating_headroom=0.0,
        )
        client, http = virtual_client(
            sim.webhook_url,
            clock,
            limits=limits,
            fetch=FetchConfig(concurrency=4),
            clock=SkewedClock(clock, sc.skew_s),
        )
        async with client:
            started = sim.clock.monotonic()
            outcomes = await fetch_all(client, ids)
            elapsed = sim.clock.monotonic() - started
        stats = sim.stats()
    assert sorted(o.id for o in outcomes) == sorted(ids)
    assert all(isinstance(o, DealFetched) for o in outcomes)
    ideal = ideal_duration(
        sc.deals,
        rate=cfg.rate,
        burst=cfg.burst,
        budget_s=sc.budget_s,
        cost_s=sc.processing_ms / 1000,
    )
    assert ideal > 10  # the limits really bind in this scenario
    assert stats["operating_limited"] == 0
    assert stats["operating_limited_commands"] == 0
    assert stats["rate_limited"] == 0, stats
    # The summary's wait figures are time on the clock, never more than the run took.
    assert client.stats.limit_wait_s > 0
    assert client.stats.rate_wait_s <= elapsed
    assert client.stats.operating_wait_s <= elapsed
    # Virtual time: the exact schedule, and the run ends with its last batch (answers take no
    # virtual time). Near-optimal is then a property of that schedule, not of machine speed.
    assert http.times("batch") == pytest.approx(sc.schedule)
    assert elapsed == pytest.approx(sc.schedule[-1])
    assert sc.schedule[-1] <= 1.1 * ideal, f"{sc.schedule[-1]:.1f}s vs ideal {ideal:.1f}s"
