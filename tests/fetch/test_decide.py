"""Truth table of the pure decision core: every answer class against every state of an ID."""

from __future__ import annotations

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
)

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
RESET = ANSWERS["reset whole request"]

#: (answer, group size, strikes before) -> (group's next, strikes after, attempts after each)
GROUPS = [
    (RESET, 3, 0, Next.RETRY, 0, 1),  # one-off fault: each ID on its own
    (WRONG_ENCODING, 3, 0, Next.SPLIT, 0, 0),  # the answer's content: split at once
    (HTTP_500, 3, 0, Next.REGROUP, 1, 1),  # may recur: the same set once more
    (HTTP_500, 3, 1, Next.SPLIT, 1, 0),  # it did: split, the halves keep the evidence
    (WRONG_ENCODING, 1, 0, Next.FAIL, 0, 1),  # the culprit alone: permanent
    (HTTP_500, 1, 1, Next.REGROUP, 2, 1),  # alone and failing: its own attempts, alone
]


@pytest.mark.parametrize(("answer", "size", "strikes", "verdict", "after", "attempts"), GROUPS)
def test_group_table(
    answer: AnswerClass, size: int, strikes: int, verdict: Next, after: int, attempts: int
) -> None:
    got, decisions, strikes_after = decide_group([FRESH] * size, answer, BUDGET, strikes)
    assert got is verdict
    assert strikes_after == after
    assert [d.state.attempts for d in decisions] == [attempts] * size
    if verdict is Next.FAIL:
        (failure,) = [d.failure for d in decisions]
        assert failure is not None
        assert (failure.code, failure.retryable, failure.error_class) == (
            "WRONG_ENCODING",
            False,
            "permanent",
        )
        assert failure.message == "portal text"


def test_a_culprit_alone_ends_with_the_portals_code_once_its_attempts_are_spent() -> None:
    _, [decision], _ = decide_group([LAST], HTTP_500, BUDGET, 2)
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
