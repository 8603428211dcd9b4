"""bench_strategy's reading of the exporter's log: when the first window's budget was spent."""

from __future__ import annotations

from bench.bench_strategy import first_window_spent


def test_first_window_spent_is_the_window_minus_the_first_wait() -> None:
    waits = [
        "operating budget of crm.deal.list nearly spent (455.9 of 456.0 s): waiting 335 s for "
        "the oldest minute to leave the window",
        "operating budget of crm.deal.list nearly spent (449.2 of 456.0 s): waiting 59 s for "
        "the oldest minute to leave the window",
    ]
    # 600 s window + the pacer's 1 s margin - the first wait (h4 run of 2026-12-02).
    assert first_window_spent(waits) == 266.0


def test_no_wait_means_no_figure() -> None:
    assert first_window_spent([]) is None
    assert first_window_spent(["fetched with crm.deal.list"]) is None
