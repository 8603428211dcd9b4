"""Wide deals (long COMMENTS, `comment_bytes`) under the list strategy: once a list answer told
how wide rows are on the wire, list batches ask for LIST_ANSWER_BYTES of rows at most and the
payload credits shrink to PAYLOAD_BYTES of them; deals of the usual width keep today's batches.
Real HTTP against the simulator, on virtual time."""

from __future__ import annotations

import asyncio
import statistics
from collections.abc import Sequence
from contextlib import aclosing
from dataclasses import dataclass, field

import orjson
import pytest

import pipeline.fetch.engine as engine_module
from pipeline.clock import VirtualClock
from pipeline.config import FetchConfig, LimitsConfig, WebhookAuth
from pipeline.fetch import PortalClient, fetch_batches
from pipeline.fetch.engine import LIST_ANSWER_BYTES, PAYLOAD_BYTES, PAYLOAD_CREDITS
from pipeline.fetch.listing import LIST_BATCH_COMMANDS, LIST_PAGE
from pipeline.fetch.width import RowWidth, result_size, rows_size
from pipeline.fetch.wire import HttpResponse
from pipeline.outcomes import DealFailed, DealFetched, FetchOutcome
from pipeline.simulator import SimulatorConfig, running_simulator

from .helpers import BusyTransport

UNLIMITED = LimitsConfig(rate=0, operating_budget_s=None)
DEALS = 3000
WIDE = 20_000


@dataclass(frozen=True, slots=True)
class ListAnswer:
    calls: int
    size: int
    rows: int
    #: The bytes of its rows alone (`rows_size`), what the width is measured by.
    rows_size: int


class AnswerLog(BusyTransport):
    """Also records every list `batch`: its commands, its answer's body bytes and rows."""

    lists: list[ListAnswer]
    #: Every get `batch` that returned deals, in the same form (rows: the deals it returned).
    gets: list[ListAnswer]

    async def post(self, url: str, body: bytes) -> HttpResponse:
        resp = await super().post(url, body)
        if url.rstrip("/").endswith("batch"):
            cmd = orjson.loads(body)["cmd"]
            answer = orjson.loads(resp.body)
            first = next(iter(cmd.values()))
            if first.startswith("crm.deal.list?"):
                rows = sum(len(section) for section in answer["result"]["result"].values())
                entry = ListAnswer(
                    len(cmd), len(resp.body), rows, rows_size(len(resp.body), answer)
                )
                self.lists = [*getattr(self, "lists", []), entry]
            elif first.startswith("crm.deal.get?") and answer["result"]["result"]:
                rows = len(answer["result"]["result"])
                entry = ListAnswer(
                    len(cmd), len(resp.body), rows, rows_size(len(resp.body), answer)
                )
                self.gets = [*getattr(self, "gets", []), entry]
        elif url.rstrip("/").endswith("crm.deal.get"):
            answer = orjson.loads(resp.body)
            if isinstance(answer.get("result"), dict):
                entry = ListAnswer(1, len(resp.body), 1, result_size(len(resp.body), answer))
                self.gets = [*getattr(self, "gets", []), entry]
        return resp


@dataclass(slots=True)
class Run:
    outcomes: list[FetchOutcome]
    lists: list[ListAnswer]
    client: PortalClient
    gets: list[ListAnswer] = field(default_factory=list)
    #: Deals the portal served that the consumer had not yet taken, before each answer it took.
    ahead: list[int] = field(default_factory=list)


async def _run(
    comment_bytes: int,
    *,
    concurrency: int = 1,
    slow: bool = False,
    ids: Sequence[int] = range(1, DEALS + 1),
    strategy: str = "list",
    batch_size: int | None = None,
) -> Run:
    cfg = SimulatorConfig(deals=DEALS, seed=3, comment_bytes=comment_bytes)
    clock = VirtualClock()
    async with clock.autojump(), running_simulator(cfg, clock=clock) as sim:
        sizing = {} if batch_size is None else {"batch_size": batch_size}
        fetch = FetchConfig(
            strategy=strategy,  # type: ignore[arg-type]
            concurrency=concurrency,
            **sizing,
        )
        http = AnswerLog(clock, pool_size=concurrency + 2)
        client = PortalClient(
            WebhookAuth(sim.webhook_url), limits=UNLIMITED, fetch=fetch, clock=clock, http=http
        )
        run = Run([], [], client)
        async with client, aclosing(fetch_batches(ids, client)) as batches:
            taken = 0
            async for got in batches:
                run.ahead.append(sim.stats()["deals_served"] - taken)
                taken += len(got.ids)
                run.outcomes += got.outcomes()
                if slow:
                    # A slow consumer: the engine works ahead as far as its credits let it.
                    await clock.sleep(5.0)
        run.lists = getattr(http, "lists", [])
        run.gets = getattr(http, "gets", [])
    return run


def _bound(width: RowWidth, capacity: int) -> int:
    """List calls a batch may carry after the answers `width` has seen: LIST_ANSWER_BYTES of
    rows, whole calls, one at least, a full batch at most (the engine's rule, from its
    constants)."""
    per_row = width.per_row
    assert per_row is not None
    calls = int(LIST_ANSWER_BYTES // (per_row * LIST_PAGE))
    return max(1, min(capacity // LIST_PAGE, calls))


def _ends(outcomes: list[FetchOutcome]) -> tuple[set[int], dict[int, tuple[str, str]]]:
    fetched = {o.id for o in outcomes if isinstance(o, DealFetched)}
    failed = {o.id: (o.code, o.message) for o in outcomes if isinstance(o, DealFailed)}
    return fetched, failed


@pytest.fixture(scope="module")
def runs() -> dict[int, Run]:
    # One run per width for the module's tests (same seed, same IDs).
    async def both() -> dict[int, Run]:
        return {width: await _run(width) for width in (0, WIDE)}

    return asyncio.run(both())


def test_wide_list_batches_carry_the_bytes_bound_in_whole_calls(runs: dict[int, Run]) -> None:
    run = runs[WIDE]
    lists = run.lists
    full = LIST_BATCH_COMMANDS
    # Before any list answer is measured: the 60 s cap's one-call probe.
    assert lists[0].calls == 1
    width = RowWidth()
    width.observe(lists[0].rows_size, lists[0].rows)
    remaining = -(-DEALS // LIST_PAGE) - 1
    for answer in lists[1:]:
        bound = _bound(width, full * LIST_PAGE)
        assert answer.calls == min(bound, remaining), (answer, bound)
        # Each answer sized by the measured width keeps its rows within the bound; the rest
        # of it is a few hundred bytes per call.
        assert answer.rows_size <= LIST_ANSWER_BYTES
        assert answer.size - answer.rows_size < 500 * answer.calls
        remaining -= answer.calls
        width.observe(answer.rows_size, answer.rows)
    assert remaining == 0  # every ID was asked for by a list call exactly once
    # The bound binds here: a full batch of these rows would be far over it.
    per_row = lists[0].rows_size / lists[0].rows
    assert per_row * full * LIST_PAGE > 1.5 * LIST_ANSWER_BYTES
    assert max(a.calls for a in lists) < full
    assert run.client.stats.list_answer_bytes == sum(a.size for a in lists)
    assert run.client.stats.list_rows == sum(a.rows for a in lists)


def test_usual_deals_keep_full_list_batches(runs: dict[int, Run]) -> None:
    lists = runs[0].lists
    # Today's shape: a one-call probe, then full batches of LIST_BATCH_COMMANDS calls.
    calls = -(-DEALS // LIST_PAGE)
    full = LIST_BATCH_COMMANDS
    expected = (
        [1] + [full] * ((calls - 1) // full) + ([(calls - 1) % full] if (calls - 1) % full else [])
    )
    assert [a.calls for a in lists] == expected
    # Why nothing changes: LIST_ANSWER_BYTES affords more such rows than a full batch carries,
    # and PAYLOAD_BYTES more than PAYLOAD_CREDITS, even at the widest measured answer.
    widest = max(a.rows_size / a.rows for a in lists)
    assert LIST_ANSWER_BYTES / widest >= full * LIST_PAGE
    assert PAYLOAD_BYTES / widest >= PAYLOAD_CREDITS
    assert runs[0].client.list_width.per_row is not None


def test_every_id_ends_once_and_as_with_usual_deals(runs: dict[int, Run]) -> None:
    for run in runs.values():
        ids = [o.id for o in run.outcomes]
        assert sorted(ids) == list(range(1, DEALS + 1))
    fetched, failed = _ends(runs[WIDE].outcomes)
    assert (fetched, failed) == _ends(runs[0].outcomes)
    assert failed  # deleted and hidden deals: their reasons from follow-up gets
    assert len(runs[WIDE].lists) > len(runs[0].lists)
    for run in runs.values():
        # The follow-ups carried the meter deal, the same one each time: not a width.
        assert run.gets
        assert run.client.get_width.per_row is None


async def test_mostly_absent_ids_keep_full_list_batches() -> None:
    # One deal the portal has per 1,000 IDs asked for, the rest past its last deal: each
    # answer carries one row and twenty calls' fixed parts, which must not read as the row's
    # width. Then a stretch of deals the portal has, in the same run.
    present = [1, 1001, 2001]
    sparse = [
        i
        for k, first in enumerate(present)
        for i in (first, *range(10**6 + k * 999, 10**6 + (k + 1) * 999))
    ]
    run = await _run(0, ids=[*sparse, *range(2, 1001)])
    full = LIST_BATCH_COMMANDS
    calls = [a.calls for a in run.lists]
    # The one-call probe, then full batches but the last, whatever the answers held.
    assert calls[0] == 1
    assert all(c == full for c in calls[1:-1]), calls
    assert sum(calls) == -(-(len(sparse) + 999) // LIST_PAGE)
    assert min(a.rows for a in run.lists) <= 2  # the sparse answers were measured too
    per_row = run.client.list_width.per_row
    assert per_row is not None
    assert per_row < 3_000  # the width of the deals themselves (about 2.2 kB)
    assert sorted(o.id for o in run.outcomes) == sorted([*sparse, *range(2, 1001)])


async def test_credits_bound_wide_payloads_ahead_of_a_slow_consumer() -> None:
    run = await _run(WIDE, concurrency=4, slow=True)
    assert sorted(o.id for o in run.outcomes) == list(range(1, DEALS + 1))
    # Credits are per requested ID and the limit follows the widest estimate, which is at
    # least the narrowest answer's width: rows answered and not taken stay within
    # PAYLOAD_BYTES of that width, well under the count bound of usual deals.
    narrowest = min(a.rows_size / a.rows for a in run.lists if a.rows)
    bound = int(PAYLOAD_BYTES // narrowest)
    assert bound < PAYLOAD_CREDITS
    assert max(run.ahead) <= bound
    assert max(a.calls for a in run.lists[1:]) * LIST_PAGE * narrowest <= LIST_ANSWER_BYTES


async def test_credits_bound_wide_payloads_by_bytes_under_the_get_strategy() -> None:
    run = await _run(WIDE, concurrency=4, slow=True, strategy="get")
    assert sorted(o.id for o in run.outcomes) == list(range(1, DEALS + 1))
    assert not run.lists
    # The same bound from get answers' width: deals answered and not taken stay within
    # PAYLOAD_BYTES of the narrowest answer's width (plus the batches in flight when the first
    # answer told it), far under the count bound (about 40 MB of such deals).
    narrowest = min(a.rows_size / a.rows for a in run.gets)
    bound = int(PAYLOAD_BYTES // narrowest)
    assert bound < PAYLOAD_CREDITS / 2
    first_flight = 4 * max(a.calls for a in run.gets)
    assert max(run.ahead[2:]) <= bound
    assert max(run.ahead) <= max(bound, first_flight)
    assert run.client.get_width.per_row is not None
    assert run.client.list_width.per_row is None


async def test_credits_bound_wide_payloads_by_bytes_with_plain_gets() -> None:
    # A portal that forbids batch (fetch.batch_size = 1): one deal per answer, bounded the same.
    ids = range(1, 1201)
    run = await _run(WIDE, concurrency=4, slow=True, strategy="get", batch_size=1, ids=ids)
    assert sorted(o.id for o in run.outcomes) == list(ids)
    assert not run.lists
    # One answer per deal served; the missing and hidden deals' error answers carry none.
    assert len(run.gets) == sum(isinstance(o, DealFetched) for o in run.outcomes)
    # A tenth of these deals carry a short comment (about 2 kB against 23 kB). After a run of
    # short ones the credits' limit rises (up to the 2,000-deal count), but the next wide answer
    # lowers it at once (`RowWidth.per_row` takes the latest answer when it is wider), so the
    # deals ahead stay within PAYLOAD_BYTES of median-width deals (about 184 seen, 371
    # allowed), where the count bound alone let 865 run ahead before plain gets were measured.
    median = statistics.median(a.rows_size for a in run.gets)
    bound = int(PAYLOAD_BYTES // median)
    assert bound < len(ids) / 3
    # The gets in flight when the first answer told the width come on top of it.
    assert max(run.ahead) <= bound + 4
    assert run.client.get_width.per_row is not None


# -- the credits ------------------------------------------------------------------------------


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_credits_limit_shrinks_and_grows_while_credits_are_out() -> None:
    credits = engine_module._Credits(1000)
    assert await credits.take(600) == 600
    assert await credits.take(400) == 400
    assert credits.free == 0
    credits.resize(500)  # shrinks below what is out: nobody gives back more than they took
    assert credits.free == 0
    waiter = asyncio.create_task(credits.take(300))
    await _settle()
    assert not waiter.done()
    credits.give(400)  # 600 still out, over the new limit
    await _settle()
    assert not waiter.done()
    assert credits.free == 0
    credits.give(600)
    await _settle()
    assert waiter.done()
    assert waiter.result() == 300
    assert credits.free == 200
    # Growing lets a waiter in at once.
    big = asyncio.create_task(credits.take(900))
    await _settle()
    assert not big.done()
    credits.resize(1200)
    await _settle()
    assert big.done()
    assert big.result() == 900
    assert credits.free == 0
    credits.give(300)
    credits.give(900)
    assert credits.free == credits.limit == 1200


async def test_credits_a_take_larger_than_the_limit_waits_for_all_and_follows_the_limit() -> None:
    credits = engine_module._Credits(1000)
    await credits.take(100)
    large = asyncio.create_task(credits.take(5000))
    await _settle()
    assert not large.done()
    credits.resize(400)  # while it waits: it now needs 400, the whole limit
    credits.give(100)
    await _settle()
    assert large.done()
    assert large.result() == 400
    assert credits.free == 0
    credits.give(400)
    assert credits.free == 400
    with pytest.raises(ValueError, match="giving back"):
        credits.give(1)
    with pytest.raises(ValueError, match="at least 1"):
        credits.resize(0)


# -- the width --------------------------------------------------------------------------------


def test_row_width_follows_wider_rows_at_once_and_narrower_ones_slowly() -> None:
    width = RowWidth()
    width.observe(5_000, 0)  # no rows: nothing learnt
    width.observe(0, 50)  # no size either (never 0 a row: batches are sized by dividing)
    assert width.per_row is None
    width.observe(2_000 * 1000, 1000)
    assert width.per_row == pytest.approx(2_000)
    width.observe(20_000 * 400, 400)  # wider: the next batch is sized for it at once
    assert width.per_row == pytest.approx(20_000)
    width.observe(5_000, 0)
    assert width.per_row == pytest.approx(20_000)
    width.observe(2_000 * 400, 400)  # narrower: the decaying average still remembers
    narrowed = width.per_row
    assert narrowed is not None
    assert 2_000 < narrowed < 20_000
    for _ in range(30):
        width.observe(2_000 * 400, 400)
    assert width.per_row == pytest.approx(2_000, rel=0.01)


def test_rows_size_leaves_out_what_is_not_a_deal_and_takes_odd_bodies() -> None:
    rows = {"l0": [{"ID": "1", "TITLE": "x" * 100}]}
    rest = {
        "result_error": [],
        "result_total": {"l0": 1},
        "result_next": [],
        "result_time": {"l0": {"start": 1.5, "operating": 0.25}},
    }
    body = {"result": {"result": rows, **rest}, "time": {"start": 1.0, "finish": 2.0}}
    size = len(orjson.dumps(body))
    framing = len(b'{"result":{"result":,,,,},"time":}') + sum(
        len(orjson.dumps(key)) + 1 for key in rest
    )
    assert rows_size(size, body) == len(orjson.dumps(rows)) + framing
    # Bodies of other shapes: nothing to leave out but what is there, never below 0.
    assert rows_size(10, {"result": [1, 2]}) == 10 - len(b"null")
    assert rows_size(3, body) == 0
    # Nested deeper than orjson encodes (it decodes 1,024 levels, encodes 254): the whole.
    deep: object = []
    for _ in range(300):
        deep = [deep]
    assert rows_size(size, {"result": {"result": rows, "result_error": deep}}) == size


def test_result_size_is_the_deal_of_a_plain_answer() -> None:
    deal = {"ID": "1", "TITLE": "x" * 100, "result": "a field of this name is still the deal"}
    body = {"result": deal, "time": {"start": 1.0, "finish": 2.0}}
    size = len(orjson.dumps(body))
    assert result_size(size, body) == len(orjson.dumps(deal)) + len(b'{"result":,"time":}')
    assert result_size(3, body) == 0
    deep: object = []
    for _ in range(300):
        deep = [deep]
    assert result_size(size, {"result": deal, "time": deep}) == size
