"""Every row of the classification truth table, sent through the client (and the engine) over a
`MockTransport` on virtual time: what the caller finally sees for each answer class.

No socket: the transport answers from a function, so the whole table runs in well under a second
while still going through signing, pacing, decoding, classification, retries and the engine's
per-ID bookkeeping. Transport-level faults (redirects, TLS, truncated bodies) stay in
test_transport.py against a real server.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
import pytest

from pipeline.clock import VirtualClock
from pipeline.config import FetchConfig, LimitsConfig, OAuthAuth, WebhookAuth
from pipeline.errors import FatalPortalError
from pipeline.fetch import PortalClient
from pipeline.fetch.classify import FATAL_CODES, RECORD_CODES, Action, fatal_hint
from pipeline.fetch.pacing import MIN_OPERATING_PAUSE_S
from pipeline.fetch.wire import HttpRequest, HttpResponse, MockTransport, json_response
from pipeline.outcomes import DealFailed, DealFetched

from .helpers import fetch_all
from .test_classify import TABLE

SECRET = "t0ps3cr3tw3bh00k"
WEBHOOK = WebhookAuth(f"https://portal.example/rest/1/{SECRET}/")
OAUTH = OAuthAuth(
    endpoint="https://portal.example/rest/",
    access_token="acc-old-0123456789",
    refresh_token="ref-old-0123456789",
    client_id="app.1",
    client_secret="client-secret-0123",
    token_url="https://oauth.example/oauth/token/",
)
NO_LIMITS = LimitsConfig(rate=0, operating_budget_s=None)
TIME = {"start": 1.0, "finish": 1.1, "duration": 0.1, "processing": 0.1}
FIELDS = {"ID": {"type": "integer"}}


def deal(deal_id: int) -> dict[str, Any]:
    return {"ID": str(deal_id), "TITLE": f"deal {deal_id}"}


def error_body(code: str, desc: str) -> dict[str, Any]:
    return {"error": code, "error_description": desc}


def refreshed(request: HttpRequest) -> HttpResponse:
    return json_response(
        200, {"access_token": "acc-new-0123456789", "refresh_token": "ref-new-0123456789"}
    )


def make_client(
    handler: Callable[[HttpRequest], HttpResponse],
    clock: VirtualClock,
    *,
    oauth: bool = False,
    fetch: FetchConfig | None = None,
) -> tuple[PortalClient, MockTransport]:
    http = MockTransport(handler)
    client = PortalClient(
        OAUTH if oauth else WEBHOOK,
        limits=NO_LIMITS,
        fetch=fetch or FetchConfig(max_attempts=3),
        clock=clock,
        http=http,
        rand=lambda: 0.5,
    )
    return client, http


TOP_ROWS = [row for row in TABLE if row[3] == "top"]
COMMAND_ROWS = [row for row in TABLE if row[3] == "command" and row[0] is None]
PLAIN_GET_ROWS = [row for row in TABLE if row[3] == "command" and row[0] is not None]


@pytest.mark.parametrize(("status", "code", "desc", "context", "action"), TOP_ROWS)
async def test_every_top_level_answer_through_call(
    status: int, code: str, desc: str, context: str, action: Action
) -> None:
    """The error once, then a success: a whole-run call (crm.deal.fields) retries, waits,
    refreshes or stops exactly as the row's action says."""
    answers = 0

    def handler(request: HttpRequest) -> HttpResponse:
        nonlocal answers
        if request.method == "GET":
            return refreshed(request)
        answers += 1
        if answers == 1:
            return json_response(status, error_body(code, f"{desc} /rest/1/{SECRET}/"))
        return json_response(200, {"result": FIELDS, "time": TIME})

    clock = VirtualClock()
    client, http = make_client(handler, clock, oauth=action is Action.AUTH_REFRESH)
    async with clock.autojump(), client:
        if action is Action.FATAL:
            with pytest.raises(FatalPortalError) as info:
                await client.call("crm.deal.fields")
            assert info.value.http_status == status
            assert (code or str(status)) in str(info.value)
            assert SECRET not in str(info.value)
            assert len(http.requests) == 1
            return
        assert await client.call("crm.deal.fields") == FIELDS
    stats = client.stats
    assert answers == 2
    if action is Action.TRANSIENT:
        assert stats.retries == 1
        assert clock.monotonic() == pytest.approx(0.5)  # backoff: rand 0.5 x base 1 s
    elif action is Action.RATE_LIMIT:
        assert (stats.rate_limited, stats.retries) == (1, 0)
    elif action is Action.OPERATING_LIMIT:
        assert (stats.operating_limited, stats.retries) == (1, 0)
        assert clock.monotonic() == MIN_OPERATING_PAUSE_S  # no reset known: 10 s pause
    else:
        assert action is Action.AUTH_REFRESH
        assert stats.token_refreshes == 1
        assert [r.method for r in http.requests] == ["POST", "GET", "POST"]
        assert http.requests[-1].json()["auth"] == "acc-new-0123456789"


@pytest.mark.parametrize(("status", "code", "desc", "context", "action"), COMMAND_ROWS)
async def test_every_per_command_answer_through_the_engine(
    status: None, code: str, desc: str, context: str, action: Action
) -> None:
    """Deal 1's command answers the row's error once (deals 2 and 3 succeed): its outcome, its
    attempts, and whether the run stops."""
    refusals = 0

    def handler(request: HttpRequest) -> HttpResponse:
        nonlocal refusals
        cmd = request.json()["cmd"]
        result: dict[str, Any] = {}
        errors: dict[str, Any] = {}
        for key in cmd:
            deal_id = int(key[1:])
            if deal_id == 1 and refusals == 0:
                errors[key] = error_body(code, desc)
            else:
                result[key] = deal(deal_id)
        refusals += 1 if "d1" in errors else 0
        times = dict.fromkeys(result, TIME)
        body = {"result": result, "result_error": errors, "result_time": times}
        return json_response(200, {"result": body, "time": TIME})

    clock = VirtualClock()
    client, http = make_client(handler, clock)
    async with clock.autojump(), client:
        if action is Action.FATAL:
            with pytest.raises(FatalPortalError) as info:
                await fetch_all(client, [1, 2, 3])
            assert info.value.code == code
            return
        outcomes = {o.id: o for o in await fetch_all(client, [1, 2, 3])}
    assert all(isinstance(outcomes[i], DealFetched) for i in (2, 3))
    first = outcomes[1]
    if action is Action.PERMANENT:
        assert isinstance(first, DealFailed)
        assert (first.code, first.retryable, first.error_class) == (code, False, "permanent")
        assert first.attempts == 1
        assert len(http.requests) == 1
        return
    assert isinstance(first, DealFetched)
    assert len(http.requests) == 2
    # A fault spends an attempt; a limit answer does not (the pacer waits instead).
    assert first.attempts == (2 if action is Action.TRANSIENT else 1)
    if action is Action.OPERATING_LIMIT:
        assert client.stats.operating_limited_commands == 1
        assert clock.monotonic() == MIN_OPERATING_PAUSE_S
    if action is Action.RATE_LIMIT:
        assert client.pacer.rate.episodes == 1


@pytest.mark.parametrize(("status", "code", "desc", "context", "action"), PLAIN_GET_ROWS)
async def test_every_plain_get_answer_through_the_engine(
    status: int, code: str, desc: str, context: str, action: Action
) -> None:
    """batch_size = 1: plain crm.deal.get answers the row's error with its own status."""

    def handler(request: HttpRequest) -> HttpResponse:
        assert request.api_method == "crm.deal.get"
        return json_response(status, error_body(code, desc))

    clock = VirtualClock()
    client, _ = make_client(handler, clock, fetch=FetchConfig(batch_size=1, max_attempts=3))
    async with clock.autojump(), client:
        [outcome] = await fetch_all(client, [7])
    assert action is Action.PERMANENT
    assert isinstance(outcome, DealFailed)
    assert (outcome.code, outcome.http_status, outcome.error_class) == (code, status, "permanent")


@pytest.mark.parametrize("code", sorted(set(FATAL_CODES) - RECORD_CODES))
async def test_every_fatal_code_inside_a_batch_stops_the_fetch(code: str) -> None:
    """test_transport.py checks this for one code over a socket; here every fatal code."""

    def handler(request: HttpRequest) -> HttpResponse:
        cmd = orjson.loads(request.body or b"{}")["cmd"]
        errors = {key: error_body(code, f"needs crm /rest/1/{SECRET}/") for key in cmd}
        body = {"result": [], "result_error": errors, "result_time": []}
        return json_response(200, {"result": body, "time": TIME})

    clock = VirtualClock()
    client, http = make_client(handler, clock)
    async with clock.autojump(), client:
        with pytest.raises(FatalPortalError) as info:
            await fetch_all(client, range(1, 500))
    assert info.value.code == code
    assert fatal_hint(code, "needs crm") in str(info.value)
    assert SECRET not in str(info.value)
    assert len(http.requests) <= client.fetch.concurrency  # stops at the first answer
