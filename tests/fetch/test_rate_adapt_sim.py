"""Limits over real HTTP against the simulator (issues 10 and 14): a bucket shared with someone
else lowers our rate, a 429 without a code pauses one method only, and each pause or refusal
episode is logged once whatever the concurrency. Counts are asserted, never durations; the
episodes run on a virtual clock shared with the portal, so the counts are exact."""

from __future__ import annotations

import asyncio
import logging

import pytest

from pipeline.clock import VirtualClock
from pipeline.config import FetchConfig, LimitsConfig, WebhookAuth
from pipeline.errors import OperatingLimited
from pipeline.fetch import PortalClient
from pipeline.fetch.batch import DEAL_GET
from pipeline.outcomes import DealFetched
from pipeline.simulator import FaultConfig
from tests.conftest import SimulatorFactory

from .helpers import fetch_all, virtual_client

PACING = "pipeline.fetch.pacing"


def warnings(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == PACING and r.levelno == logging.WARNING and text in r.getMessage()
    ]


async def test_a_portal_draining_slower_than_the_plan_costs_one_episode(
    simulator: SimulatorFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger=PACING)
    clock = VirtualClock()
    # The portal drains 0.5 req/s with a burst of 10 (someone else uses the rest of the
    # bucket); the client believes the standard plan (2 req/s, burst 50).
    sim = await simulator(deals=400, seed=5, rate=0.5, burst=10, clock=clock)
    limits = LimitsConfig.for_plan("standard", operating_budget_s=None)
    fetch = FetchConfig(batch_size=2, concurrency=4, max_attempts=5)
    ids = sim.portal.visible_ids
    client, _ = virtual_client(sim.webhook_url, clock, limits=limits, fetch=fetch, rand=zero)
    async with clock.autojump(), client:
        first = await asyncio.wait_for(fetch_all(client, ids[:80]), 60)
        refused_in_episode = sim.stats()["rate_limited"]
        gate = client.pacer.rate
        assert gate.episodes == 1
        assert gate.rate < limits.effective_rate / 2  # lowered in steps towards the real 0.5
        assert gate.burst < limits.effective_burst
        second = await asyncio.wait_for(fetch_all(client, ids[80:140]), 60)
    assert all(isinstance(o, DealFetched) for o in first + second)
    assert refused_in_episode > 0
    # Without adaptation the issue saw 55 of 116 refused; one episode costs a handful.
    assert refused_in_episode <= 20
    assert sim.stats()["rate_limited"] == refused_in_episode  # none after the first episode
    assert gate.episodes == 1
    assert len(warnings(caplog, "rate limit hit")) == 1  # one line, not one per refusal
    assert refused_in_episode == 8  # exact on virtual time (seeded portal, no jitter)
    assert gate.rate == pytest.approx(1.8 * 0.8**6)  # six lowering refusals of 20 %
    assert gate.burst == 10


async def test_429_without_code_pauses_only_the_method_called(
    simulator: SimulatorFactory,
) -> None:
    sim = await simulator(deals=60, seed=2, faults=FaultConfig(script={1: "error_429"}))
    limits = LimitsConfig(rate=0, operating_budget_s=None)
    deal = sim.portal.visible_ids[0]
    async with PortalClient(WebhookAuth(sim.webhook_url), limits=limits) as client:
        with pytest.raises(OperatingLimited):
            await client.get_deal(deal)
        assert client.pacer.budget(DEAL_GET).paused_for() > 0
        # Another method goes on at once: nothing else waited, no rate-limit back-off.
        rows = await client.call("crm.deal.list", {"select": ["ID"], "start": -1})
        assert rows
        assert client.stats.operating_wait_s == 0.0
        assert client.stats.rate_wait_s == 0.0
        assert client.stats.rate_limited == 0
        assert client.pacer.rate.episodes == 0
        assert client.pacer.budget("crm.deal.list").paused_for() == 0.0
        assert client.pacer.budget(DEAL_GET).pauses == 1


async def test_429_without_code_on_a_batch_pauses_its_nested_method(
    simulator: SimulatorFactory,
) -> None:
    sim = await simulator(deals=60, seed=2, faults=FaultConfig(script={1: "error_429"}))
    limits = LimitsConfig(rate=0, operating_budget_s=None)
    async with PortalClient(WebhookAuth(sim.webhook_url), limits=limits) as client:
        with pytest.raises(OperatingLimited):
            await client.batch_get(sim.portal.visible_ids[:5])
        assert client.pacer.budget(DEAL_GET).paused_for() > 0
        assert client.pacer.budget("batch").paused_for() == 0.0
        await client.call("crm.deal.fields")
        assert client.stats.operating_wait_s == 0.0
        assert client.pacer.rate.episodes == 0


async def test_one_warning_per_pause_at_concurrency_4(
    simulator: SimulatorFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=PACING)
    clock = VirtualClock()
    script = dict.fromkeys(range(1, 5), "error_429")
    sim = await simulator(
        deals=300,
        seed=2,
        clock=clock,
        faults=FaultConfig(script=script),  # type: ignore[arg-type]
    )
    limits = LimitsConfig(rate=0, operating_budget_s=None)
    fetch = FetchConfig(batch_size=50, concurrency=4)
    ids = sim.portal.visible_ids[:200]
    client, http = virtual_client(sim.webhook_url, clock, limits=limits, fetch=fetch)
    async with clock.autojump(), client:
        outcomes = await asyncio.wait_for(fetch_all(client, ids), 60)
        pauses = client.pacer.budget(DEAL_GET).pauses
    assert all(isinstance(o, DealFetched) for o in outcomes)
    assert sim.stats()["by_method_status"].get("batch 429", 0) == 4
    assert client.stats.operating_limited == 4
    lines = warnings(caplog, "blocked by the portal")
    assert len(lines) == pauses
    assert pauses == 1  # four refusals in flight together are one pause
    assert "HTTP 429 (no code)" in lines[0]
    # The four refused at once; all wait the one pause (10 s, no reset known), then go.
    assert http.times() == [0.0] * 4 + [10.0] * 4


def zero() -> float:
    return 0.0
