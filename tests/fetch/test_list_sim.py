"""The list strategy against the simulator on virtual time: paced within crm.deal.list's own
operating budget and the cloud's 60 s cap per request, never blocked, each ID fetched once
(and get batches held to the same 60 s cap)."""

from __future__ import annotations

import orjson
import pytest

from pipeline.clock import VirtualClock
from pipeline.config import FetchConfig, LimitsConfig, WebhookAuth
from pipeline.fetch import PortalClient
from pipeline.fetch.listing import LIST_BATCH_COMMANDS
from pipeline.fetch.pacing import REQUEST_CAP_S, REQUEST_CAP_SHARE
from pipeline.fetch.wire import HttpResponse
from pipeline.outcomes import DealFailed, DealFetched
from pipeline.simulator import SimulatorConfig, running_simulator

from .helpers import BusyTransport, fetch_all, virtual_client
from .test_pacing_sim import ideal_duration


class CountingTransport(BusyTransport):
    """Also records the commands each `batch` carried (method of its first command, count)."""

    commands: list[tuple[str, int]]

    async def post(self, url: str, body: bytes) -> HttpResponse:
        if url.rstrip("/").endswith("batch"):
            cmd = orjson.loads(body)["cmd"]
            first = next(iter(cmd.values())).split("?", 1)[0]
            self.commands = [*getattr(self, "commands", []), (first, len(cmd))]
        return await super().post(url, body)


async def test_list_at_the_operating_limit_is_near_optimal_never_blocked_and_capped() -> None:
    call_s = 2.0  # a costly list call: 15 of them fill half the 60 s cap
    cfg = SimulatorConfig(
        deals=3300,
        seed=5,
        plan="standard",
        operating_budget_s=100.0,
        list_processing_ms=call_s * 1000,
        list_row_processing_ms=0.0,
        hidden_fraction=0.0,
        deleted_fraction=0.0,
    )
    clock = VirtualClock()
    async with clock.autojump(), running_simulator(cfg, clock=clock) as sim:
        ids = sim.portal.visible_ids[:3000]
        limits = LimitsConfig(
            rate=cfg.rate, burst=cfg.burst, headroom=0.02, operating_budget_s=100.0,
            operating_headroom=0.0,
        )  # fmt: skip
        http = CountingTransport(clock, pool_size=8)
        client = PortalClient(
            WebhookAuth(sim.webhook_url),
            limits=limits,
            fetch=FetchConfig(strategy="list"),
            clock=clock,
            http=http,
        )
        async with client:
            started = sim.clock.monotonic()
            outcomes = await fetch_all(client, ids)
            elapsed = sim.clock.monotonic() - started
        stats = sim.stats()
    assert sorted(o.id for o in outcomes) == sorted(ids)
    assert all(isinstance(o, DealFetched) for o in outcomes)
    assert stats["operating_limited"] == stats["operating_limited_commands"] == 0
    assert stats["rate_limited"] == 0
    assert stats["deal_gets"] == 0
    cap = int(REQUEST_CAP_S * REQUEST_CAP_SHARE / call_s)
    sizes = [n for method, n in http.commands if method == "crm.deal.list"]
    assert sizes[0] == 1  # before any cost is known
    assert max(sizes) <= cap
    assert sum(sizes) == 60
    ideal = ideal_duration(60, rate=cfg.rate, burst=cfg.burst, budget_s=100.0, cost_s=call_s)
    assert ideal > 100  # the budget binds: one window must pass
    # Virtual time, so the schedule is exact: what the first window's budget affords goes at
    # once, the rest waits until the spent budget comes back (at 601 s).
    # At most LIST_BATCH_COMMANDS list calls per request (which bounds an answer's size), and
    # here the 60 s cap's 15: 50 calls fit the first window, the other 10 go in one request at
    # 601 s.
    assert max(sizes) <= LIST_BATCH_COMMANDS
    schedule = [0.0] * 6 + [601.0]
    assert http.times("batch") == pytest.approx(schedule)
    assert elapsed == pytest.approx(schedule[-1])
    assert schedule[-1] <= 1.1 * ideal, f"{schedule[-1]:.1f}s vs ideal {ideal:.1f}s"


@pytest.mark.parametrize("can_read", [True, False])
async def test_absent_ids_end_with_gets_reason(can_read: bool) -> None:
    cfg = SimulatorConfig(deals=400, seed=3, can_read_deals=can_read)
    clock = VirtualClock()
    async with clock.autojump(), running_simulator(cfg, clock=clock) as sim:
        ids = list(range(1, 200))
        client, _ = virtual_client(
            sim.webhook_url,
            clock,
            limits=LimitsConfig(rate=0, operating_budget_s=None),
            fetch=FetchConfig(strategy="list"),
        )
        async with client:
            outcomes = {o.id: o for o in await fetch_all(client, ids)}
        portal = sim.portal
    assert sorted(outcomes) == ids
    for deal_id, outcome in outcomes.items():
        if can_read and portal.readable(deal_id):
            assert isinstance(outcome, DealFetched)
            continue
        assert isinstance(outcome, DealFailed)
        assert outcome.attempts == 1
        if not can_read:
            assert outcome.message.startswith("Access denied")
        elif deal_id in portal.hidden_ids:
            assert outcome.message == "Access denied."
        else:
            assert outcome.message == "Not found"
    assert client.stats.list_followups == sum(isinstance(o, DealFailed) for o in outcomes.values())


async def test_follow_up_gets_of_absent_ids_are_paced_against_gets_own_budget() -> None:
    # A third of the IDs are absent: their follow-up gets all fail, and failed commands report
    # no `operating`, yet each is charged to crm.deal.get's budget.
    cfg = SimulatorConfig(
        deals=3000,
        seed=9,
        plan="standard",
        operating_budget_s=20.0,
        processing_ms=20.0,
        list_processing_ms=10.0,
        list_row_processing_ms=0.0,
        hidden_fraction=0.1,
        deleted_fraction=0.25,
    )
    clock = VirtualClock()
    async with clock.autojump(), running_simulator(cfg, clock=clock) as sim:
        ids = list(range(1, 3001))
        limits = LimitsConfig(
            rate=cfg.rate, burst=cfg.burst, headroom=0.02, operating_budget_s=20.0,
            operating_headroom=0.0,
        )  # fmt: skip
        client, _ = virtual_client(
            sim.webhook_url, clock, limits=limits, fetch=FetchConfig(strategy="list")
        )
        async with client:
            outcomes = await fetch_all(client, ids)
        stats = sim.stats()
        visible = set(sim.portal.visible_ids)
    assert sorted(o.id for o in outcomes) == ids
    assert {o.id for o in outcomes if isinstance(o, DealFetched)} == visible & set(ids)
    assert stats["deal_gets"] * 0.02 > 20.0  # the follow-ups alone overrun one window
    assert stats["operating_limited"] == stats["operating_limited_commands"] == 0, stats


async def test_get_batches_are_capped_to_the_request_cap_by_measured_cost() -> None:
    # 3 s a get: 50 in one request would take 150 s, past the cloud's 60 s per request.
    cfg = SimulatorConfig(deals=400, seed=4, processing_ms=3000.0, hidden_fraction=0.0,
                          deleted_fraction=0.0)  # fmt: skip
    clock = VirtualClock()
    async with clock.autojump(), running_simulator(cfg, clock=clock) as sim:
        ids = sim.portal.visible_ids[:300]
        http = CountingTransport(clock, pool_size=8)
        client = PortalClient(
            WebhookAuth(sim.webhook_url),
            limits=LimitsConfig(rate=0, operating_budget_s=None),
            fetch=FetchConfig(strategy="get", concurrency=1),
            clock=clock,
            http=http,
        )
        async with client:
            outcomes = await fetch_all(client, ids)
    assert sorted(o.id for o in outcomes) == sorted(ids)
    assert all(isinstance(o, DealFetched) and o.attempts == 1 for o in outcomes)
    sizes = [n for method, n in http.commands if method == "crm.deal.get"]
    cap = int(REQUEST_CAP_S * REQUEST_CAP_SHARE / 3.0)
    assert sizes[0] == 50  # nothing measured yet: a get is taken to be cheap
    assert len(sizes) > 1
    assert max(sizes[1:]) <= cap
    assert sum(sizes) == len(ids)
