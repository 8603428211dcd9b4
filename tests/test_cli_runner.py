"""The CLI's translation layer through click's CliRunner: usage errors, plan, retry guards."""

from __future__ import annotations

import gc
from pathlib import Path

import pytest
from click.testing import CliRunner

from pipeline.cli import cli
from pipeline.cli.run import EXPORT_GC_THRESHOLD, collecting_less

WEBHOOK = "https://portal.example.com/rest/1/s3cretvalue42/"


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def _env(**extra: str) -> dict[str, str]:
    return {"BITRIX24_WEBHOOK_URL": WEBHOOK, **extra}


def test_run_without_ids_says_which_options_exist(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(cli, ["run", "--out", str(tmp_path / "o")], env=_env())
    assert result.exit_code == 2
    assert "--ids" in result.output
    assert "--modified-since" in result.output


def test_run_without_credentials_names_the_variable(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(
        cli,
        ["run", "--ids", "1-3", "--ids-format", "range", "--out", str(tmp_path / "o")],
        env={"BITRIX24_WEBHOOK_URL": ""},
    )
    assert result.exit_code == 2
    assert "BITRIX24_WEBHOOK_URL" in result.output


def test_bad_option_value_is_a_usage_error(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(
        cli,
        ["run", "--ids", "1-3", "--ids-format", "range", "--out", "o", "--batch-size", "500"],
        env=_env(),
    )
    assert result.exit_code == 2
    assert "--batch-size" in result.output  # the option typed, not the config key (B11)
    assert "s3cretvalue42" not in result.output


def test_unknown_config_key_is_named(runner: CliRunner, tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text("[limits]\nrte = 3\n")
    result = runner.invoke(
        cli,
        ["run", "--config", str(config), "--ids", "1-3", "--ids-format", "range", "--out", "o"],
        env=_env(),
    )
    assert result.exit_code == 2
    assert "rte" in result.output


def test_plan_names_the_binding_limit(runner: CliRunner) -> None:
    result = runner.invoke(cli, ["plan", "1M"], env={})
    assert result.exit_code == 0, result.output
    assert "binds" in result.output
    enterprise = runner.invoke(cli, ["plan", "1M", "--plan", "enterprise", "--ms-per-deal", "1"])
    assert enterprise.exit_code == 0, enterprise.output
    assert "rate" in enterprise.output


def test_ids_without_a_time_is_a_usage_error(runner: CliRunner) -> None:
    result = runner.invoke(cli, ["ids"], env=_env())
    assert result.exit_code == 2
    assert "--modified-since" in result.output


def test_retry_of_a_directory_that_is_no_export_is_fatal(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(cli, ["retry", str(tmp_path)], env=_env())
    assert result.exit_code == 1
    assert "not a finished deal-export output" in result.output
    assert "s3cretvalue42" not in result.output


def test_an_export_collects_less_and_leaves_the_collector_as_it_was() -> None:
    before, frozen = gc.get_threshold(), gc.get_freeze_count()
    with collecting_less():
        assert gc.get_threshold() == (EXPORT_GC_THRESHOLD, *before[1:])
        assert gc.get_freeze_count() > frozen
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == frozen
    with pytest.raises(SystemExit), collecting_less():
        raise SystemExit(3)  # how run_guarded ends a failed run
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == frozen
