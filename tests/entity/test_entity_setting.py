"""The `entity` setting: one loader key (TOML, environment, `--entity`), default `deal`."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from pipeline.cli import cli
from pipeline.config_load import effective_config_dict, load_config
from pipeline.errors import UsageError

WEBHOOK = {"BITRIX24_WEBHOOK_URL": "https://portal.example.com/rest/1/s3cret/"}


def test_default_is_deal_and_it_reaches_the_run_config() -> None:
    loaded = load_config(env=WEBHOOK, overrides={"output.root": "out"})
    assert loaded.entity == "deal"
    assert loaded.run_config().entity == "deal"
    assert "entity" not in loaded.names  # not given: `retry` takes the output's


def test_every_source_can_set_it(tmp_path: Path) -> None:
    toml = tmp_path / "c.toml"
    toml.write_text('entity = "lead"\n')
    assert load_config(config_path=str(toml), env=WEBHOOK).entity == "lead"
    assert load_config(env={**WEBHOOK, "DEAL_EXPORT_ENTITY": "lead"}).entity == "lead"
    loaded = load_config(env=WEBHOOK, overrides={"entity": "lead", "output.root": "o"},
                         flags={"entity": "--entity"})  # fmt: skip
    assert loaded.run_config().entity == "lead"
    assert loaded.name_of("entity") == "--entity"
    assert effective_config_dict(loaded.run_config())["entity"] == "lead"


def test_an_unknown_entity_is_a_clear_usage_error() -> None:
    with pytest.raises(UsageError, match=r"DEAL_EXPORT_ENTITY.*deal, lead"):
        load_config(env={**WEBHOOK, "DEAL_EXPORT_ENTITY": "contact"})


@pytest.mark.parametrize("command", ["run", "retry", "ids", "plan"])
def test_each_command_offers_entity(command: str) -> None:
    shown = CliRunner().invoke(cli, [command, "--help"])
    assert shown.exit_code == 0
    assert "--entity [deal|lead]" in shown.output
