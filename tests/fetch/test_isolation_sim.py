"""Poison isolation and per-record refusals over real HTTP against the simulator (issue 10).

A deal whose answer the portal cannot encode fails every request that holds it; the engine
splits the batch down to that deal, with a bounded number of extra requests. For a repeating
500 or timeout, a split needs evidence that the portal is up: an answer since the set was formed,
or one health probe (`crm.deal.fields`). An outage (every request failing, the probe too) is not a
poison deal: nothing is split, and it costs one probe in total. A per-command ACCESS_DENIED is one
deal's outcome however many commands answer it; a run in which the user could read no deal is
failed by the run's verdict at the end.
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from pipeline.clock import ScaledClock
from pipeline.config import FetchConfig, LimitsConfig, OAuthAuth, WebhookAuth
from pipeline.errors import FatalPortalError
from pipeline.fetch import PortalClient
from pipeline.outcomes import DealFailed, DealFetched, FetchOutcome
from pipeline.simulator import FaultConfig
from pipeline.simulator.oauth import OAuthError
from tests.conftest import SimulatorFactory
from tests.e2e.helpers import FAST, accounted, cli_env, read_sidecar, run_cli

from .helpers import fetch_all

UNLIMITED = LimitsConfig(rate=0, operating_budget_s=None)
SCALE = 20.0


def one_batch(**kw: object) -> FetchConfig:
    """One batch in flight, so the request count is a pure function of the poison's place."""
    values: dict[str, object] = {
        "concurrency": 1,
        "max_attempts": 3,
        "backoff_base_s": 0.2,
        "backoff_max_s": 1.0,
    }
    values.update(kw)
    return FetchConfig(**values)  # type: ignore[arg-type]


def splits_to_isolate(size: int, index: int) -> int:
    """How many times the batch is halved (bigger half first) before `index` stands alone."""
    splits = 0
    while size > 1:
        mid = (size + 1) // 2
        if index < mid:
            size = mid
        else:
            index -= mid
            size -= mid
        splits += 1
    return splits


def test_splits_to_isolate_is_bounded_by_log2() -> None:
    assert max(splits_to_isolate(50, i) for i in range(50)) == 6
    assert min(splits_to_isolate(50, i) for i in range(50)) == 5
    assert splits_to_isolate(1, 0) == 0


@dataclass(frozen=True)
class Isolation:
    """The engine's requests for one repeat-kind poisoned set, with one batch in flight."""

    requests: int  # every request of the set and its halves, from its split decision on
    probes: int
    splits: int


def isolation(size: int, culprits: set[int], *, evidence: bool) -> Isolation:
    """A model of the engine with concurrency 1 against a healthy portal: halves are queued in
    order (bigger half first); a set is split when something was answered since it was formed,
    else after a successful probe. `evidence`: something was answered since the root set first
    failed. Counts each culprit's first request alone, not its later attempts."""
    answered = 1 if evidence else 0
    queue: deque[tuple[int, int, int]] = deque([(0, size, 0)])
    requests = probes = splits = 0
    while queue:
        lo, hi, mark = queue.popleft()
        requests += 1
        if not culprits & set(range(lo, hi)):
            answered += 1
            continue
        if hi - lo == 1:
            continue
        if answered == mark:
            probes += 1
            answered += 1
        splits += 1
        mid = lo + (hi - lo + 1) // 2
        queue.extend([(lo, mid, answered), (mid, hi, answered)])
    return Isolation(requests, probes, splits)


def test_the_isolation_model() -> None:
    # A lone batch of three culprits: a probe for the set, one for its bigger half.
    assert isolation(3, {0, 1, 2}, evidence=False) == Isolation(5, 2, 2)
    # After a healthy batch: the culprit's half is probed only where it runs before its sibling
    # and nothing answered since its split.
    lone = isolation(50, {30}, evidence=True)
    assert (lone.splits, lone.probes) == (splits_to_isolate(50, 30), 2)
    assert isolation(50, {30}, evidence=True).requests == 1 + 2 * lone.splits


def by_kind(outcomes: list[FetchOutcome]) -> tuple[set[int], dict[int, DealFailed]]:
    ids = [o.id for o in outcomes]
    assert len(ids) == len(set(ids)), "an ID got two outcomes"
    fetched = {o.id for o in outcomes if isinstance(o, DealFetched)}
    failed = {o.id: o for o in outcomes if isinstance(o, DealFailed)}
    return fetched, failed


@pytest.mark.parametrize("index", [0, 24, 37, 49])
async def test_one_poison_deal_costs_two_requests_per_split(
    simulator: SimulatorFactory, index: int
) -> None:
    probe = await simulator(deals=120, seed=4, hidden_fraction=0.0, time_scale=SCALE)
    ids = list(probe.portal.visible_ids[:50])
    poison = ids[index]
    sim = await simulator(
        deals=120, seed=4, hidden_fraction=0.0, time_scale=SCALE, poison_ids=frozenset({poison})
    )
    client = PortalClient(
        WebhookAuth(sim.webhook_url), limits=UNLIMITED, fetch=one_batch(), clock=ScaledClock(SCALE)
    )
    async with client:
        outcomes = await asyncio.wait_for(fetch_all(client, ids), 30)
    fetched, failed = by_kind(outcomes)
    assert fetched == set(ids) - {poison}
    assert list(failed) == [poison]
    culprit = failed[poison]
    assert (culprit.code, culprit.message) == ("WRONG_ENCODING", "Wrong request encoding")
    assert culprit.http_status == 200
    assert culprit.retryable is False
    assert culprit.error_class == "permanent"
    for o in outcomes:
        if isinstance(o, DealFetched):
            assert o.payload == sim.portal.deal_wire(o.id)
    splits = splits_to_isolate(50, index)
    extra = sim.stats()["requests"] - 1
    assert extra == 2 * splits  # both halves of every split, nothing else
    assert extra <= 12
    assert client.stats.batch_splits == splits
    assert client.stats.health_probes == 0  # the server answered: never a probe
    assert client.stats.requests == 1 + extra


async def test_two_poison_deals_in_one_batch_are_both_isolated(
    simulator: SimulatorFactory,
) -> None:
    probe = await simulator(deals=120, seed=4, hidden_fraction=0.0)
    ids = list(probe.portal.visible_ids[:50])
    poison = {ids[3], ids[40]}
    sim = await simulator(deals=120, seed=4, hidden_fraction=0.0, poison_ids=frozenset(poison))
    async with PortalClient(WebhookAuth(sim.webhook_url), limits=UNLIMITED, fetch=one_batch()) as c:
        outcomes = await asyncio.wait_for(fetch_all(c, ids), 30)
    fetched, failed = by_kind(outcomes)
    assert set(failed) == poison
    assert fetched == set(ids) - poison
    assert sim.stats()["requests"] - 1 <= 2 * 12


async def test_poison_alone_with_batch_size_one_fails_once(simulator: SimulatorFactory) -> None:
    sim = await simulator(deals=60, seed=4, hidden_fraction=0.0)
    ids = list(sim.portal.visible_ids[:10])
    sim.set_poison([ids[5]])
    fetch = one_batch(batch_size=1)
    async with PortalClient(WebhookAuth(sim.webhook_url), limits=UNLIMITED, fetch=fetch) as c:
        outcomes = await fetch_all(c, ids)
    fetched, failed = by_kind(outcomes)
    assert list(failed) == [ids[5]]
    assert len(fetched) == 9
    assert failed[ids[5]].code == "WRONG_ENCODING"
    assert sim.stats()["requests"] == 10  # no retry of a deterministic encoding failure


@pytest.mark.parametrize("max_attempts", [1, 2, 3])
async def test_repeating_500_splits_on_its_second_occurrence(
    simulator: SimulatorFactory, max_attempts: int
) -> None:
    # Changed with the review of issue 10: a 500 is split only once the portal has shown it is
    # up (here: the second batch answers while the first waits), and its first sight costs
    # the group a strike, not each member an attempt, so even --max-attempts 1 isolates it.
    probe = await simulator(deals=120, seed=4, hidden_fraction=0.0, time_scale=SCALE)
    ids = list(probe.portal.visible_ids[:50])
    healthy = list(probe.portal.visible_ids[50:100])
    index = 30
    sim = await simulator(
        deals=120,
        seed=4,
        hidden_fraction=0.0,
        time_scale=SCALE,
        poison_ids=frozenset({ids[index]}),
        poison_answer="error_500",
    )
    fetch = one_batch(max_attempts=max_attempts)
    client = PortalClient(
        WebhookAuth(sim.webhook_url), limits=UNLIMITED, fetch=fetch, clock=ScaledClock(SCALE)
    )
    async with client:
        outcomes = await asyncio.wait_for(fetch_all(client, ids + healthy), 30)
    fetched, failed = by_kind(outcomes)
    assert fetched == set(ids + healthy) - {ids[index]}
    assert list(failed) == [ids[index]]
    culprit = failed[ids[index]]
    # Alone and still failing: the portal's own code and text, retryable (a 500 may pass).
    assert (culprit.code, culprit.message) == ("INTERNAL_SERVER_ERROR", "Internal server error")
    assert culprit.http_status == 500
    assert culprit.retryable is True
    assert culprit.attempts == max_attempts
    # The healthy batch; the first 500 (a strike) and its repeat (split); halves that fail
    # split at once when something was answered since their split, else after one probe
    # (changed with the health probe: 2 probes here, at the culprit's 13 and 2 halves, which
    # run before their siblings); alone, the culprit spends all of its attempts (the first of
    # them is the last split's half). 17, 18, 19 requests for 1, 2, 3 attempts.
    model = isolation(50, {index}, evidence=True)
    splits = splits_to_isolate(50, index)
    assert (model.splits, model.probes) == (splits, 2)
    total = 1 + 1 + model.requests + model.probes + (max_attempts - 1)
    assert total == 16 + max_attempts
    assert sim.stats()["requests"] == total
    assert client.stats.batch_splits == splits
    assert client.stats.health_probes == model.probes
    good = [o for o in outcomes if isinstance(o, DealFetched)]
    assert {o.attempts for o in good} == {1}  # victims spent no attempt on the poison


@pytest.mark.parametrize("fault", ["error_500", "html_504"])
async def test_an_outage_is_not_split(simulator: SimulatorFactory, fault: str) -> None:
    # Changed with the health probe: the outage hits every method (a portal that is down),
    # since a portal that answers the probe is up, and a set failing there is split.
    faults = FaultConfig(**{fault: 1.0})  # type: ignore[arg-type]
    sim = await simulator(deals=120, seed=4, hidden_fraction=0.0, time_scale=SCALE, faults=faults)
    ids = list(sim.portal.visible_ids[:100])
    fetch = one_batch(max_attempts=3)
    client = PortalClient(
        WebhookAuth(sim.webhook_url), limits=UNLIMITED, fetch=fetch, clock=ScaledClock(SCALE)
    )
    async with client:
        outcomes = await asyncio.wait_for(fetch_all(client, ids), 30)
    fetched, failed = by_kind(outcomes)
    assert not fetched
    assert set(failed) == set(ids)
    assert {(o.code, o.attempts, o.retryable) for o in failed.values()} == {
        ("RETRIES_EXHAUSTED", 3, True)
    }
    assert client.stats.batch_splits == 0
    assert client.stats.health_probes == 1
    # Two batches, each: the strike, then its attempts (the strike is the one free request);
    # one probe in total (none after it failed, as nothing was answered since): 9 requests.
    assert sim.stats()["requests"] == 2 * (fetch.max_attempts + 1) + 1 == 9


async def test_an_outage_starting_inside_a_split_stops_the_splitting(
    simulator: SimulatorFactory,
) -> None:
    # The portal answers the healthy batch, so the poisoned one is split; then the portal goes
    # down: the first half fails with nothing answered since the split, its probe fails, and
    # nothing is split any more (changed with the health probe: before, the second half had
    # to fail too, and the first was split again meanwhile).
    probe = await simulator(deals=120, seed=4, hidden_fraction=0.0, time_scale=SCALE)
    ids = list(probe.portal.visible_ids[:50])
    healthy = list(probe.portal.visible_ids[50:100])
    # requests: 1 poisoned batch (500), 2 healthy, 3 poisoned again (500: split), then down.
    down = {n: "error_500" for n in range(4, 200)}
    sim = await simulator(
        deals=120,
        seed=4,
        hidden_fraction=0.0,
        time_scale=SCALE,
        poison_ids=frozenset({ids[30]}),
        poison_answer="error_500",
        faults=FaultConfig(script=down),  # type: ignore[arg-type]
    )
    fetch = one_batch(max_attempts=3)
    client = PortalClient(
        WebhookAuth(sim.webhook_url), limits=UNLIMITED, fetch=fetch, clock=ScaledClock(SCALE)
    )
    async with client:
        outcomes = await asyncio.wait_for(fetch_all(client, ids + healthy), 30)
    fetched, failed = by_kind(outcomes)
    assert fetched == set(healthy)
    assert set(failed) == set(ids)
    assert client.stats.batch_splits == 1
    assert client.stats.health_probes == 1
    # 3 requests before the outage; the first half, the probe, the second half (one attempt
    # spent by each ID); then the 50 IDs back among normal batches for their other two
    # attempts: the halves' IDs come back from their backoffs in one batch or in two.
    requests = sim.stats()["requests"]
    assert requests in (3 + 3 + 2 * 1, 3 + 3 + 2 * 2)
    assert {o.attempts for o in failed.values()} == {fetch.max_attempts}
    assert {o.code for o in failed.values()} == {"RETRIES_EXHAUSTED"}


@pytest.mark.parametrize("max_attempts", [1, 3])
async def test_a_lone_batch_of_poison_deals_is_isolated(
    simulator: SimulatorFactory, max_attempts: int
) -> None:
    # Nothing else is requested (a `retry` of three poison IDs): no answer can show that the
    # portal is up, so each split level that needs it asks the portal once.
    probe = await simulator(deals=60, seed=4, hidden_fraction=0.0, time_scale=SCALE)
    ids = list(probe.portal.visible_ids[:3])
    sim = await simulator(
        deals=60,
        seed=4,
        hidden_fraction=0.0,
        time_scale=SCALE,
        poison_ids=frozenset(ids),
        poison_answer="error_500",
    )
    fetch = one_batch(max_attempts=max_attempts)
    client = PortalClient(
        WebhookAuth(sim.webhook_url), limits=UNLIMITED, fetch=fetch, clock=ScaledClock(SCALE)
    )
    async with client:
        outcomes = await asyncio.wait_for(fetch_all(client, ids), 30)
    fetched, failed = by_kind(outcomes)
    assert not fetched
    assert set(failed) == set(ids)
    for culprit in failed.values():
        assert (culprit.code, culprit.message) == ("INTERNAL_SERVER_ERROR", "Internal server error")
        assert culprit.http_status == 500
        assert culprit.retryable is True
        assert culprit.attempts == max_attempts
    # The strike; the repeat, a probe, split in [2] and [1]; the [2] half, a probe, split;
    # each culprit's attempts alone (the first is its half): 8 requests, 14 with 3 attempts.
    model = isolation(3, {0, 1, 2}, evidence=False)
    assert model == Isolation(requests=5, probes=2, splits=2)
    total = 1 + model.requests + model.probes + 3 * (max_attempts - 1)
    assert total == {1: 8, 3: 14}[max_attempts]
    assert sim.stats()["requests"] == total
    assert client.stats.health_probes == 2
    assert client.stats.batch_splits == 2


async def test_two_500_culprits_in_opposite_halves_are_both_isolated(
    simulator: SimulatorFactory,
) -> None:
    # Both halves of the first split fail the same way: two culprits, not an outage.
    probe = await simulator(deals=120, seed=4, hidden_fraction=0.0, time_scale=SCALE)
    ids = list(probe.portal.visible_ids[:50])
    culprits = {3, 40}
    poison = {ids[i] for i in culprits}
    sim = await simulator(
        deals=120,
        seed=4,
        hidden_fraction=0.0,
        time_scale=SCALE,
        poison_ids=frozenset(poison),
        poison_answer="error_500",
    )
    fetch = one_batch(max_attempts=3)
    client = PortalClient(
        WebhookAuth(sim.webhook_url), limits=UNLIMITED, fetch=fetch, clock=ScaledClock(SCALE)
    )
    async with client:
        outcomes = await asyncio.wait_for(fetch_all(client, ids), 30)
    fetched, failed = by_kind(outcomes)
    assert fetched == set(ids) - poison
    assert set(failed) == poison
    assert {(o.code, o.http_status, o.attempts) for o in failed.values()} == {
        ("INTERNAL_SERVER_ERROR", 500, 3)
    }
    for o in outcomes:
        if isinstance(o, DealFetched):
            assert o.payload == sim.portal.deal_wire(o.id)
            assert o.attempts == 1
    model = isolation(50, culprits, evidence=False)
    assert model.splits == splits_to_isolate(50, 3) + splits_to_isolate(50, 40) - 1
    total = 1 + model.requests + model.probes + len(culprits) * (fetch.max_attempts - 1)
    assert (model.requests, model.probes, total) == (21, 3, 29)
    assert sim.stats()["requests"] == total
    assert client.stats.batch_splits == model.splits
    assert client.stats.health_probes == model.probes


async def test_retry_of_only_500_poison_deals_isolates_them(
    simulator: SimulatorFactory, tmp_path: Path
) -> None:
    # Run 1 isolates the three culprits (retryable: a 500 may pass); the retry sends only
    # them, a lone batch, and must end each with the portal's code, not RETRIES_EXHAUSTED.
    sim = await simulator(deals=150, seed=9, hidden_fraction=0.0, poison_answer="error_500")
    poison = sorted(sim.portal.visible_ids[i] for i in (5, 17, 70))
    assert poison[-1] <= 150
    sim.set_poison(poison)
    out = tmp_path / "out"
    args = ["--ids", "1-150", "--ids-format", "range", "--out", str(out), "--max-attempts", "2"]
    first = await run_cli(["run", *args, *FAST], env=cli_env(sim), cwd=tmp_path)
    assert first.code == 3, first.stderr
    before = sim.stats()["by_method"]
    # The get path's requests, counted exactly (the list strategy's isolation: tests/e2e).
    again = await run_cli(
        ["retry", str(out), "--max-attempts", "2", "--strategy", "get", *FAST[:4]],
        env=cli_env(sim),
        cwd=tmp_path,
    )
    assert again.code == 3, again.stderr
    assert "Traceback" not in again.stderr
    data_ids, fetch_ids = accounted(out)
    assert set(data_ids) == {i for i in sim.portal.visible_ids if i <= 150} - set(poison)
    side = read_sidecar(out)
    assert sorted(r["id"] for r in side.to_pylist() if r["retryable"]) == poison
    assert set(fetch_ids) - set(poison) == set(range(1, 151)) - set(sim.portal.visible_ids)
    rows = side.filter(pc.is_in(side.column("id"), pa.array(poison))).to_pylist()
    assert {(r["code"], r["message"], r["http_status"], r["retryable"]) for r in rows} == {
        ("INTERNAL_SERVER_ERROR", "Internal server error", 500, True)
    }
    after = sim.stats()["by_method"]
    spent = {m: after[m] - before.get(m, 0) for m in after if after[m] != before.get(m, 0)}
    # The lone batch: the strike, the repeat, the [2] and [1] halves, the [2] half's quarters,
    # one more attempt alone for each culprit (9 batches), and two probes: 11 requests, and
    # no other request of the retry reaches the portal.
    assert spent == {"batch": 1 + 5 + 3 * (2 - 1), "crm.deal.fields": 2}
    limits = json.loads((out / "_manifest.json").read_text())["limits"]
    assert (limits["health_probes"], limits["batch_splits"]) == (2, 2)


async def test_a_failing_token_refresh_is_never_split(
    simulator: SimulatorFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The OAuth server answers 500 to every refresh: no command of the batch causes that.
    sim = await simulator(deals=120, seed=4, hidden_fraction=0.0, time_scale=SCALE)

    def refresh_fails(params: dict[str, str], now: float) -> dict[str, Any]:
        raise OAuthError(500, "INTERNAL_SERVER_ERROR", "Internal server error")

    monkeypatch.setattr(sim.sim.tokens, "refresh", refresh_fails)
    auth = OAuthAuth(
        endpoint=sim.oauth_endpoint,
        access_token=sim.access_token,
        refresh_token=sim.refresh_token,
        client_id=sim.config.oauth.client_id,
        client_secret=sim.config.oauth.client_secret,
        token_url=sim.token_url,
    )
    sim.expire_access_token()
    ids = list(sim.portal.visible_ids[:100])
    fetch = one_batch(max_attempts=3)
    client = PortalClient(auth, limits=UNLIMITED, fetch=fetch, clock=ScaledClock(SCALE))
    async with client:
        outcomes = await asyncio.wait_for(fetch_all(client, ids), 30)
    _, failed = by_kind(outcomes)
    assert set(failed) == set(ids)
    assert {(o.code, o.attempts) for o in failed.values()} == {("RETRIES_EXHAUSTED", 3)}
    assert "OAuth token refresh failed" in next(iter(failed.values())).message
    assert client.stats.batch_splits == 0
    assert client.stats.health_probes == 0
    assert client.stats.requests == 2 * fetch.max_attempts  # each batch, its attempts


async def test_one_off_500_does_not_split(simulator: SimulatorFactory) -> None:
    sim = await simulator(deals=120, seed=4, faults=FaultConfig(script={1: "error_500"}))
    ids = list(sim.portal.visible_ids[:50])
    async with PortalClient(WebhookAuth(sim.webhook_url), limits=UNLIMITED, fetch=one_batch()) as c:
        outcomes = await fetch_all(c, ids)
    assert all(isinstance(o, DealFetched) for o in outcomes)
    assert sim.stats()["requests"] == 2
    assert c.stats.batch_splits == 0


async def test_retry_isolates_the_poison_deal(simulator: SimulatorFactory, tmp_path: Path) -> None:
    # Run 1: every batch fails (and one attempt is all it may spend), so every ID is retryable.
    sim = await simulator(
        deals=150, seed=9, faults=FaultConfig(error_500=1.0, methods=frozenset({"batch"}))
    )
    out = tmp_path / "out"
    args = ["--ids", "1-150", "--ids-format", "range", "--out", str(out), "--max-attempts", "1"]
    first = await run_cli(["run", *args, *FAST], env=cli_env(sim), cwd=tmp_path)
    assert first.code == 3, first.stderr
    poison = sim.portal.visible_ids[17]
    sim.set_faults(FaultConfig())
    sim.set_poison([poison])
    before = sim.stats()["requests"]
    # The get path's requests, counted (the list strategy's isolation: tests/e2e).
    get_fast = ["--strategy", "get", *FAST[:4]]
    again = await run_cli(["retry", str(out), *get_fast], env=cli_env(sim), cwd=tmp_path)
    assert again.code == 0, again.stderr
    data_ids, fetch_ids = accounted(out)
    assert set(data_ids) == {i for i in sim.portal.visible_ids if i <= 150} - {poison}
    side = read_sidecar(out)
    row = side.filter(pc.equal(side.column("id"), poison)).to_pylist()
    assert len(row) == 1
    assert row[0]["code"] == "WRONG_ENCODING"
    assert row[0]["message"] == "Wrong request encoding"
    assert row[0]["retryable"] is False
    # 150 IDs are 3 batches of 50 (or fewer after the first run's permanent failures, which
    # are not retried); the one holding the poison costs at most 12 more.
    batches = -(-len(set(fetch_ids) | set(data_ids)) // 50)
    assert sim.stats()["requests"] - before <= batches + 12


# -- per-record refusals ---------------------------------------------------------------------


async def test_per_command_access_denied_is_that_deals_outcome(
    simulator: SimulatorFactory,
) -> None:
    sim = await simulator(deals=300, seed=3, hidden_fraction=0.05, denied_code="ACCESS_DENIED")
    hidden = set(sim.portal.hidden_ids)
    assert hidden
    async with PortalClient(WebhookAuth(sim.webhook_url), limits=UNLIMITED) as client:
        outcomes = await fetch_all(client, range(1, sim.portal.max_id + 1))
    fetched, failed = by_kind(outcomes)
    assert fetched == set(sim.portal.visible_ids)
    denied = {i for i, o in failed.items() if o.code == "ACCESS_DENIED"}
    assert denied == hidden
    for i in denied:
        assert failed[i].message == "Access denied."
        assert failed[i].retryable is False
        assert failed[i].error_class == "permanent"


async def test_access_denied_with_403_on_plain_gets_is_per_deal(
    simulator: SimulatorFactory,
) -> None:
    sim = await simulator(
        deals=80, seed=3, hidden_fraction=0.1, denied_code="ACCESS_DENIED", denied_status=403
    )
    hidden = set(sim.portal.hidden_ids)
    fetch = FetchConfig(batch_size=1)
    async with PortalClient(WebhookAuth(sim.webhook_url), limits=UNLIMITED, fetch=fetch) as c:
        outcomes = await fetch_all(c, sim.portal.existing_ids)
    fetched, failed = by_kind(outcomes)
    assert set(failed) == hidden
    assert hidden
    assert {o.http_status for o in failed.values()} == {403}
    assert fetched == set(sim.portal.visible_ids)


async def test_every_command_denied_is_every_deals_outcome(simulator: SimulatorFactory) -> None:
    # Changed with the review of issue 10: per-command refusals never stop the fetch (the run's
    # verdict fails a run that could read nothing, see the CLI test below); only a refusal of
    # a whole request does.
    sim = await simulator(deals=200, seed=3, can_read_deals=False, denied_code="ACCESS_DENIED")
    async with PortalClient(WebhookAuth(sim.webhook_url), limits=UNLIMITED) as client:
        outcomes = await fetch_all(client, range(1, 150))
        fetched, failed = by_kind(outcomes)
        assert not fetched
        assert set(failed) == set(range(1, 150))
        assert {o.code for o in failed.values()} == {"ACCESS_DENIED"}
        assert sim.stats()["requests"] == 3
        # The same refusal for a whole request (crm.deal.list) is fatal at once, with the hint
        # about the user's rights, not the plan.
        with pytest.raises(FatalPortalError) as whole:
            await client.call("crm.deal.list", {"select": ["ID"]})
        assert whole.value.code == "ACCESS_DENIED"
        assert "CRM read" in str(whole.value) or "deal read" in str(whole.value)
        assert "commercial plan" not in str(whole.value)
        assert sim.secret not in str(whole.value)


async def test_a_first_batch_of_only_hidden_deals_does_not_stop_the_run(
    simulator: SimulatorFactory,
) -> None:
    sim = await simulator(deals=300, seed=3, hidden_fraction=0.3, denied_code="ACCESS_DENIED")
    hidden = list(sim.portal.hidden_ids)[:50]
    visible = list(sim.portal.visible_ids)
    assert len(hidden) == 50
    fetch = one_batch()
    async with PortalClient(WebhookAuth(sim.webhook_url), limits=UNLIMITED, fetch=fetch) as c:
        outcomes = await asyncio.wait_for(fetch_all(c, hidden + visible), 30)
    fetched, failed = by_kind(outcomes)
    assert fetched == set(visible)
    assert set(failed) == set(hidden)
    assert {o.code for o in failed.values()} == {"ACCESS_DENIED"}


async def test_cli_run_whose_first_batch_is_all_hidden_exits_0(
    simulator: SimulatorFactory, tmp_path: Path
) -> None:
    # The ID set is sorted, so the first batch is all hidden when the 50 lowest IDs are.
    sim = await simulator(deals=300, seed=3, hidden_fraction=0.3, denied_code="ACCESS_DENIED")
    hidden = sorted(sim.portal.hidden_ids)[:50]
    visible = [i for i in sim.portal.visible_ids if i > hidden[-1]]
    assert len(hidden) == 50
    assert visible
    ids = tmp_path / "ids.txt"
    ids.write_text("\n".join(map(str, hidden + visible)) + "\n")
    out = tmp_path / "out"
    args = ["run", "--ids", str(ids), "--out", str(out), "--concurrency", "1", *FAST]
    done = await run_cli(args, env=cli_env(sim), cwd=tmp_path)
    assert done.code == 0, done.stderr
    data_ids, fetch_ids = accounted(out)
    assert sorted(data_ids) == sorted(visible)
    assert sorted(fetch_ids) == sorted(hidden)


async def test_cli_run_that_can_read_no_deal_exits_1(
    simulator: SimulatorFactory, tmp_path: Path
) -> None:
    sim = await simulator(deals=200, seed=3, can_read_deals=False, denied_code="ACCESS_DENIED")
    out = tmp_path / "out"
    args = ["run", "--ids", "1-149", "--ids-format", "range", "--out", str(out), *FAST]
    done = await run_cli(args, env=cli_env(sim), cwd=tmp_path)
    assert done.code == 1, done.stdout + done.stderr
    assert "could read none of the requested deals" in done.stdout
    assert "Traceback" not in done.stderr
    assert sim.secret not in done.stdout + done.stderr


async def test_cli_run_with_one_denied_deal_exits_0(
    simulator: SimulatorFactory, tmp_path: Path
) -> None:
    sim = await simulator(deals=200, seed=3, hidden_fraction=0.02, denied_code="ACCESS_DENIED")
    hidden = sim.portal.hidden_ids[0]
    wanted = [*sim.portal.visible_ids[:60], hidden]
    ids = tmp_path / "ids.txt"
    ids.write_text("\n".join(map(str, wanted)) + "\n")
    out = tmp_path / "out"
    done = await run_cli(
        ["run", "--ids", str(ids), "--out", str(out), *FAST], env=cli_env(sim), cwd=tmp_path
    )
    assert done.code == 0, done.stderr
    data_ids, fetch_ids = accounted(out)
    assert sorted(data_ids) == sorted(sim.portal.visible_ids[:60])
    assert fetch_ids == [hidden]
    side = read_sidecar(out)
    assert side.column("code").to_pylist() == ["ACCESS_DENIED"]
