"""Pacing logic on virtual time (no waiting): operating budget, the shared 503 gate and the
leaky bucket, with exact times."""

from __future__ import annotations

import asyncio
import logging

import pytest

from pipeline.clock import VirtualClock
from pipeline.config import LimitsConfig
from pipeline.fetch.pacing import (
    EPISODE_QUIET_S,
    MIN_OPERATING_PAUSE_S,
    RECHECK_S,
    RECOVER_AFTER_S,
    RECOVER_STEP_S,
    RESET_MARGIN_S,
    LeakyBucket,
    Observation,
    OperatingBudget,
    Pacer,
    RateGate,
    Reservation,
    WaitMeter,
    batch_envelope,
    observe,
)
from pipeline.fetch.stats import FetchStats


class FakeClock(VirtualClock):
    """Virtual time read as `t` (Unix time); setting `t` moves it forward, waking sleepers.
    Inside `async with clock.autojump():` time jumps to the next wake-up whenever every task
    waits."""

    def __init__(self, t: float = 1_000.0) -> None:
        super().__init__(start=t)

    @property
    def t(self) -> float:
        return self.now()

    @t.setter
    def t(self, value: float) -> None:
        self.advance(value - self.now())


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
    # `operating` accrues `processing`; `duration` also counts time outside the method and
    # is kept for the 60 s request cap only (see test_cost_estimate_is_what_operating_grows_by).
    assert bare.per_command_s == pytest.approx(0.1)
    assert bare.wall_s == pytest.approx(0.2)
    assert observe([{"operating": "3.5", "operating_reset_at": True}]).operating == 3.5


def test_counters_that_never_rise_measure_nothing() -> None:
    # A portal that bills the whole request to `batch` stamps every command with the same
    # figure (b24jssdk pull request 539): that is no sign the commands cost nothing.
    flat = observe(
        [{"operating": 7.25, "operating_reset_at": 1600, "processing": 0.04} for _ in range(50)]
    )
    assert flat.operating == 7.25
    assert flat.per_command_s == pytest.approx(0.04)
    # Counters that rise somewhere still measure the cost by their spacing.
    stepped = observe(
        [
            {"operating": 7.0, "operating_reset_at": 1600, "processing": 0.001},
            {"operating": 7.0, "operating_reset_at": 1600, "processing": 0.001},
            {"operating": 7.6, "operating_reset_at": 1600, "processing": 0.001},
        ]
    )
    assert stepped.per_command_s == pytest.approx(0.3)


def test_a_batch_envelope_is_spread_over_its_commands() -> None:
    envelope = {"operating": 12.0, "operating_reset_at": 1600, "processing": 2.5, "finish": 9.0}
    seen = batch_envelope(envelope, 50)
    assert seen is not None
    assert (seen.operating, seen.reset_at, seen.server_time) == (12.0, 1600, 9.0)
    assert seen.per_command_s == pytest.approx(0.05)
    assert seen.entries == 1  # so the budget also learns from how `operating` rises
    assert batch_envelope(None, 50) is None
    assert batch_envelope([], 50) is None


def test_cost_estimate_is_what_operating_grows_by() -> None:
    # The docs' own `time` block (REST docs `api-reference/data-types.md#time`): the first call
    # of a window, `operating` equal to `processing` to 1e-5 s, `duration` larger.
    docs = observe(
        [
            {
                "start": 1757424671.509725,
                "finish": 1757424672.203906,
                "duration": 0.694180965423584,
                "processing": 0.6726489067077637,
                "operating_reset_at": 1757425271,
                "operating": 0.6726338863372803,
            }
        ]
    )
    assert docs.per_command_s == pytest.approx(0.6726489067077637)
    assert docs.wall_s == pytest.approx(0.694180965423584)
    # A batch of list calls under a time-compressed simulator: each charged 20 ms + 2 ms x 50
    # rows, while `processing`/`duration` carry the test machine's wall time, scaled up. The
    # estimate is the charge (it was 0.42 s, 3.5 times too high, with processing in the max).
    batch = [
        {"operating": 100.0 + 0.12 * i, "operating_reset_at": 1_600, "processing": 0.42}
        for i in range(50)
    ]
    listed = observe(batch)
    assert listed.per_command_s == pytest.approx(0.12)
    assert listed.wall_s == pytest.approx(0.42)
    # The oldest minute dropped out between two commands: that step is no measure of cost.
    reset = [
        {"operating": 300.0, "operating_reset_at": 1_600},
        {"operating": 300.5, "operating_reset_at": 1_600},
        {"operating": 40.5, "operating_reset_at": 1_660},
        {"operating": 41.0, "operating_reset_at": 1_660},
    ]
    assert observe(reset).per_command_s == pytest.approx(0.5)
    # Another request of the same method ran on the portal between two of ours: the rise
    # includes it, so the figure errs high, never low.
    shared = [{"operating": 10.0}, {"operating": 10.5}, {"operating": 12.0}]
    assert observe(shared).per_command_s == pytest.approx(1.0)
    # The budget paces on the charge; the 60 s cap per request on the wall time.
    budget = OperatingBudget(limits(480.0), FakeClock(), FetchStats())
    budget.release(Reservation(0.0, counted=False, commands=50), listed)
    assert budget.cost == pytest.approx(0.12)
    assert budget.within_request_cap(50) == 50  # 30 s / 0.42 s = 71
    slow = [{"operating": 1.0 + i, "duration": 3.0} for i in range(10)]
    budget.release(Reservation(0.0, counted=False, commands=10), observe(slow))
    # cost 0.7 * 0.12 + 0.3 * 1.0 -> at least half the new 1.0: 0.5; wall likewise 1.5 s
    assert budget.cost == pytest.approx(0.5)
    assert budget.wall == pytest.approx(1.5)
    assert budget.within_request_cap(50) == 20  # 30 s / 1.5 s: the wall time binds


def limits(budget: float | None = 100.0, headroom: float = 0.0) -> LimitsConfig:
    return LimitsConfig(rate=0, operating_budget_s=budget, operating_headroom=headroom)


async def test_budget_probes_first_then_paces_then_waits_for_reset() -> None:
    clock = FakeClock()
    async with clock.autojump():
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
        budget.release(
            reservation, Observation(operating=25.0, reset_at=1_660.0, per_command_s=0.5)
        )
        budget.release(await asyncio.wait_for(other, 1), None)


async def test_headroom_lowers_the_ceiling() -> None:
    clock = FakeClock()
    async with clock.autojump():
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
    async with clock.autojump():
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
    async with clock.autojump():
        gate = RateGate(LimitsConfig(rate=0), clock, FetchStats(), rand=lambda: 0.0)
        pause = gate.on_rate_limited()
        await asyncio.gather(*(gate.acquire() for _ in range(5)))
        assert clock.t == pytest.approx(1_000 + pause)  # all five go together once it ends


async def test_a_smaller_batch_uses_the_rest_of_the_window() -> None:
    clock = FakeClock()
    budget = OperatingBudget(limits(100.0), clock, FetchStats())
    whole = await budget.reserve(50, at_least=1)
    assert whole.commands == 50  # nothing known yet: no shrinking
    budget.release(whole, None)
    budget.release(
        await budget.reserve(1), Observation(operating=90.0, reset_at=1_600, per_command_s=0.5)
    )
    part = await budget.reserve(50, at_least=1)  # 10 s of room at 0.5 s a command
    assert part.commands == 20
    assert clock.t == 1_000.0
    budget.release(part, None)


# -- live wait figures, episodes, adaptation (issues 10 and 14) -------------------------------


async def test_a_batch_sized_while_another_is_in_flight_sends_what_fits_when_it_lands(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock()
    caplog.set_level(logging.INFO, logger="pipeline.fetch.pacing")
    async with clock.autojump():
        budget = OperatingBudget(limits(100.0), clock, FetchStats(), "crm.deal.list")
        budget.release(
            await budget.reserve(1), Observation(operating=60.0, reset_at=1_600, per_command_s=1.0)
        )
        first = await budget.reserve(40, at_least=1)  # 60 + 40 <= 100: all of it
        assert first.commands == 40
        # Sized now, the second batch would see no room at all: 60 used + 40 held.
        second = asyncio.create_task(budget.reserve(50, at_least=1))
        await clock.sleep(3.0)
        assert not second.done()
        # The first answer lands: it was charged 25 s of the 40 held, so 15 commands fit.
        budget.release(first, Observation(operating=85.0, reset_at=1_600, per_command_s=1.0))
        part = await second
        assert part.commands == 15
        assert clock.t == 1_003.0  # at that very moment, not a minute later
        # The rest (35) does not fit even one command now: it waits for the oldest minute.
        rest = asyncio.create_task(budget.reserve(35, at_least=1))
        await asyncio.sleep(0)
        budget.release(part, Observation(operating=100.0, reset_at=1_600, per_command_s=1.0))
        after = await rest
        assert clock.t == pytest.approx(1_600 + RESET_MARGIN_S)
        assert after.commands == 35  # the probe after a reset goes whole, as before
        # One wait, announced once, with the window really spent.
        waits = [r.getMessage() for r in caplog.records if "nearly spent" in r.getMessage()]
        assert waits == [
            "operating budget of crm.deal.list nearly spent (100.0 of 100.0 s): waiting 598 s "
            "for the oldest minute to leave the window"
        ]


async def test_waiters_are_served_in_arrival_order_and_a_cancelled_one_leaves_the_line() -> None:
    clock = FakeClock()
    async with clock.autojump():
        budget = OperatingBudget(limits(100.0), clock, FetchStats())
        budget.release(
            await budget.reserve(1), Observation(operating=60.0, reset_at=1_600, per_command_s=1.0)
        )
        held = await budget.reserve(40)
        first = asyncio.create_task(budget.reserve(30, at_least=1))
        second = asyncio.create_task(budget.reserve(30, at_least=1))
        await clock.sleep(1.0)
        first.cancel()
        await asyncio.gather(first, return_exceptions=True)
        # A newcomer does not overtake the one still waiting.
        third = asyncio.create_task(budget.reserve(5))
        await clock.sleep(1.0)
        assert not second.done()
        assert not third.done()
        budget.release(held, Observation(operating=80.0, reset_at=1_600, per_command_s=1.0))
        part = await second
        assert part.commands == 20
        assert clock.t == 1_002.0
        assert not third.done()  # 100 used or held: it waits for the reset
        budget.release(part, Observation(operating=100.0, reset_at=1_600, per_command_s=1.0))
        budget.release(await asyncio.wait_for(third, 700), None)
        assert clock.t == pytest.approx(1_600 + RESET_MARGIN_S)


async def test_reserve_without_a_minimum_keeps_a_batch_whole() -> None:
    clock = FakeClock()
    async with clock.autojump():
        budget = OperatingBudget(limits(100.0), clock, FetchStats())
        budget.release(
            await budget.reserve(1), Observation(operating=90.0, reset_at=1_600, per_command_s=1.0)
        )
        assert (await budget.reserve(20)).commands == 20  # 10 fit, but all or nothing
        assert clock.t == pytest.approx(1_600 + RESET_MARGIN_S)


async def test_partial_admission_never_overfills_the_window() -> None:
    clock = FakeClock()
    async with clock.autojump():
        budget = OperatingBudget(limits(10.0), clock, FetchStats())
        budget.release(
            await budget.reserve(1), Observation(operating=7.0, reset_at=1_600, per_command_s=0.1)
        )
        # 3.0 s of room at 0.1 s: 30 commands exactly (3.0 / 0.1 is 29.999... in floats).
        held = await budget.reserve(50, at_least=1)
        assert held.commands == 30
        assert clock.t == 1_000.0
        budget.release(held, None)
        budget.release(
            await budget.reserve(1), Observation(operating=9.95, reset_at=1_600, per_command_s=0.1)
        )
        # Less than one command's room and nothing in flight: wait, even with a minimum of 1.
        held = await budget.reserve(50, at_least=1)
        assert clock.t == pytest.approx(1_600 + RESET_MARGIN_S)


def test_wait_meter_accrues_while_waits_overlap() -> None:
    # Two tasks take turns at waiting and the count never drops to 0: the figure must still
    # grow during the run, and a reader mid-wait sees the open interval.
    clock = FakeClock(t=0.0)
    stats = FetchStats()
    meter = WaitMeter(clock, stats, "rate_wait_s")
    a, b = meter.waiting(), meter.waiting()
    a.__enter__()
    clock.t = 1.0
    b.__enter__()
    clock.t = 2.0
    a.__exit__(None, None, None)
    assert stats.rate_wait_s == pytest.approx(2.0)  # written as it goes, not at the end
    clock.t = 3.5
    assert meter.total() == pytest.approx(3.5)  # the open interval included
    assert stats.rate_wait_s == pytest.approx(3.5)
    clock.t = 4.0
    b.__exit__(None, None, None)
    clock.t = 10.0  # nobody waits: no time accrues
    assert meter.total() == pytest.approx(4.0)
    with meter.waiting():
        clock.t = 11.0
    assert stats.rate_wait_s == pytest.approx(5.0)
    assert stats.operating_wait_s == 0.0


async def test_pacer_wait_totals_read_mid_wait() -> None:
    clock = FakeClock(t=0.0)
    stats = FetchStats()
    pacer = Pacer(LimitsConfig(rate=0, operating_budget_s=None), clock, stats)
    budget = pacer.budget("crm.deal.get")
    budget.on_limited()
    task = asyncio.ensure_future(budget.reserve(1))
    await asyncio.sleep(0)  # the task is inside its sleep
    clock.advance(4.0)
    assert pacer.wait_totals()[1] == pytest.approx(4.0)  # the open wait, read mid-wait
    assert stats.operating_wait_s == pytest.approx(4.0)
    clock.advance(MIN_OPERATING_PAUSE_S - 4.0)
    await task
    assert stats.operating_wait_s == pytest.approx(MIN_OPERATING_PAUSE_S)


def test_concurrent_429s_are_one_pause_and_one_log_line(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    budget = OperatingBudget(limits(None), clock, FetchStats(), "crm.deal.get")
    with caplog.at_level(logging.WARNING, logger="pipeline.fetch.pacing"):
        first = budget.on_limited(status=429, code="")
        for _ in range(3):  # requests that were in flight when the pause began
            assert budget.on_limited(status=429, code="") == pytest.approx(first)
    assert budget.pauses == 1
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1
    assert "HTTP 429 (no code)" in lines[0]
    assert budget.paused_for() == pytest.approx(first)
    clock.t += first
    assert budget.paused_for() == 0.0
    assert budget.on_limited(status=None, code="OPERATION_TIME_LIMIT") == 2 * first
    assert "OPERATION_TIME_LIMIT per command" in caplog.records[-1].getMessage()


def test_rate_gate_lowers_only_on_refusals_its_model_admitted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock()
    gate = RateGate(LimitsConfig(rate=2.0, burst=50, headroom=0.0), clock, FetchStats(), rand=zero)
    with caplog.at_level(logging.DEBUG, logger="pipeline.fetch.pacing"):
        g0 = gate.generation
        gate.on_rate_limited(g0)  # first of an episode: a bucket left full explains it
        assert gate.rate == 2.0
        gate.on_rate_limited(g0)  # in flight before the back-off: stale, no evidence
        assert gate.rate == 2.0
        gate.on_rate_limited(gate.generation)  # admitted after the back-off and still refused
        assert gate.rate == pytest.approx(1.6)
        assert gate.burst == 40
        gate.on_rate_limited(None)  # unknown admission (a command inside a batch)
        assert gate.rate == pytest.approx(1.6)
        for _ in range(40):
            gate.on_rate_limited(gate.generation)
        assert gate.rate == pytest.approx(0.2)  # floor: a tenth of the configured rate
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1  # one episode, one line
    assert gate.episodes == 1
    assert "HTTP 503 QUERY_LIMIT_EXCEEDED" in warnings[0].getMessage()


def test_rate_gate_episodes_end_after_quiet_and_the_rate_recovers_slowly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock()
    gate = RateGate(LimitsConfig(rate=2.0, burst=50, headroom=0.0), clock, FetchStats(), rand=zero)
    with caplog.at_level(logging.INFO, logger="pipeline.fetch.pacing"):
        gate.on_rate_limited(gate.generation)
        clock.t += 5
        gate.on_rate_limited(gate.generation)
        lowered = gate.rate
        assert lowered < 2.0
        clock.t += EPISODE_QUIET_S + 1
        gate.on_success()
        assert gate.rate == lowered  # the episode is over, recovery has not begun
        clock.t += RECOVER_AFTER_S
        gate.on_success()
        assert lowered < gate.rate < 2.0  # one step, not all the way back
        for _ in range(20):
            clock.t += RECOVER_STEP_S
            gate.on_success()
        assert gate.rate == 2.0
        assert gate.burst == 50
        gate.on_rate_limited(gate.generation)  # a new episode after the quiet period
    assert gate.episodes == 2
    levels = [r.levelno for r in caplog.records]
    assert levels.count(logging.WARNING) == 2
    assert levels.count(logging.INFO) == 1  # the first episode's summary


def zero() -> float:
    return 0.0


# -- one clock: the bucket, the gate and the re-check on virtual time, exact schedules ---------


async def stamp_acquires(clock: VirtualClock, acquire: object, n: int) -> list[float]:
    """When each of `n` concurrent acquirers got through (clock seconds, in arrival order)."""
    times: list[float] = []

    async def one() -> None:
        await acquire()  # type: ignore[operator]
        times.append(clock.monotonic())

    await asyncio.gather(*(one() for _ in range(n)))
    return times


async def test_leaky_bucket_bursts_then_drains_at_its_rate() -> None:
    clock = VirtualClock()
    bucket = LeakyBucket(3, 2.0, clock)
    async with clock.autojump():
        times = await stamp_acquires(clock, bucket.acquire, 7)
        assert times == pytest.approx([0.0, 0.0, 0.0, 0.5, 1.0, 1.5, 2.0])
        clock.advance(10.0)  # drained empty: a full burst again
        assert bucket.has_capacity()
        later = await stamp_acquires(clock, bucket.acquire, 4)
    assert later == pytest.approx([12.0, 12.0, 12.0, 12.5])


async def test_leaky_bucket_filled_restarts_at_the_drain_rate() -> None:
    clock = VirtualClock()
    bucket = LeakyBucket(50, 4.0, clock)
    bucket.fill()
    assert not bucket.has_capacity()
    async with clock.autojump():
        times = await stamp_acquires(clock, bucket.acquire, 4)
    assert times == pytest.approx([0.25, 0.5, 0.75, 1.0])


async def test_rate_gate_schedule_after_a_refusal_is_exact() -> None:
    # A burst of 3 at 2/s; a refusal at t=0.5 pauses everyone 1/Y (jitter 0), then the bucket
    # restarts full: one request per 1/Y after the pause, never a burst.
    clock = VirtualClock()
    gate = RateGate(LimitsConfig(rate=2.0, burst=3, headroom=0.0), clock, FetchStats(), zero)
    async with clock.autojump():
        assert await stamp_acquires(clock, gate.acquire, 3) == [0.0, 0.0, 0.0]
        clock.advance(0.5)
        pause = gate.on_rate_limited(gate.generation)
        assert pause == pytest.approx(0.5)
        times = await stamp_acquires(clock, gate.acquire, 3)
    assert times == pytest.approx([1.5, 2.0, 2.5])
    assert gate.wait_total() == pytest.approx(2.0)  # from 0.5 to 2.5 someone was held back


async def test_budget_rechecks_on_the_clock_while_answers_are_in_flight() -> None:
    # A probe is out and unanswered: the next request re-checks every RECHECK_S of clock time
    # (the virtual clock moves only for those re-checks) and stays held; once the probe's
    # answer is in, it goes at once.
    clock = VirtualClock()
    budget = OperatingBudget(limits(100.0), clock, FetchStats(), "crm.deal.get")
    async with clock.autojump():
        probe = await budget.reserve(1)
        waiting = asyncio.create_task(budget.reserve(1))
        while clock.monotonic() < 3 * RECHECK_S:
            await clock.sleep(RECHECK_S)
        assert not waiting.done()
        assert clock.jumps == 3  # t = 5, 10, 15: the re-checks coincide with the test's sleeps
        budget.release(probe, Observation(operating=10.0, reset_at=2_000.0, per_command_s=0.5))
        await waiting
    assert clock.monotonic() == 3 * RECHECK_S  # released at once: no wait for the re-check
