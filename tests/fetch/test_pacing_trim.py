"""A batch is trimmed to the operating window when the request is admitted, not when it was
put together: through the engine and the client over a `MockTransport`, on virtual time, with
exact schedules. The trimmed IDs go back first in line exactly once, whatever happens to the
part that was sent."""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import parse_qs

import pytest

from pipeline.clock import VirtualClock
from pipeline.config import FetchConfig, LimitsConfig, WebhookAuth
from pipeline.fetch import PortalClient
from pipeline.fetch.pacing import RESET_MARGIN_S
from pipeline.fetch.wire import HttpRequest, HttpResponse, MockTransport, json_response
from pipeline.outcomes import DealFailed, DealFetched

from .helpers import fetch_all

START = 1_000.0
WINDOW_S = 600.0
LATENCY_S = 2.0
#: What the mock portal charges per deal it finds (a failed command is charged nothing here,
#: so a batch with absent deals costs less than the pacer held for it: an over-estimate).
CHARGE_S = 1.0


class Portal:
    """A portal answering `batch` of `crm.deal.get` after LATENCY_S of virtual time. Its
    operating window is one bucket: every call of the run before the reset falls into its
    first minute, and the bucket leaves at first call + WINDOW_S."""

    def __init__(self, clock: VirtualClock, *, absent: set[int], fail_once: set[int]) -> None:
        self.clock = clock
        self.absent = absent
        #: A request whose first ID is one of these answers HTTP 500 the first time.
        self.fail_once = set(fail_once)
        self.operating = 0.0
        self.peak = 0.0
        self.window_start: float | None = None
        #: (send time, IDs asked for) per batch request.
        self.sent: list[tuple[float, list[int]]] = []

    async def __call__(self, request: HttpRequest) -> HttpResponse:
        body = request.json()
        ids = [int(parse_qs(c.split("?", 1)[1])["ID"][0]) for c in body["cmd"].values()]
        arrived = self.clock.now()
        self.sent.append((arrived, ids))
        if self.window_start is None or arrived >= self.window_start + WINDOW_S:
            self.window_start, self.operating = arrived, 0.0
        reset_at = int(self.window_start + WINDOW_S)
        await self.clock.sleep(LATENCY_S)
        if ids[0] in self.fail_once:
            self.fail_once.discard(ids[0])
            return json_response(500, {"error": "INTERNAL_SERVER_ERROR", "error_description": ""})
        now = self.clock.now()
        result: dict[str, Any] = {}
        errors: dict[str, Any] = {}
        times: dict[str, Any] = {}
        for deal_id in ids:
            key = f"d{deal_id}"
            if deal_id in self.absent:
                errors[key] = {"error": "", "error_description": "Not found"}
                continue
            self.operating += CHARGE_S
            self.peak = max(self.peak, self.operating)
            result[key] = {"ID": str(deal_id)}
            times[key] = {
                "start": now,
                "finish": now,
                "duration": CHARGE_S,
                "processing": CHARGE_S,
                "operating": self.operating,
                "operating_reset_at": reset_at,
            }
        top = {"start": now - LATENCY_S, "finish": now, "duration": LATENCY_S}
        answer = {
            "result": {
                "result": result,
                "result_error": errors,
                "result_total": [],
                "result_next": [],
                "result_time": times,
            },
            "time": top,
        }
        return json_response(200, answer)


def client_of(portal: Portal, clock: VirtualClock) -> PortalClient:
    return PortalClient(
        WebhookAuth("https://portal.example/rest/1/s3cr3tw3bh00k/"),
        limits=LimitsConfig(rate=0, operating_budget_s=20.0, operating_headroom=0.0),
        fetch=FetchConfig(batch_size=10, concurrency=2, strategy="get", max_attempts=3),
        clock=clock,
        http=MockTransport(portal),
        rand=lambda: 0.5,
    )


async def test_the_part_that_fits_goes_when_the_answer_in_flight_lands(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Budget 20 s at 1 s per deal. 1000: the probe (1-10). 1002: it is answered (10 s used)
    # and 11-20 go (10 held); 21-30 are put together at once, with no room at all (10 used +
    # 10 held). 1004: 11-20 are answered, five of them absent and not charged: 15 s used.
    # Five commands fit, so 21-25 go at that moment and 26-30 go back in line. (31-40 were
    # put together from the input a moment before, when 11-20's slot came free; they queue
    # behind 21-25.) With 20 s used or held the window is spent: the rest waits for the
    # oldest minute to leave (1600 + margin), 31-40 probing the new window, 26-30 after it.
    clock = VirtualClock(start=START)
    portal = Portal(clock, absent=set(range(16, 21)), fail_once=set())
    caplog.set_level(logging.INFO, logger="pipeline.fetch.pacing")
    async with clock.autojump(), client_of(portal, clock) as client:
        outcomes = await fetch_all(client, range(1, 41))
    reset = START + WINDOW_S + RESET_MARGIN_S
    assert [t for t, _ in portal.sent] == [START, 1_002, 1_004, reset, reset + LATENCY_S]
    assert [ids for _, ids in portal.sent] == [
        list(range(1, 11)),
        list(range(11, 21)),
        list(range(21, 26)),
        list(range(31, 41)),
        list(range(26, 31)),
    ]
    assert sorted(o.id for o in outcomes) == list(range(1, 41))  # each exactly once
    assert portal.peak == 20.0  # the whole window used, never more
    failed = [o.id for o in outcomes if isinstance(o, DealFailed)]
    assert sorted(failed) == list(range(16, 21))
    assert all(o.attempts == 1 for o in outcomes if isinstance(o, DealFetched))
    waits = [r.getMessage() for r in caplog.records if "nearly spent" in r.getMessage()]
    assert waits == [
        "operating budget of crm.deal.get nearly spent (20.0 of 20.0 s): waiting 595 s for "
        "the oldest minute to leave the window"
    ]
    assert client.stats.operating_limited == 0


async def test_trimmed_ids_go_back_once_when_the_part_sent_fails() -> None:
    # As above, but the trimmed request (21-25) answers HTTP 500 once (1006): nothing was
    # charged, so 31-35 of the batch waiting behind it fit and go at once (36-40 go back in
    # line). 26-30, trimmed off before anything was sent, go once, after the reset; 21-25 go
    # again as the same group (a first 500 is a strike on the set, no attempt spent).
    clock = VirtualClock(start=START)
    portal = Portal(clock, absent=set(range(16, 21)), fail_once={21})
    async with clock.autojump(), client_of(portal, clock) as client:
        outcomes = await fetch_all(client, range(1, 41))
    reset = START + WINDOW_S + RESET_MARGIN_S
    assert portal.sent == [
        (START, list(range(1, 11))),
        (1_002, list(range(11, 21))),
        (1_004, list(range(21, 26))),
        (1_006, list(range(31, 36))),
        (reset, list(range(26, 31))),
        (reset + LATENCY_S, list(range(21, 26))),
        (reset + LATENCY_S, list(range(36, 41))),
    ]
    assert sorted(o.id for o in outcomes) == list(range(1, 41))  # each exactly once
    assert all(o.attempts == 1 for o in outcomes if isinstance(o, DealFetched))
    assert portal.peak == 20.0
    assert client.stats.operating_limited == 0


class ListPortal:
    """A portal answering `crm.deal.fields` and `batch` of `crm.deal.list` calls with an
    `@ID` filter (every asked deal exists), each list call charged LIST_CALL_S."""

    LIST_CALL_S = 1.0

    def __init__(self, clock: VirtualClock) -> None:
        self.clock = clock
        self.operating = 0.0
        self.peak = 0.0
        self.window_start: float | None = None
        #: (send time, the ID chunks of its list calls) per batch request.
        self.sent: list[tuple[float, list[list[int]]]] = []

    async def __call__(self, request: HttpRequest) -> HttpResponse:
        now = self.clock.now()
        top = {"start": now, "finish": now, "duration": 0.0, "processing": 0.0}
        if request.api_method == "crm.deal.fields":
            return json_response(200, {"result": {"ID": {"type": "integer"}}, "time": top})
        chunks = [
            [int(v) for v in parse_qs(c.split("?", 1)[1])["filter[@ID][]"]]
            for c in request.json()["cmd"].values()
        ]
        self.sent.append((now, chunks))
        if self.window_start is None or now >= self.window_start + WINDOW_S:
            self.window_start, self.operating = now, 0.0
        reset_at = int(self.window_start + WINDOW_S)
        await self.clock.sleep(LATENCY_S)
        result: dict[str, Any] = {}
        times: dict[str, Any] = {}
        for n, chunk in enumerate(chunks):
            self.operating += self.LIST_CALL_S
            self.peak = max(self.peak, self.operating)
            result[f"l{n}"] = [{"ID": str(i)} for i in chunk]
            times[f"l{n}"] = {
                "processing": self.LIST_CALL_S,
                "duration": self.LIST_CALL_S,
                "operating": self.operating,
                "operating_reset_at": reset_at,
            }
        body = {"result": result, "result_error": [], "result_time": times}
        return json_response(200, {"result": body, "time": top})


async def test_a_list_batch_is_trimmed_to_whole_calls_of_fifty_ids() -> None:
    # Budget 10 s at 1 s per list call. 1000: one call measures the cost (1-50). 1002: the
    # other 550 IDs are 11 calls; 9 fit: 51-500 go, 501-600 go back in line, whole calls of
    # 50, and wait for the reset as one batch of 2 calls.
    clock = VirtualClock(start=START)
    portal = ListPortal(clock)
    client = PortalClient(
        WebhookAuth("https://portal.example/rest/1/s3cr3tw3bh00k/"),
        limits=LimitsConfig(rate=0, operating_budget_s=10.0, operating_headroom=0.0),
        fetch=FetchConfig(batch_size=50, concurrency=1, strategy="list", max_attempts=3),
        clock=clock,
        http=MockTransport(portal),
        rand=lambda: 0.5,
    )
    async with clock.autojump(), client:
        outcomes = await fetch_all(client, range(1, 601))
    pages = [list(range(i, i + 50)) for i in range(1, 601, 50)]
    assert portal.sent == [
        (START, pages[:1]),
        (1_002, pages[1:10]),
        (START + WINDOW_S + RESET_MARGIN_S, pages[10:]),
    ]
    assert sorted(o.id for o in outcomes) == list(range(1, 601))
    assert all(isinstance(o, DealFetched) and o.attempts == 1 for o in outcomes)
    assert portal.peak == 10.0
    assert client.stats.operating_limited == 0
