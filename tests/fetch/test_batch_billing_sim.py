"""A portal that charges a `batch` request to the method `batch`, as the official JS SDK's
maintainers measured (github.com/bitrix24/b24jssdk pull request 539): one budget for every
nested method, the real counter in the envelope's `time`, and every command's `result_time`
entry carrying one and the same `operating`. The REST docs say the opposite (`limits.md`: the
outer batch is not counted), so the client must stay within the budget either way. The portal
and the client share one virtual clock, so schedules and counts are exact."""

from __future__ import annotations

import pytest

from pipeline.clock import VirtualClock
from pipeline.config import FetchConfig, LimitsConfig
from pipeline.outcomes import DealFetched
from pipeline.simulator import SimulatorConfig, running_simulator

from .helpers import fetch_all, virtual_client


@pytest.mark.parametrize("billing", ["batch", "nested"])
async def test_a_backfill_stays_within_the_budget_whoever_the_batch_is_billed_to(
    billing: str,
) -> None:
    # 400 gets of 0.1 s: 40 s of work against a 15 s budget, so the window must move twice.
    cfg = SimulatorConfig(deals=500, seed=5, operating_budget_s=15.0, processing_ms=100.0,
                          hidden_fraction=0.0, deleted_fraction=0.0,
                          batch_billing=billing)  # type: ignore[arg-type]  # fmt: skip
    clock = VirtualClock()
    async with clock.autojump(), running_simulator(cfg, clock=clock) as sim:
        ids = sim.portal.visible_ids[:400]
        client, http = virtual_client(
            sim.webhook_url,
            clock,
            limits=LimitsConfig(rate=0, operating_budget_s=15.0, operating_headroom=0.0),
            fetch=FetchConfig(batch_size=25, concurrency=4),
        )
        async with client:
            started = sim.clock.monotonic()
            outcomes = await fetch_all(client, ids)
            elapsed = sim.clock.monotonic() - started
        stats = sim.stats()
    assert sorted(o.id for o in outcomes) == sorted(ids)
    assert all(isinstance(o, DealFetched) for o in outcomes)
    assert stats["operating_limited"] == stats["operating_limited_commands"] == 0, stats
    # Flat per-command counters are no measure of cost: the estimate stays near what a get
    # costs instead of falling to nothing (which admits everything at once).
    assert client.pacer.budget("crm.deal.get").cost >= 0.05
    # 150 gets fit a window; the rest waits for two resets, never for a refusal.
    # Six requests fill the first window's 15 s, six the second's; the rest waits for two
    # resets, never for a refusal. Billed to `batch`, the window is the one the envelope
    # reports, which opened with the batch's first charge.
    first, second = (602.0, 1203.0) if billing == "batch" else (601.0, 1202.0)
    last = 5 if billing == "batch" else 4
    assert http.times() == [0.0] * 6 + [first] * 6 + [second] * last
    assert elapsed == second
