"""`list_all_ids` over real HTTP against the simulator: every listable ID, chained pages per
batch, and the number of requests that costs."""

from __future__ import annotations

import pytest

from pipeline.clock import ScaledClock
from pipeline.config import FetchConfig, LimitsConfig, WebhookAuth
from pipeline.errors import FatalPortalError, TransientError
from pipeline.fetch import PortalClient
from pipeline.ids.all_ids import PAGE_SIZE, build_list_batch, list_all_ids
from pipeline.simulator import FaultConfig, RunningSimulator, SimulatorConfig
from pipeline.simulator import methods as sim_methods
from tests.conftest import SimulatorFactory

UNLIMITED = LimitsConfig(rate=0, operating_budget_s=None)
FAST = FetchConfig(max_attempts=4, backoff_base_s=0.01, backoff_max_s=0.05)


def expected_requests(n: int, pages: int) -> int:
    """ceil(n / 50 / pages), plus one when a batch ends on a full page exactly at the end."""
    return n // (PAGE_SIZE * pages) + 1


def client_for(sim: RunningSimulator, **kw: object) -> PortalClient:
    return PortalClient(WebhookAuth(sim.webhook_url), limits=UNLIMITED, fetch=FAST, **kw)  # type: ignore[arg-type]


def test_batch_chains_each_page_to_the_last_row_of_the_one_before() -> None:
    body = build_list_batch(700, 3)
    assert body["halt"] == 0
    cmd = body["cmd"]
    assert list(cmd) == ["p0", "p1", "p2"]
    assert cmd["p0"] == (
        "crm.deal.list?select%5B0%5D=ID&order%5BID%5D=ASC&filter%5B%3EID%5D=700&start=-1"
    )
    assert "filter%5B%3EID%5D=%24result%5Bp1%5D%5B49%5D%5BID%5D" in cmd["p2"]
    with pytest.raises(ValueError, match="pages"):
        build_list_batch(0, 51)


@pytest.mark.parametrize("pages", [1, 3, 50])
async def test_lists_exactly_the_readable_deals(simulator: SimulatorFactory, pages: int) -> None:
    sim = await simulator(deals=1234, seed=11, hidden_fraction=0.05, deleted_fraction=0.05)
    sim.sim.portal.delete(sim.portal.visible_ids[100:160:3])  # deleted while running too
    visible = sim.portal.visible_ids
    assert sim.portal.hidden_ids  # the gaps the listing must skip
    assert sim.portal.deleted_ids
    async with client_for(sim) as client:
        ids = await list_all_ids(client, pages_per_batch=pages)
    assert list(ids) == visible
    assert sim.stats()["requests"] == expected_requests(len(visible), pages)
    assert client.stats.requests == expected_requests(len(visible), pages)


@pytest.mark.parametrize(("pages", "requests"), [(2, 2), (3, 1), (1, 3)])
async def test_full_last_page_needs_one_more_look(
    simulator: SimulatorFactory, pages: int, requests: int
) -> None:
    sim = await simulator(deals=130, seed=5, hidden_fraction=0.0, deleted_fraction=0.0)
    sim.sim.portal.delete(sim.portal.visible_ids[100:])
    assert len(sim.portal.visible_ids) == 100
    async with client_for(sim) as client:
        ids = await list_all_ids(client, pages_per_batch=pages)
    assert list(ids) == sim.portal.visible_ids
    assert sim.stats()["requests"] == requests == expected_requests(100, pages)


async def test_empty_portal_is_one_request(simulator: SimulatorFactory) -> None:
    sim = await simulator(deals=20, seed=5)
    sim.sim.portal.delete(sim.portal.existing_ids)
    async with client_for(sim) as client:
        assert list(await list_all_ids(client)) == []
    assert sim.stats()["requests"] == 1


async def test_new_deals_are_listed(simulator: SimulatorFactory) -> None:
    sim = await simulator(deals=60, seed=5)
    created = sim.create(75)
    assert created == list(range(created[0], created[0] + 75))
    assert created[0] > max(sim.portal.existing_ids[:-75])
    async with client_for(sim) as client:
        ids = list(await list_all_ids(client, pages_per_batch=2))
    assert ids == sim.portal.visible_ids
    assert set(created) <= set(ids)


async def test_a_user_who_cannot_read_deals_stops_the_listing(simulator: SimulatorFactory) -> None:
    sim = await simulator(deals=60, seed=5, can_read_deals=False)
    async with client_for(sim) as client:
        with pytest.raises(FatalPortalError) as err:
            await list_all_ids(client)
    assert "Access denied" in str(err.value)
    assert sim.secret not in str(err.value)


async def test_transient_faults_resume_after_the_last_id_taken(simulator: SimulatorFactory) -> None:
    sim = await simulator(deals=700, seed=8)
    sim.set_faults(FaultConfig(script={2: "error_500", 3: "html_502", 5: "truncated"}))
    async with client_for(sim) as client:
        ids = await list_all_ids(client, pages_per_batch=3)
    assert list(ids) == sim.portal.visible_ids
    assert client.stats.retries == 3


async def test_unresolved_references_fall_back_to_one_page_per_request(
    simulator: SimulatorFactory, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # A server that leaves `$result[...]` unsubstituted (PHP's (int) makes it 0): the chained
    # page lists from the start again, which must not be trusted.
    monkeypatch.setattr(sim_methods, "_substitute", lambda params, done: params)
    sim = await simulator(deals=260, seed=3)
    async with client_for(sim) as client:
        ids = await list_all_ids(client, pages_per_batch=4)
    visible = sim.portal.visible_ids
    assert list(ids) == visible
    assert sim.stats()["requests"] == 1 + (len(visible) - PAGE_SIZE) // PAGE_SIZE + 1
    assert any(r.getMessage().count("one page per request") for r in caplog.records)


async def test_operating_limit_on_a_page_waits_and_resumes(simulator: SimulatorFactory) -> None:
    # Each list page costs 0.3 s of a 1 s budget: the fourth page of a batch is refused with a
    # per-command 429, the pages before it count, and the listing goes on once the window moves.
    clock = ScaledClock(600.0)
    sim = await simulator(
        SimulatorConfig(
            deals=400, seed=2, time_scale=600.0, operating_budget_s=1.0, list_processing_ms=300
        ),
        clock=clock,
    )
    async with client_for(sim, clock=clock) as client:
        ids = await list_all_ids(client, pages_per_batch=6)
    assert list(ids) == sim.portal.visible_ids
    assert client.stats.operating_limited_commands >= 1
    assert sim.stats()["operating_limited_commands"] >= 1


def skip_pages(monkeypatch: pytest.MonkeyPatch, key: str, times: int) -> None:
    """Make the simulator leave page `key` out of its next `times` batch answers (neither a
    result nor an error: a command that was not executed)."""
    real = sim_methods.Api.batch
    left = [times]

    def batch(self: sim_methods.Api, params: object, caller: str) -> dict[str, object]:
        answer = real(self, params, caller)  # type: ignore[arg-type]
        rows = answer["result"]
        if left[0] > 0 and isinstance(rows, dict) and key in rows:
            left[0] -= 1
            del rows[key]
        return answer

    monkeypatch.setattr(sim_methods.Api, "batch", batch)


async def test_a_page_not_executed_is_asked_again(
    simulator: SimulatorFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    skip_pages(monkeypatch, "p1", 1)
    sim = await simulator(deals=400, seed=8)
    async with client_for(sim) as client:
        ids = await list_all_ids(client, pages_per_batch=3)
    assert list(ids) == sim.portal.visible_ids
    assert client.stats.missing_commands == 1


async def test_a_page_never_executed_ends_the_listing(
    simulator: SimulatorFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    skip_pages(monkeypatch, "p0", 1000)
    sim = await simulator(deals=400, seed=8)
    async with client_for(sim) as client:
        with pytest.raises(TransientError, match="not executed"):
            await list_all_ids(client, pages_per_batch=3)
    assert client.stats.missing_commands == FAST.max_attempts  # bounded, never a loop


async def test_progress_before_a_skipped_page_keeps_the_listing_going(
    simulator: SimulatorFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every batch loses its second page, yet its first one moves on: attempts are counted
    # per stretch without progress, so the listing ends complete.
    skip_pages(monkeypatch, "p1", 1000)
    sim = await simulator(deals=400, seed=8)
    async with client_for(sim) as client:
        ids = await list_all_ids(client, pages_per_batch=3)
    assert list(ids) == sim.portal.visible_ids


async def test_a_refused_reference_falls_back_to_one_page_per_request(
    simulator: SimulatorFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A portal that refuses a filter value it could not resolve: only chained pages fail.
    real = sim_methods.Api.deal_list

    def deal_list(self: sim_methods.Api, params: dict[object, object]) -> object:
        flt = params.get("filter")
        if isinstance(flt, dict) and str(flt.get(">ID", "")).startswith("$result"):
            raise sim_methods.MethodError(400, "", "Invalid filter value")
        return real(self, params)  # type: ignore[arg-type]

    monkeypatch.setattr(sim_methods, "_substitute", lambda params, done: params)
    monkeypatch.setattr(sim_methods.Api, "deal_list", deal_list)
    sim = await simulator(deals=200, seed=3)
    async with client_for(sim) as client:
        ids = await list_all_ids(client, pages_per_batch=5)
    assert list(ids) == sim.portal.visible_ids
