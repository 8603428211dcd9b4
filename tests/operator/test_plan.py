"""`deal-export plan`: the arithmetic as a table, and the command's output and errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from click.testing import CliRunner

from pipeline.cli import cli
from pipeline.config import FetchConfig, LimitsConfig
from pipeline.plan import PlanInputs, estimate


def inputs(**changes: object) -> PlanInputs:
    base: dict[str, object] = {
        "ids": 1_000_000,
        "rate": 2.0,
        "burst": 50,
        "batch_size": 50,
        "concurrency": 4,
        "ms_per_deal": 20.0,
        "latency_ms": 100.0,
        "operating_budget_s": 480.0,
        "operating_window_s": 600.0,
    }
    base.update(changes)
    return PlanInputs(**base)  # type: ignore[arg-type]


# Each row: changes to the base inputs -> (binding limit, rate ceiling, operating ceiling,
# concurrency ceiling, estimated seconds). Per request = 0.1 s + 50 x 20 ms = 1.1 s.
TABLE = [
    # The documented standard-plan case: 100 deals/s by rate, 0.8 s/s / 20 ms = 40 by operating.
    ({}, "operating", 100.0, 40.0, 4 * 50 / 1.1, (20_000 - 480) * 600 / 480 + 1.1),
    # Cheap deals: the operating ceiling rises above the rate limit, which then binds.
    ({"ms_per_deal": 5.0}, "rate", 100.0, 160.0, 4 * 50 / 0.35, (20_000 - 50) / 2 + 0.35),
    # No operating limit (on-premise) and one request in flight: concurrency binds.
    (
        {"operating_budget_s": None, "concurrency": 1},
        "concurrency",
        100.0,
        math.inf,
        50 / 1.1,
        1_000_000 / (50 / 1.1) + 1.1,
    ),
    # Enterprise bucket with no operating limit, plenty in flight: rate binds at 250 deals/s.
    (
        {"rate": 5.0, "burst": 250, "operating_budget_s": None, "concurrency": 16},
        "rate",
        250.0,
        math.inf,
        16 * 50 / 1.1,
        (20_000 - 250) / 5 + 1.1,
    ),
    # Within the burst and one operating window: nothing waits; the slowest ceiling is named.
    ({"ids": 2_000}, "concurrency", 100.0, 40.0, 4 * 50 / 1.1, 2_000 / (4 * 50 / 1.1) + 1.1),
    # Small batches spend the request budget faster.
    ({"batch_size": 10, "ms_per_deal": 1.0}, "rate", 20.0, 800.0, 4 * 10 / 0.11, None),
]


@pytest.mark.parametrize(("changes", "binding", "rate", "operating", "conc", "seconds"), TABLE)
def test_plan_table(
    changes: dict[str, object],
    binding: str,
    rate: float,
    operating: float,
    conc: float,
    seconds: float | None,
) -> None:
    result = estimate(inputs(**changes))
    by_name = {c.name: c for c in result.ceilings}
    assert result.binding.name == binding
    assert by_name["rate"].deals_per_s == pytest.approx(rate)
    assert by_name["operating"].deals_per_s == pytest.approx(operating)
    assert by_name["concurrency"].deals_per_s == pytest.approx(conc)
    if seconds is not None:
        assert result.seconds == pytest.approx(seconds)
    assert result.seconds >= max(c.seconds for c in result.ceilings)


def test_requests_and_zero_ids() -> None:
    assert estimate(inputs(ids=101)).requests == 3
    empty = estimate(inputs(ids=0))
    assert empty.requests == 0
    assert empty.seconds == 0


def test_warnings() -> None:
    slow = estimate(inputs(ms_per_deal=2000.0, operating_budget_s=None))
    assert any("cuts requests at 60 s" in w for w in slow.warnings)
    assert any("operating-time budget binds" in w for w in estimate(inputs()).warnings)


def test_from_config_applies_headroom() -> None:
    limits = LimitsConfig(headroom=0.1, operating_headroom=0.05)
    got = PlanInputs.from_config(10, limits, FetchConfig(concurrency=3), ms_per_deal=25)
    assert got.rate == pytest.approx(1.8)
    assert got.burst == 45
    assert got.operating_budget_s == pytest.approx(456.0)
    assert got.concurrency == 3
    assert got.ms_per_deal == 25


# ----------------------------------------------------------------------------------- command


def run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["plan", *args], env=env or {})
    return result.exit_code, result.output


def test_plan_command_text() -> None:
    code, out = run("1M", "--headroom", "0", "--ms-per-deal", "20")
    assert code == 0, out
    assert out.splitlines()[0] == (
        "1,000,000 deals, standard plan: 20,000 batch requests of up to 50 deals"
    )
    assert "operating         38.0/s" in out  # 480 s less 5% operating headroom / 20 ms
    assert "<- binds" in out
    assert "the operating-time budget binds." in out


def test_plan_command_json_with_overrides() -> None:
    code, out = run(
        "250k", "--plan", "enterprise", "--operating-budget", "off", "--concurrency", "64",
        "--headroom", "0", "--json",
    )  # fmt: skip
    assert code == 0, out
    data = json.loads(out)
    assert data["ids"] == 250_000
    assert data["plan"] == "enterprise"
    assert data["binding"] == "rate"
    assert data["ceilings"]["rate"]["deals_per_s"] == 250.0
    assert data["ceilings"]["operating"]["deals_per_s"] is None


def test_plan_command_reads_config_and_environment(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[limits]\nplan = 'enterprise'\nheadroom = 0\n[fetch]\nconcurrency = 2\n")
    code, out = run(
        "1000", "--config", str(path), "--json", env={"DEAL_EXPORT_FETCH_BATCH_SIZE": "25"}
    )
    assert code == 0, out
    data = json.loads(out)
    assert data["assumptions"]["rate"] == 5.0
    assert data["assumptions"]["concurrency"] == 2
    assert data["assumptions"]["batch_size"] == 25


def test_plan_command_counts_an_id_file(tmp_path: Path) -> None:
    ids = tmp_path / "ids.txt"
    ids.write_text("1\n2\n2\nbad\n3\n")
    code, out = run("--ids", str(ids), "--json")
    assert code == 0, out
    assert json.loads(out)["ids"] == 3


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "give either N or --ids"),
        (["10", "--ids", "x"], "give either N or --ids"),
        (["ten"], "N must be a whole number"),
        # Issue 14 B11: errors name the option the user typed, not the config key.
        (["10", "--rate", "-1"], "--rate must be >= 0"),
        (["10", "--batch-size", "60"], "--batch-size must be <= 50"),
        (["10", "--operating-budget", "soon"], "--operating-budget must be a number"),
        (["--ids", "/nonexistent/ids.txt"], "ID file not found"),
    ],
)
def test_plan_command_usage_errors_exit_2(args: list[str], message: str) -> None:
    code, out = run(*args)
    assert code == 2
    assert message in out
    assert "Traceback" not in out


def test_plan_command_rejects_a_bad_webhook_without_showing_it() -> None:
    secret = "zzsecretzz"
    code, out = run("10", env={"BITRIX24_WEBHOOK_URL": f"http://portal.example/rest/1/{secret}/"})
    assert code == 2
    assert secret not in out
