"""Truth table of `classify`: every documented row (docs `_includes/system-errors.md`,
`crm-deal-get.md`) and the fallbacks."""

from __future__ import annotations

import pytest

from pipeline.fetch.classify import (
    ALL_DENIED_HINT,
    FATAL_CODES,
    RECORD_CODES,
    Action,
    classify,
    fatal_hint,
    split_trigger,
)

P, T, R, OP, A, F = (
    Action.PERMANENT,
    Action.TRANSIENT,
    Action.RATE_LIMIT,
    Action.OPERATING_LIMIT,
    Action.AUTH_REFRESH,
    Action.FATAL,
)

TABLE: list[tuple[int | None, str, str, str, Action]] = [
    # per-record crm.deal.get errors: empty code, fixed English text, with and without period
    (None, "", "Not found", "command", P),
    (None, "", "Not found.", "command", P),
    (None, "", "Access denied", "command", P),
    (None, "", "Access denied.", "command", P),
    (None, "", "ID is not defined or invalid.", "command", P),
    (None, "", "ID is not defined or invalid", "command", P),
    (400, "", "Not found", "command", P),
    # ...but answering a whole batch or list call they refuse the run (no per-ID meaning)
    (400, "", "Access denied.", "top", F),
    (400, "", "Not found", "top", F),
    # empty code, unknown text: about the record inside a batch, about the request at top level
    (None, "", "Элемент не найден", "command", P),
    (400, "", "Something else", "top", F),
    (500, "", "", "top", T),
    (503, "", "", "top", T),
    # a 429 without a known code: the current docs use 429 for one blocked method (issue 10)
    (429, "", "", "top", OP),
    (429, "SOMETHING_NEW", "", "top", OP),
    # limits: code first, whatever the status
    (503, "QUERY_LIMIT_EXCEEDED", "Too many requests", "top", R),
    (429, "QUERY_LIMIT_EXCEEDED", "Too many requests", "top", R),
    (None, "QUERY_LIMIT_EXCEEDED", "", "command", R),
    (429, "OPERATION_TIME_LIMIT", "Method is blocked due to operation time limit", "top", OP),
    (None, "OPERATION_TIME_LIMIT", "", "command", OP),
    (200, "OPERATION_TIME_LIMIT", "", "top", OP),
    # auth
    (401, "expired_token", "The access token provided has expired", "top", A),
    (401, "NO_AUTH_FOUND", "Wrong authorization data", "top", F),
    (401, "INVALID_CREDENTIALS", "", "top", F),
    (403, "INVALID_CREDENTIALS", "", "top", F),
    (401, "invalid_token", "", "top", F),
    (401, "insufficient_scope", "", "top", F),
    (403, "insufficient_scope", "", "top", F),
    (None, "insufficient_scope", "", "command", F),
    (403, "ACCESS_DENIED", "REST API is available only on commercial plans", "top", F),
    (403, "user_access_error", "", "top", F),
    (403, "WRONG_AUTH_TYPE", "", "top", F),
    (401, "PAYMENT_REQUIRED", "", "top", F),
    (500, "PORTAL_DELETED", "", "top", F),
    (403, "PORTAL_DELETED", "", "top", F),
    (410, "PORTAL_DELETED", "", "top", F),
    (400, "INVALID_REQUEST", "Https required", "top", F),
    (503, "OVERLOAD_LIMIT", "REST API is blocked due to overload", "top", F),
    (404, "ERROR_METHOD_NOT_FOUND", "Method not found!", "top", F),
    (None, "ERROR_METHOD_NOT_FOUND", "", "command", F),
    (405, "ERROR_BATCH_METHOD_NOT_ALLOWED", "", "top", F),
    (None, "ERROR_BATCH_METHOD_NOT_ALLOWED", "", "command", F),
    (None, "ERROR_BATCH_LENGTH_EXCEEDED", "Max batch length exceeded", "command", F),
    (400, "invalid_grant", "", "top", F),
    # transient server faults
    (500, "INTERNAL_SERVER_ERROR", "Internal server error", "top", T),
    (500, "ERROR_UNEXPECTED_ANSWER", "", "top", T),
    (500, "ERROR_CORE", "SQL query error!", "top", T),
    (None, "ERROR_CORE", "", "command", T),
    (None, "INTERNAL_SERVER_ERROR", "", "command", T),
    # unknown codes: status decides; inside a batch (no status) retry, bounded by max_attempts
    (502, "SOMETHING_NEW", "", "top", T),
    (401, "SOMETHING_NEW", "", "top", F),
    (403, "SOMETHING_NEW", "", "top", F),
    (404, "SOMETHING_NEW", "", "top", F),
    (None, "SOMETHING_NEW", "", "command", T),
    (None, "NOT_FOUND", "", "command", P),
    # per-record codes name their record inside a batch or a plain get (issue 10) ...
    (None, "ACCESS_DENIED", "Access denied.", "command", P),
    (403, "ACCESS_DENIED", "Access denied.", "command", P),
    (400, "NOT_FOUND", "Not found", "command", P),
    # ... and refuse the run when they answer a whole request
    (403, "ACCESS_DENIED", "Access denied!", "top", F),
    (400, "NOT_FOUND", "Not found", "top", F),
    # the answer to a whole request could not be encoded: worth another (smaller) attempt
    (200, "WRONG_ENCODING", "Wrong request encoding", "top", T),
]


@pytest.mark.parametrize(("status", "code", "desc", "context", "expected"), TABLE)
def test_truth_table(status: int | None, code: str, desc: str, context: str, expected: Action):
    assert classify(status, code, desc, context) is expected  # type: ignore[arg-type]


@pytest.mark.parametrize("code", sorted(FATAL_CODES))
def test_every_fatal_code_is_fatal_in_both_contexts(code: str) -> None:
    assert classify(400, code, "", "top") is Action.FATAL
    # Issue 10: a per-record code (ACCESS_DENIED) answering one command is that ID's outcome.
    expected = Action.PERMANENT if code in RECORD_CODES else Action.FATAL
    assert classify(None, code, "", "command") is expected


SPLITS: list[tuple[str, int | None, str | None]] = [
    ("WRONG_ENCODING", 200, "now"),
    ("WRONG_ENCODING", None, "now"),
    ("INTERNAL_SERVER_ERROR", 500, "repeat"),
    ("ERROR_UNEXPECTED_ANSWER", 500, "repeat"),
    ("ERROR_CORE", 500, "repeat"),
    ("NON_JSON", 500, "repeat"),
    ("NON_JSON", 504, "repeat"),
    ("TIMEOUT", None, "repeat"),
    # one-off transients never split
    ("NON_JSON", 502, None),
    ("NON_JSON", 503, None),
    ("RESET", None, None),
    ("TRUNCATED", None, None),
    ("BAD_JSON", 200, None),
    ("NETWORK", None, None),
    ("NO_TIME", None, None),
]


@pytest.mark.parametrize(("code", "status", "expected"), SPLITS)
def test_split_trigger_table(code: str, status: int | None, expected: str | None) -> None:
    assert split_trigger(code, status) == expected


def test_access_denied_hint_names_the_likely_cause() -> None:
    plan = fatal_hint("ACCESS_DENIED", "REST API is available only on commercial plans")
    assert "plan" in plan
    assert "permission" not in plan
    rights = fatal_hint("ACCESS_DENIED", "Access denied!")
    assert "permission" in rights
    assert "plan" not in rights
    context = fatal_hint("ACCESS_DENIED", "Current user can't be authorized in this context")
    assert "authorised" in context
    assert fatal_hint("ACCESS_DENIED") == FATAL_CODES["ACCESS_DENIED"]  # no text: both causes
    assert "plan" not in ALL_DENIED_HINT
    assert "permission" in ALL_DENIED_HINT
    # crm.deal.list's empty-code "Access denied." for a whole call: the user's rights
    assert fatal_hint("", "Access denied.") == fatal_hint("ACCESS_DENIED", "Access denied!")


def test_code_beats_status() -> None:
    # A 200 or 500 carrying a limit or auth code is the code's case, not the status's.
    assert classify(500, "QUERY_LIMIT_EXCEEDED") is Action.RATE_LIMIT
    assert classify(500, "NO_AUTH_FOUND") is Action.FATAL
    assert classify(503, "expired_token") is Action.AUTH_REFRESH


def test_description_only_matters_with_empty_code() -> None:
    assert classify(None, "ERROR_CORE", "Not found", "command") is Action.TRANSIENT
    assert classify(None, "", "not found", "command") is Action.PERMANENT  # unknown text, command


def test_error_classes() -> None:
    assert P.error_class == "permanent"
    assert R.error_class == "limit"
    assert OP.error_class == "limit"
    assert F.error_class == "fatal"
    assert T.error_class == "transient"
    assert A.error_class == "transient"
