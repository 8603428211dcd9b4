"""A resumed run's summary: its rate is this attempt's deals over this attempt's time."""

from __future__ import annotations

from pipeline.summary import RunCounts, render_summary


def test_resumed_summary_rate_counts_only_this_attempt() -> None:
    counts = RunCounts(requested=10_000, unique=10_000, exported=10_000)
    first = render_summary(counts, output="o", seconds=10.0, exported_now=1_000)[0]
    # Not 10,000 deals (9,000 of them from earlier attempts) over this attempt's 10 s.
    assert "(1,000 in this attempt at 100 deals/s)" in first
    assert "exported 10,000 of 10,000" in first


def test_fresh_summary_is_unchanged() -> None:
    counts = RunCounts(requested=100, unique=100, exported=100)
    assert render_summary(counts, output="o", seconds=2.0)[0] == (
        "exported 100 of 100 unique deal IDs in 2.0 s (50 deals/s) into o"
    )
