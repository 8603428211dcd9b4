"""`deal-export plan` shows the estimate of both strategies and what `auto` would use."""

from __future__ import annotations

import json

from click.testing import CliRunner

from pipeline.cli import cli
from pipeline.plan import PlanInputs, estimate, estimate_list


def _run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["plan", *args], env={"DEAL_EXPORT_CONFIG": ""})
    return result.exit_code, result.output


def test_the_list_estimate_is_the_same_arithmetic_per_50_ids() -> None:
    inputs = PlanInputs(
        ids=1_000_000, rate=2.0, burst=50, batch_size=50, concurrency=4, ms_per_deal=20.0,
        latency_ms=100.0, operating_budget_s=480.0, operating_window_s=600.0,
    )  # fmt: skip
    by_get, by_list = estimate(inputs), estimate_list(inputs, 20.0, 2.0)
    assert by_list.requests == 1_000  # 20,000 list calls, 20 per batch (LIST_CALLS_PER_REQUEST)
    assert by_list.inputs.ms_per_deal == 2.4  # (20 + 50 x 2) / 50
    # 2,400 s of list time against 480 s per 600 s: 2,400 s after the first window is spent.
    assert by_list.binding.name == "operating"
    assert round(by_list.binding.seconds) == 2400
    assert by_get.seconds > 6 * by_list.seconds


def test_plan_shows_both_strategies_and_the_pick() -> None:
    code, out = _run("1M", "--headroom", "0", "--ms-per-deal", "20")
    assert code == 0, out
    assert out.splitlines()[0].endswith("20,000 batch requests of up to 50 deals")
    assert "  get " in out
    assert "  list " in out
    assert "2.40 ms per deal, 1,000 requests" in out
    assert "auto would use list" in out
    code, out = _run("1M", "--strategy", "list", "--list-ms", "20", "--list-row-ms", "2")
    assert out.splitlines()[0].endswith("1,000 batch requests of up to 1000 deals")
    code, out = _run("1M", "--ms-per-deal", "1", "--list-ms", "500", "--json")
    assert code == 0, out
    plan = json.loads(out)
    assert plan["strategy"]["auto_picks"] == "get"
    assert plan["strategy"]["list"]["requests"] == 1_000
    assert plan["strategy"]["get"]["requests"] == 20_000


def test_bad_list_costs_are_a_usage_error() -> None:
    code, out = _run("1M", "--list-ms", "-1")
    assert code != 0
    assert "--list-ms" in out


def test_plan_assumes_as_many_list_calls_per_request_as_the_engine_sends() -> None:
    from pipeline.fetch.listing import LIST_BATCH_COMMANDS
    from pipeline.plan import LIST_CALLS_PER_REQUEST

    assert LIST_CALLS_PER_REQUEST == LIST_BATCH_COMMANDS
