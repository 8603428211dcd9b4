"""Truth table of the pure decision core: every answer class against every state of an ID."""

from __future__ import annotations

from dataclasses import replace

import pytest

from pipeline.config import FetchConfig
from pipeline.fetch.classify import Action
from pipeline.fetch.decide import (
    LIMIT_RETRIES_EXHAUSTED,
    NOT_EXECUTED,
    OK,
    RETRIES_EXHAUSTED,
    AnswerClass,
    IdState,
    Learn,
    Next,
    RetryBudget,
    decide,
    decide_call,
    decide_group,
    needs_probe,
)
from pipeline.fetch.decide import GroupView as G

BUDGET = RetryBudget(attempts=3, limit_waits=4)
FRESH = IdState()
LAST = IdState(attempts=2)  # one attempt left
WAITED = IdState(attempts=1, limit_hits=4)  # no limit wait left


def cmd(code: str, desc: str = "", status: int | None = None) -> AnswerClass:
    return AnswerClass("command", code, desc, status, f"{code or '(no code)'}: {desc}")


def top(action: Action, code: str, status: int | None) -> AnswerClass:
    return AnswerClass("top", code, "portal text", status, f"whole: {code}", action)


MISSING = AnswerClass("missing", NOT_EXECUTED, message="command missing from the batch answer")
N, R, Q, F, A = Next.DONE, Next.RETRY, Next.REQUEUE, Next.FAIL, Next.ABORT
NOTHING, RATE, OPER = Learn.NOTHING, Learn.RATE_LIMITED, Learn.OPERATING_LIMITED

ANSWERS = {
    "ok": OK,
    "missing": MISSING,
    "not found (permanent)": cmd("", "Not found"),
    "ACCESS_DENIED per command (permanent)": cmd("ACCESS_DENIED", "Access denied.", 403),
    "ERROR_CORE per command (transient)": cmd("ERROR_CORE"),
    "unknown code per command (transient)": cmd("SOMETHING_NEW"),
    "expired_token per command (transient)": cmd("expired_token"),
    "QUERY_LIMIT_EXCEEDED per command": cmd("QUERY_LIMIT_EXCEEDED"),
    "OPERATION_TIME_LIMIT per command": cmd("OPERATION_TIME_LIMIT"),
    "insufficient_scope per command (fatal)": cmd("insufficient_scope"),
    "503 whole request": top(Action.RATE_LIMIT, "QUERY_LIMIT_EXCEEDED", 503),
    "429 whole request": top(Action.OPERATING_LIMIT, "", 429),
    "reset whole request": top(Action.TRANSIENT, "RESET", None),
}

#: answer -> {state: (next, attempts after, limit hits after, learn, failure code or None)}
TABLE: dict[str, dict[str, tuple[Next, int, int, Learn, str | None]]] = {
    "ok": {"fresh": (N, 0, 0, NOTHING, None), "last": (N, 2, 0, NOTHING, None),
           "waited": (N, 1, 4, NOTHING, None)},
    "missing": {"fresh": (R, 1, 0, NOTHING, None),
                "last": (F, 3, 0, NOTHING, RETRIES_EXHAUSTED),
                "waited": (R, 2, 4, NOTHING, None)},
    "not found (permanent)": {"fresh": (F, 1, 0, NOTHING, ""), "last": (F, 3, 0, NOTHING, ""),
                              "waited": (F, 2, 4, NOTHING, "")},
    "ACCESS_DENIED per command (permanent)": {
        "fresh": (F, 1, 0, NOTHING, "ACCESS_DENIED"), "last": (F, 3, 0, NOTHING, "ACCESS_DENIED"),
        "waited": (F, 2, 4, NOTHING, "ACCESS_DENIED")},
    "ERROR_CORE per command (transient)": {
        "fresh": (R, 1, 0, NOTHING, None), "last": (F, 3, 0, NOTHING, RETRIES_EXHAUSTED),
        "waited": (R, 2, 4, NOTHING, None)},
    "unknown code per command (transient)": {
        "fresh": (R, 1, 0, NOTHING, None), "last": (F, 3, 0, NOTHING, RETRIES_EXHAUSTED),
        "waited": (R, 2, 4, NOTHING, None)},
    "expired_token per command (transient)": {
        "fresh": (R, 1, 0, NOTHING, None), "last": (F, 3, 0, NOTHING, RETRIES_EXHAUSTED),
        "waited": (R, 2, 4, NOTHING, None)},
    "QUERY_LIMIT_EXCEEDED per command": {
        "fresh": (Q, 0, 1, RATE, None), "last": (Q, 2, 1, RATE, None),
        "waited": (F, 1, 5, RATE, LIMIT_RETRIES_EXHAUSTED)},
    "OPERATION_TIME_LIMIT per command": {
        "fresh": (Q, 0, 1, OPER, None), "last": (Q, 2, 1, OPER, None),
        "waited": (F, 1, 5, OPER, LIMIT_RETRIES_EXHAUSTED)},
    "insufficient_scope per command (fatal)": {
        "fresh": (A, 0, 0, NOTHING, None), "last": (A, 2, 0, NOTHING, None),
        "waited": (A, 1, 4, NOTHING, None)},
    "503 whole request": {
        "fresh": (Q, 0, 1, RATE, None), "last": (Q, 2, 1, RATE, None),
        "waited": (F, 1, 5, RATE, LIMIT_RETRIES_EXHAUSTED)},
    "429 whole request": {
        "fresh": (Q, 0, 1, OPER, None), "last": (Q, 2, 1, OPER, None),
        "waited": (F, 1, 5, OPER, LIMIT_RETRIES_EXHAUSTED)},
    "reset whole request": {
        "fresh": (R, 1, 0, NOTHING, None), "last": (F, 3, 0, NOTHING, RETRIES_EXHAUSTED),
        "waited": (R, 2, 4, NOTHING, None)},
}  # fmt: skip
STATES = {"fresh": FRESH, "last": LAST, "waited": WAITED}
CASES = [(a, s) for a in TABLE for s in STATES]

ERROR_CLASS = {
    RETRIES_EXHAUSTED: "transient",
    LIMIT_RETRIES_EXHAUSTED: "limit",
    "": "permanent",
    "ACCESS_DENIED": "permanent",
}


def test_the_table_covers_every_answer_class_and_state() -> None:
    assert set(TABLE) == set(ANSWERS)
    assert all(set(row) == set(STATES) for row in TABLE.values())


@pytest.mark.parametrize(("answer", "state"), CASES)
def test_truth_table(answer: str, state: str) -> None:
    expected_next, attempts, hits, learn, code = TABLE[answer][state]
    decision = decide(STATES[state], ANSWERS[answer], BUDGET)
    assert decision.next is expected_next
    assert decision.state == IdState(attempts, hits)
    assert decision.learn is learn
    if code is None:
        assert decision.failure is None
        return
    failure = decision.failure
    assert failure is not None
    assert failure.code == code
    assert failure.error_class == ERROR_CLASS[code]
    assert failure.retryable is (code != "" and code != "ACCESS_DENIED")
    if code == RETRIES_EXHAUSTED:
        last = ANSWERS[answer].message
        assert failure.message == f"gave up after {attempts} attempts; last error: {last}"
    elif code == LIMIT_RETRIES_EXHAUSTED:
        assert failure.message.startswith("still limited after 5 waits; last answer: ")
    else:  # the portal's own text, and the plain get's own status
        assert failure.message == ANSWERS[answer].description
        assert failure.status == ANSWERS[answer].status


WRONG_ENCODING = top(Action.TRANSIENT, "WRONG_ENCODING", 200)
HTTP_500 = top(Action.TRANSIENT, "INTERNAL_SERVER_ERROR", 500)
HTML_504 = top(Action.TRANSIENT, "NON_JSON", 504)
TIMEOUT = top(Action.TRANSIENT, "TIMEOUT", None)
OAUTH_500 = top(Action.TRANSIENT, "OAUTH_UNAVAILABLE", 500)
RESET = ANSWERS["reset whole request"]
STRUCK = IdState(struck=True)
HEALTHY, SICK = G(1, healthy=True), G(1, healthy=False)
#: The last health probe failed and nothing was answered since (an answer before that probe
#: makes the set look healthy, but the failed probe is the newer fact).
DOWN, DOWN_ONLY = G(1, healthy=True, outage=True), G(1, outage=True)

#: (answer, state of each, group size, view) -> (group's next, strikes after, attempts after
#: each, struck after each)
GROUPS = [
    (RESET, FRESH, 3, G(), Next.RETRY, 0, 1, False),  # one-off fault: each ID on its own
    (OAUTH_500, FRESH, 3, G(), Next.RETRY, 0, 1, False),  # the token server's: never split
    (OAUTH_500, FRESH, 3, HEALTHY, Next.RETRY, 1, 1, False),
    (WRONG_ENCODING, FRESH, 3, G(), Next.SPLIT, 0, 0, False),  # the answer's content: at once
    (WRONG_ENCODING, FRESH, 3, DOWN, Next.SPLIT, 0, 0, False),  # the server answered: no outage
    (HTTP_500, FRESH, 3, G(), Next.REGROUP, 1, 0, True),  # first sight: a strike, no attempt
    (HTML_504, FRESH, 3, G(), Next.REGROUP, 1, 0, True),
    (TIMEOUT, FRESH, 3, G(), Next.REGROUP, 1, 0, True),
    (HTTP_500, STRUCK, 3, G(), Next.REGROUP, 1, 1, True),  # had its free strike: an attempt
    (HTTP_500, FRESH, 3, HEALTHY, Next.SPLIT, 1, 0, False),  # it recurred, portal up: split
    (HTML_504, STRUCK, 3, HEALTHY, Next.SPLIT, 1, 0, True),
    (HTTP_500, STRUCK, 3, SICK, Next.RETRY, 0, 1, True),  # no evidence at all: do not split
    (HTML_504, STRUCK, 3, SICK, Next.RETRY, 0, 1, True),
    (HTTP_500, STRUCK, 3, DOWN, Next.RETRY, 0, 1, True),  # the probe failed: stop splitting
    (HTML_504, STRUCK, 3, DOWN_ONLY, Next.RETRY, 0, 1, True),
    (HTTP_500, FRESH, 3, G(0, outage=True), Next.REGROUP, 1, 0, True),  # the strike stays free
    (WRONG_ENCODING, FRESH, 1, G(), Next.FAIL, 0, 1, False),  # the culprit alone: permanent
    (HTTP_500, STRUCK, 1, HEALTHY, Next.REGROUP, 1, 1, True),  # alone: its own attempts, alone
    (HTTP_500, FRESH, 1, G(), Next.REGROUP, 1, 1, False),  # alone from the start (batch of 1)
    (HTTP_500, STRUCK, 1, DOWN, Next.RETRY, 0, 1, True),  # alone in an outage: rejoins batches
]

#: (answer, group size, view) -> whether the driver must probe the portal's health first
PROBES = [
    (HTTP_500, 3, SICK, True),  # a split is due and nothing says the portal is up or down
    (HTML_504, 2, SICK, True),
    (TIMEOUT, 50, SICK, True),
    (HTTP_500, 3, G(), False),  # first sight: the strike needs no evidence
    (HTTP_500, 3, HEALTHY, False),  # something was answered since: split without one
    (HTTP_500, 3, DOWN, False),  # the last probe failed and nothing answered since
    (HTTP_500, 3, DOWN_ONLY, False),
    (HTTP_500, 1, SICK, False),  # alone: its own attempts, nothing to split
    (WRONG_ENCODING, 3, SICK, False),  # the server answered: never an outage
    (OAUTH_500, 3, SICK, False),  # never split
    (RESET, 3, SICK, False),  # a one-off fault: never split
]


@pytest.mark.parametrize(("answer", "size", "view", "probe"), PROBES)
def test_probe_table(answer: AnswerClass, size: int, view: G, probe: bool) -> None:
    assert needs_probe(size, answer, view) is probe


def test_after_a_probe_the_group_is_decided_without_another() -> None:
    # A probe always settles the view: it answered (healthy) or failed (outage).
    for view in (replace(SICK, healthy=True), replace(SICK, outage=True)):
        assert not needs_probe(3, HTTP_500, view)
    verdict, _, _ = decide_group([STRUCK] * 3, HTTP_500, BUDGET, replace(SICK, healthy=True))
    assert verdict is Next.SPLIT
    verdict, _, _ = decide_group([STRUCK] * 3, HTTP_500, BUDGET, replace(SICK, outage=True))
    assert verdict is Next.RETRY


@pytest.mark.parametrize(
    ("answer", "state", "size", "view", "verdict", "after", "attempts", "struck"), GROUPS
)
def test_group_table(
    answer: AnswerClass,
    state: IdState,
    size: int,
    view: G,
    verdict: Next,
    after: int,
    attempts: int,
    struck: bool,
) -> None:
    got, decisions, strikes_after = decide_group([state] * size, answer, BUDGET, view)
    assert got is verdict
    assert strikes_after == after
    assert [d.state.attempts for d in decisions] == [attempts] * size
    assert [d.state.struck for d in decisions] == [struck] * size
    assert [d.state.limit_hits for d in decisions] == [0] * size
    if verdict is Next.FAIL:
        (failure,) = [d.failure for d in decisions]
        assert failure is not None
        assert (failure.code, failure.retryable, failure.error_class) == (
            "WRONG_ENCODING",
            False,
            "permanent",
        )
        assert failure.message == "portal text"


@pytest.mark.parametrize("attempts", [1, 2])
def test_a_strike_never_ends_a_victim_even_with_one_attempt(attempts: int) -> None:
    budget = RetryBudget(attempts=attempts)
    verdict, decisions, _ = decide_group([FRESH] * 50, HTTP_500, budget, G())
    assert verdict is Next.REGROUP
    assert all(d.next is Next.REGROUP and d.failure is None for d in decisions)
    verdict, decisions, _ = decide_group([d.state for d in decisions], HTTP_500, budget, HEALTHY)
    assert verdict is Next.SPLIT
    assert all(d.state.attempts == 0 for d in decisions)


def test_an_outage_costs_each_id_one_free_request_at_most() -> None:
    budget = RetryBudget(attempts=3)
    state, view, requests = FRESH, G(), 0
    while True:  # bounded: the asserted count below
        requests += 1
        assert requests <= 10
        verdict, [decision, _], strikes = decide_group([state] * 2, HTTP_500, budget, view)
        state = decision.state
        if decision.next is Next.FAIL:
            break
        # A regrouped set keeps its strikes; IDs back on their own come as a fresh batch.
        view = G(strikes) if verdict is Next.REGROUP else G()
    assert requests == budget.attempts + 1
    assert decision.failure is not None
    assert decision.failure.code == RETRIES_EXHAUSTED


def test_a_culprit_alone_ends_with_the_portals_code_once_its_attempts_are_spent() -> None:
    _, [decision], _ = decide_group([LAST], HTTP_500, BUDGET, HEALTHY)
    assert decision.next is Next.FAIL
    assert decision.failure is not None
    assert decision.failure.code == "INTERNAL_SERVER_ERROR"  # not RETRIES_EXHAUSTED
    assert decision.failure.retryable is True
    assert decision.state.attempts == 3


def test_whole_run_calls_have_their_own_floor_and_refuse_on_a_record_text() -> None:
    budget = RetryBudget.from_config(FetchConfig(max_attempts=1))
    assert budget.attempts == 1
    assert budget.for_whole_call().attempts == 3
    state = IdState()
    for expected in (Next.RETRY, Next.RETRY, Next.FAIL):
        decision = decide_call(state, RESET, budget)
        assert decision.next is expected
        state = decision.state
    denied = cmd("", "Access denied.", 400)
    assert decide_call(IdState(), denied, budget).next is Next.ABORT
    limited = decide_call(IdState(limit_hits=100), ANSWERS["503 whole request"], budget)
    assert limited.next is Next.FAIL  # 100 waits is the default bound
    assert limited.state.limit_hits == 101
