"""Pacing logic with a fake clock (no waiting): operating budget and the shared 503 gate."""

from __future__ import annotations

import asyncio

import pytest

from pipeline.config import LimitsConfig
from pipeline.fetch.pacing import (
    MIN_OPERATING_PAUSE_S,
    RESET_MARGIN_S,
    Observation,
    OperatingBudget,
    RateGate,
    observe,
)
from pipeline.fetch.stats import FetchStats


class FakeClock:
    """Virtual time: sleeping advances it at once."""

    scale = 1.0

    def __init__(self, t: float = 1_000.0) -> None:
        self.t = t
        self.sleeps: list[float] = []

    def now(self) -> float:
        return self.t

    def monotonic(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.t += max(0.0, seconds)
        await asyncio.sleep(0)


def test_observe_folds_a_batch() -> None:
    entries = [
        {"operating": 10.5, "operating_reset_at": 1600, "processing": 0.001},
        {"operating": 11.0, "operating_reset_at": 1600, "processing": 0.001},
        {"operating": 11.5, "operating_reset_at": 1600, "processing": 0.001},
    ]
    obs = observe(entries)
    assert obs.operating == 11.5
    assert obs.reset_at == 1600
    assert obs.per_command_s == pytest.approx(0.5)  # spacing beats the tiny processing time
    bare = observe([{"start": 1.0, "duration": 0.2, "processing": 0.1}])
    assert bare.operating is None
    assert bare.reset_at is None
    assert bare.per_command_s == pytest.approx(0.2)
    assert observe([{"operating": "3.5", "operating_reset_at": True}]).operating == 3.5


def limits(budget: float | None = 100.0, headroom: float = 0.0) -> LimitsConfig:
    return LimitsConfig(rate=0, operating_budget_s=budget, operating_headroom=headroom)


async def test_budget_probes_first_then_paces_then_waits_for_reset() -> None:
    clock = FakeClock()
    budget = OperatingBudget(limits(100.0), clock, FetchStats())
    probe = await budget.reserve(50)
    # While the probe is out nobody else goes: we do not know the budget state yet.
    second = asyncio.create_task(budget.reserve(50))
    await asyncio.sleep(0)
    assert not second.done()
    budget.release(probe, Observation(operating=25.0, reset_at=1_600.0, per_command_s=0.5))
    held = [await second]
    # 25 used, 25 per batch held: two more fit under 100, the next must wait.
    held.append(await budget.reserve(50))
    held.append(await budget.reserve(50))
    blocked = asyncio.create_task(budget.reserve(50))
    await asyncio.sleep(0)
    assert not blocked.done()
    for r in held:
        budget.release(r, Observation(operating=100.0, reset_at=1_600.0, per_command_s=0.5))
    # Nothing in flight and the budget is spent: wait for the oldest minute to leave.
    reservation = await asyncio.wait_for(blocked, 1)
    assert clock.t == pytest.approx(1_600.0 + RESET_MARGIN_S)
    # After the reset exactly one request probes the new value.
    other = asyncio.create_task(budget.reserve(50))
    await asyncio.sleep(0)
    assert not other.done()
    budget.release(reservation, Observation(operating=25.0, reset_at=1_660.0, per_command_s=0.5))
    budget.release(await asyncio.wait_for(other, 1), None)


async def test_headroom_lowers_the_ceiling() -> None:
    clock = FakeClock()
    budget = OperatingBudget(limits(100.0, headroom=0.2), clock, FetchStats())
    budget.release(
        await budget.reserve(1), Observation(operating=70.0, reset_at=1_300, per_command_s=0.2)
    )
    assert budget.mode == "on"
    r = await budget.reserve(50)  # 70 + 10 = 80 <= 80
    waiting = asyncio.create_task(budget.reserve(1))
    await asyncio.sleep(0)
    assert not waiting.done()
    budget.release(r, None)  # the held 10 s come back: the small request now fits
    budget.release(await asyncio.wait_for(waiting, 1), None)
    assert clock.t == 1_000
    await budget.reserve(60)  # 70 + 12 > 80: only after the reset
    assert clock.t == pytest.approx(1_300 + RESET_MARGIN_S)


async def test_on_premise_answers_turn_pacing_off() -> None:
    budget = OperatingBudget(limits(480.0), FakeClock(), FetchStats())
    budget.release(await budget.reserve(50), Observation(None, None, 0.01))
    assert budget.mode == "off"
    rs = [await budget.reserve(50) for _ in range(100)]  # never waits
    assert len(rs) == 100


async def test_failed_probe_keeps_probing() -> None:
    budget = OperatingBudget(limits(480.0), FakeClock(), FetchStats())
    budget.release(await budget.reserve(50), None)
    assert budget.mode == "unknown"


async def test_operating_limit_pauses_until_reset() -> None:
    clock = FakeClock()
    stats = FetchStats()
    budget = OperatingBudget(limits(None), clock, stats)  # pacing off, 429 still honoured
    assert budget.on_limited() == MIN_OPERATING_PAUSE_S  # no reset known
    await budget.reserve(1)
    assert clock.t == pytest.approx(1_000 + MIN_OPERATING_PAUSE_S)
    # Still blocked after that, still no reset known: the pause doubles.
    assert budget.on_limited() == 2 * MIN_OPERATING_PAUSE_S
    await budget.reserve(1)
    budget.release(
        await budget.reserve(1), Observation(operating=500, reset_at=1_400, per_command_s=0.1)
    )
    budget.on_limited()
    await budget.reserve(1)
    assert clock.t == pytest.approx(1_400 + RESET_MARGIN_S)
    assert stats.operating_wait_s > 0


async def test_rate_gate_backs_off_everyone_and_grows_on_repeats() -> None:
    clock = FakeClock()
    gate = RateGate(LimitsConfig(rate=2.0, burst=50), clock, FetchStats(), rand=lambda: 0.5)
    first = gate.on_rate_limited()
    assert first >= 1 / LimitsConfig(rate=2.0).effective_rate
    second = gate.on_rate_limited()
    assert second > first
    gate.on_success()
    assert gate.on_rate_limited() == pytest.approx(first)


async def test_rate_gate_blocks_all_acquirers() -> None:
    clock = FakeClock()
    gate = RateGate(LimitsConfig(rate=0), clock, FetchStats(), rand=lambda: 0.0)
    pause = gate.on_rate_limited()
    await asyncio.gather(*(gate.acquire() for _ in range(5)))
    assert clock.t >= 1_000 + pause


async def test_affordable_lets_a_smaller_batch_use_the_rest_of_the_window() -> None:
    budget = OperatingBudget(limits(100.0), FakeClock(), FetchStats())
    assert budget.affordable(50) == 50  # nothing known yet: no shrinking
    budget.release(
        await budget.reserve(1), Observation(operating=90.0, reset_at=1_600, per_command_s=0.5)
    )
    assert budget.affordable(50) == 20
    held = await budget.reserve(10)
    assert budget.affordable(50) == 10
    budget.release(held, None)
    budget.release(
        await budget.reserve(1), Observation(operating=100.0, reset_at=1_600, per_command_s=0.5)
    )
    assert budget.affordable(50) == 0
