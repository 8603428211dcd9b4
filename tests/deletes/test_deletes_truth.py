"""`pipeline.deletes`: which rows are candidates, and what each follow-up answer makes of them."""

from __future__ import annotations

from array import array

import pyarrow as pa
import pytest

from pipeline.deletes import as_int64, is_denied, is_not_found, judge, plan_reconcile
from pipeline.outcomes import DealFailed, DealFetched


def failed(deal_id: int, code: str, message: str, *, retryable: bool = False) -> DealFailed:
    error_class = "transient" if retryable else "permanent"
    return DealFailed(deal_id, code, message, 400, 1, retryable, error_class)


@pytest.mark.parametrize(
    ("live", "deleted", "portal", "gone", "restored"),
    [
        ([], [], [], [], []),
        ([1, 2, 3], [], [1, 2, 3], [], []),
        ([1, 2, 3], [], [1, 3], [2], []),
        ([1, 2, 3], [], [], [1, 2, 3], []),
        ([5, 1, 3], [], [1, 9], [3, 5], []),  # unsorted in, sorted out; 9 is new: not ours
        ([1], [2, 4], [1, 2, 7], [], [2]),  # a marked row listed again is restored
        ([1], [2, 4], [], [1], []),
        ([], [2], [2], [], [2]),
    ],
)
def test_plan_truth_table(
    live: list[int], deleted: list[int], portal: list[int], gone: list[int], restored: list[int]
) -> None:
    plan = plan_reconcile(live, deleted, portal)
    assert (plan.gone, plan.restored) == (gone, restored)


def test_plan_accepts_arrow_and_array_q() -> None:
    portal = array("q", [1, 2, 3, 5])
    live = pa.chunked_array([pa.array([1, 4], pa.int32()), pa.array([5, 6], pa.int32())])
    plan = plan_reconcile(live, pa.array([], pa.int64()), portal)
    assert plan.gone == [4, 6]
    assert as_int64(portal).to_pylist() == [1, 2, 3, 5]  # wrapped without a copy


@pytest.mark.parametrize(
    ("code", "message", "not_found", "denied"),
    [
        ("", "Not found", True, False),
        ("", "Not found.", True, False),
        ("NOT_FOUND", "Элемент не найден", True, False),  # crm.item-style code, localised text
        ("", "Access denied.", False, True),  # exists, hidden from the user
        ("", "Access denied", False, True),  # missing, but the user may not read deals at all
        ("ACCESS_DENIED", "Доступ запрещён", False, True),
        ("", "ID is not defined or invalid.", False, False),
        ("RETRIES_EXHAUSTED", "gave up after 5 attempts; last error: Not found", False, False),
        ("INTERNAL_SERVER_ERROR", "Not found", False, False),  # the code wins over the text
        ("", "not found", False, False),  # the fixed English text only, case and all
    ],
)
def test_answer_kinds(code: str, message: str, not_found: bool, denied: bool) -> None:
    failure = failed(1, code, message)
    assert (is_not_found(failure), is_denied(failure)) == (not_found, denied)


def test_judge_sorts_every_answer_into_exactly_one_bucket() -> None:
    fetched = DealFetched(4, {"ID": "4"}, 1)
    outcomes = [
        failed(9, "", "Not found"),
        failed(2, "NOT_FOUND", "x"),
        fetched,
        failed(5, "", "Access denied."),
        failed(6, "ACCESS_DENIED", "x"),
        failed(7, "RETRIES_EXHAUSTED", "gave up", retryable=True),
        failed(8, "", "ID is not defined or invalid."),
    ]
    verdict = judge(outcomes)
    assert verdict.deleted == [2, 9]
    assert verdict.present == [fetched]
    assert [f.id for f in verdict.denied] == [5, 6]
    assert [f.id for f in verdict.unresolved] == [7, 8]
    assert [f.id for f in verdict.failures] == [5, 6, 7, 8]
    assert verdict.retryable == 1


def test_judge_of_nothing_is_empty() -> None:
    verdict = judge([])
    assert (verdict.deleted, verdict.present, verdict.failures, verdict.retryable) == (
        [],
        [],
        [],
        0,
    )
