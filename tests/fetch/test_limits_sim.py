"""Recovery when the limits are hit anyway (another integration on the same IP, a budget we
did not know), and portals without operating counters. The portal and the client share one
virtual clock, so schedules and counts are exact whatever the machine's load."""

from __future__ import annotations

import pytest

from pipeline.clock import VirtualClock
from pipeline.config import FetchConfig, LimitsConfig
from pipeline.outcomes import DealFetched
from pipeline.simulator import SimulatorConfig, running_simulator

from .helpers import fetch_all, virtual_client


async def test_rate_limit_503_backs_off_globally_and_recovers() -> None:
    # The portal's bucket is much smaller than the client believes (someone else uses it).
    cfg = SimulatorConfig(deals=2500, seed=8, rate=2.0, burst=10,
                          hidden_fraction=0.0, deleted_fraction=0.0)  # fmt: skip
    clock = VirtualClock()
    async with clock.autojump(), running_simulator(cfg, clock=clock) as sim:
        ids = sim.portal.visible_ids[:2000]
        client, http = virtual_client(
            sim.webhook_url,
            clock,
            limits=LimitsConfig(rate=2.0, burst=50, headroom=0.0, operating_budget_s=None),
            fetch=FetchConfig(concurrency=4, max_attempts=2),
            rand=lambda: 0.0,  # no jitter: an exact schedule
        )
        async with client:
            outcomes = await fetch_all(client, ids)
        stats = sim.stats()
    assert sorted(o.id for o in outcomes) == sorted(ids)
    # 503s spend no attempts: with max_attempts=2 every deal still arrives.
    assert all(isinstance(o, DealFetched) for o in outcomes)
    assert stats["rate_limited"] > 0
    assert client.stats.rate_limited == stats["rate_limited"]
    # After the first refusals the whole client slows to the drain rate: the 503s stay a
    # small share instead of one per waiting task per retry.
    assert stats["rate_limited"] == 2, stats
    assert client.stats.rate_wait_s > 0
    # 12 at once (the portal admits 10), everyone pauses until 0.75 s (0.5 s, grown 1.5x by the
    # second refusal), then the bucket restarts full: one request per 0.5 s, never a burst.
    assert http.times() == pytest.approx([0.0] * 12 + [1.25 + 0.5 * k for k in range(30)])


async def test_operating_429_waits_for_reset_without_spending_attempts() -> None:
    # The client paces nothing (budget unknown to it); the portal blocks the method per command.
    cfg = SimulatorConfig(deals=200, seed=8, operating_budget_s=20.0, processing_ms=500.0,
                          hidden_fraction=0.0, deleted_fraction=0.0)  # fmt: skip
    clock = VirtualClock()
    async with clock.autojump(), running_simulator(cfg, clock=clock) as sim:
        ids = sim.portal.visible_ids[:100]
        client, http = virtual_client(
            sim.webhook_url,
            clock,
            limits=LimitsConfig(rate=0, operating_budget_s=None),
            fetch=FetchConfig(concurrency=2, max_attempts=1, batch_size=25),
        )
        async with client:
            started = sim.clock.monotonic()
            outcomes = await fetch_all(client, ids)
            elapsed = sim.clock.monotonic() - started
        stats = sim.stats()
    assert sorted(o.id for o in outcomes) == sorted(ids)
    assert all(isinstance(o, DealFetched) and o.attempts == 1 for o in outcomes)
    assert stats["operating_limited_commands"] > 0
    # ~41 deals per 10-minute window: two resets must pass, and we waited for them rather than
    # hammering (a blind 10 s retry loop would need ~120 requests).
    assert elapsed == 1202.0  # two resets, each waited for with the 1 s margin
    assert stats["requests"] == 5, stats
    assert http.times() == [0.0, 0.0, 601.0, 601.0, 1202.0]
    assert client.stats.operating_wait_s > 0


async def test_on_premise_portal_without_counters() -> None:
    cfg = SimulatorConfig(deals=300, seed=8, operating_budget_s=None)
    clock = VirtualClock()
    async with clock.autojump(), running_simulator(cfg, clock=clock) as sim:
        client, _ = virtual_client(
            sim.webhook_url,
            clock,
            limits=LimitsConfig(rate=0),  # default 480 s budget: pacing must switch itself off
        )
        async with client:
            outcomes = await fetch_all(client, sim.portal.existing_ids)
        assert client.pacer.budget("crm.deal.get").mode == "off"
    assert len(outcomes) == len(sim.portal.existing_ids)
    assert client.stats.operating_peak_s == 0.0


async def test_batch_size_one_learns_the_charge_and_is_never_blocked() -> None:
    # Plain crm.deal.get: each answer reports one `operating` value, so the per-call charge is
    # learnt from its rise (the simulator's reported processing time is not what it charges).
    cfg = SimulatorConfig(deals=400, seed=3, operating_budget_s=20.0, processing_ms=200.0,
                          hidden_fraction=0.0, deleted_fraction=0.0)  # fmt: skip
    clock = VirtualClock()
    async with clock.autojump(), running_simulator(cfg, clock=clock) as sim:
        ids = sim.portal.visible_ids[:150]
        client, http = virtual_client(
            sim.webhook_url,
            clock,
            limits=LimitsConfig(rate=0, operating_budget_s=20.0, operating_headroom=0.0),
            fetch=FetchConfig(batch_size=1, concurrency=4),
        )
        async with client:
            started = sim.clock.monotonic()
            outcomes = await fetch_all(client, ids)
            elapsed = sim.clock.monotonic() - started
        stats = sim.stats()
    assert sorted(o.id for o in outcomes) == sorted(ids)
    assert stats["operating_limited"] == 0
    # Learnt, not the ~0.001 s the answers report; interleaved answers may overestimate it.
    assert 0.18 <= client.pacer.budget("crm.deal.get").cost <= 0.5
    # 30 s of work against 20 s: 100 calls fill the window, the other 50 go once it moves.
    assert elapsed == 601.0
    assert http.times() == [0.0] * 100 + [601.0] * 50
