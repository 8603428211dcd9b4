"""Issue 14, second half: options named and behaving the same across commands (B7, B11)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner

from pipeline.cli import cli
from pipeline.cli.run import FLAGS
from pipeline.config_load import load_config, parse_timestamp
from pipeline.errors import UsageError

WEBHOOK = "https://portal.example.com/rest/1/s3cretvalue42/"


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


# ------------------------------------------------------------------------------------ B7


def test_b7_a_bare_date_is_midnight_utc() -> None:
    assert parse_timestamp("2025-06-01", "--modified-since") == datetime(2025, 6, 1, tzinfo=UTC)
    loaded = load_config(env={}, overrides={"ids.modified_since": "2025-06-01"}, flags=FLAGS)
    assert loaded.ids.modified_since == datetime(2025, 6, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    "naive", ["2025-06-01T10:00", "2025-06-01 10:00:00", "2025-06-01T10:00:00.250", "20250601T1000"]
)
def test_b7_the_suggestion_for_a_time_without_offset_is_itself_accepted(naive: str) -> None:
    with pytest.raises(UsageError) as caught:
        parse_timestamp(naive, "--modified-since")
    message = str(caught.value)
    suggestion = message.split("e.g. ", 1)[1].split(", got", 1)[0]
    assert suggestion.endswith("+00:00")
    assert "+00:00+00:00" not in suggestion
    assert parse_timestamp(suggestion, "--modified-since").utcoffset() is not None


# ----------------------------------------------------------------------------------- B11


def test_b11_errors_name_the_option_typed_or_the_file_key(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"^--headroom must be < 1, got 2\.0$"):
        load_config(env={}, overrides={"limits.headroom": 2.0}, flags=FLAGS)
    config = tmp_path / "c.toml"
    config.write_text("[limits]\nheadroom = 2\n")
    with pytest.raises(UsageError, match=r"c\.toml: \[limits\]\.headroom must be < 1"):
        load_config(config_path=str(config), env={}, flags=FLAGS)
    with pytest.raises(UsageError, match="DEAL_EXPORT_LIMITS_HEADROOM"):
        load_config(env={"DEAL_EXPORT_LIMITS_HEADROOM": "2"}, flags=FLAGS)


def test_b11_every_flag_names_a_real_setting() -> None:
    loaded = load_config(env={}, overrides={key: None for key in FLAGS}, flags=FLAGS)
    assert loaded.names == {}


def test_b11_run_and_plan_name_the_id_column_alike(runner: CliRunner, tmp_path: Path) -> None:
    ids = tmp_path / "ids.csv"
    ids.write_text("DEAL\n1\n2\n2\n3\n")
    for spelling in ("--ids-column", "--id-column"):  # the old plan spelling stays, hidden
        done = runner.invoke(cli, ["plan", "--ids", str(ids), spelling, "DEAL"])
        assert done.exit_code == 0, done.output
        assert done.output.startswith("3 deals")
    for command in ("run", "plan"):
        shown = runner.invoke(cli, [command, "--help"]).output
        assert "--ids-column" in shown
        assert "--id-column" not in shown


def test_b11_plan_takes_ranges(runner: CliRunner) -> None:
    done = runner.invoke(cli, ["plan", "--ids", "1-100,201-250", "--ids-format", "range"])
    assert done.exit_code == 0, done.output
    assert done.output.startswith("150 deals")


def test_b11_plan_errors_in_the_common_style(runner: CliRunner) -> None:
    done = runner.invoke(cli, ["plan", "10", "--headroom", "2"])
    assert done.exit_code == 2
    assert done.output == "deal-export: error: --headroom must be < 1, got 2.0\n"


def test_b11_retry_and_ids_accept_no_progress(runner: CliRunner, tmp_path: Path) -> None:
    env = {"BITRIX24_WEBHOOK_URL": WEBHOOK}
    retried = runner.invoke(cli, ["retry", str(tmp_path), "--no-progress"], env=env)
    assert "No such option" not in retried.output
    assert "not a finished deal-export output" in retried.output
    listed = runner.invoke(cli, ["ids", "--no-progress"], env=env)
    assert "No such option" not in listed.output
    assert "--modified-since" in listed.output


def test_b11_a_range_without_the_range_format_says_how(runner: CliRunner, tmp_path: Path) -> None:
    done = runner.invoke(
        cli,
        ["run", "--ids", "1-100", "--out", str(tmp_path / "o")],
        env={"BITRIX24_WEBHOOK_URL": WEBHOOK},
    )
    assert done.exit_code == 2
    assert "looks like ID ranges: add --ids-format range" in done.output
    assert not (tmp_path / "o").exists()


def test_start_from_needs_since_last_run(runner: CliRunner, tmp_path: Path) -> None:
    env = {"BITRIX24_WEBHOOK_URL": WEBHOOK}
    for command in (["run", "--ids", "1-3", "--ids-format", "range"], ["ids"]):
        done = runner.invoke(
            cli, [*command, "--out", str(tmp_path), "--start-from", "2026-01-01"], env=env
        )
        assert done.exit_code == 2, done.output
        assert "--start-from applies only with --since-last-run" in done.output
