from __future__ import annotations

import pytest

from pipeline.summary import (
    EXIT_FATAL,
    EXIT_OK,
    EXIT_RETRYABLE_FAILURES,
    RunCounts,
    exit_code_for,
    render_summary,
)


@pytest.mark.parametrize(
    ("counts", "expected"),
    [
        (RunCounts(requested=10, unique=10, exported=10), EXIT_OK),
        (
            RunCounts(requested=10, unique=10, exported=8, failed_permanent={"Not found": 2}),
            EXIT_OK,
        ),
        (
            RunCounts(
                requested=10,
                unique=10,
                exported=7,
                failed_permanent={"Not found": 2},
                failed_retryable={"RETRIES_EXHAUSTED": 1},
            ),
            EXIT_RETRYABLE_FAILURES,
        ),
        (RunCounts(requested=10, unique=10, exported=9), EXIT_FATAL),
        # Nothing readable at all: the webhook user's permissions, not deleted deals.
        (
            RunCounts(
                requested=3,
                unique=3,
                exported=0,
                failed_permanent={"Access denied": 2, "Access denied.": 1},
            ),
            EXIT_FATAL,
        ),
        # The same refusal as a code (crm.item.* style), e.g. with one deal per request.
        (
            RunCounts(requested=3, unique=3, exported=0, failed_permanent={"ACCESS_DENIED": 3}),
            EXIT_FATAL,
        ),
        (
            RunCounts(requested=3, unique=3, exported=0, failed_permanent={"Not found": 3}),
            EXIT_OK,
        ),
    ],
)
def test_exit_codes(counts: RunCounts, expected: int) -> None:
    assert exit_code_for(counts) == expected


def test_summary_names_reasons_sidecar_and_next_step() -> None:
    counts = RunCounts(
        requested=12,
        unique=10,
        exported=7,
        duplicates=2,
        invalid_input=1,
        failed_permanent={"Not found": 2},
        failed_retryable={"RETRIES_EXHAUSTED": 1},
    )
    text = "\n".join(render_summary(counts, output="out", seconds=2.0))
    assert "exported 7 of 10" in text
    assert "2 Not found" in text
    assert "1 RETRIES_EXHAUSTED" in text
    assert "out/_errors/" in text
    assert "deal-export retry out" in text
    assert "duplicate" in text
    assert "BUG" not in text


def test_summary_flags_unaccounted_ids() -> None:
    counts = RunCounts(requested=3, unique=3, exported=2)
    text = "\n".join(render_summary(counts, output="o", seconds=1))
    assert "BUG: 1 IDs are unaccounted" in text
