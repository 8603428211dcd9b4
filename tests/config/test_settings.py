"""Settings declared once: the CLI options, the TOML and environment loaders, the dataclass
checks and defaults all derive from `pipeline.settings.SETTINGS`, so they cannot disagree."""

from __future__ import annotations

import ast
import dataclasses
import subprocess
import sys
from pathlib import Path
from typing import Any, get_args

import click
import pytest
from click.testing import CliRunner

from pipeline import settings
from pipeline.cli import cli
from pipeline.cli._options import COMMAND_ONLY
from pipeline.cli.run import FLAGS
from pipeline.config import (
    LIBRARY_STRATEGY,
    ExistingDataBehavior,
    FetchConfig,
    FetchStrategy,
    LimitsConfig,
    OAuthAuth,
    OutputConfig,
    PartitionTransform,
    Plan,
    SchemaContract,
    TableFormat,
    TransportConfig,
)
from pipeline.config_load import IdsConfig, load_config
from pipeline.errors import UsageError
from pipeline.ids import ID_FORMATS as LOADER_ID_FORMATS
from pipeline.redact import is_secret_key
from pipeline.settings import (
    BY_KEY,
    EXISTING_DATA_BEHAVIORS,
    FETCH_STRATEGIES,
    ID_FORMATS,
    PARTITION_TRANSFORMS,
    PLANS,
    SCHEMA_CONTRACTS,
    SETTINGS,
    TABLE_FORMATS,
    Setting,
)

REPO = Path(__file__).resolve().parents[2]
PORTAL_COMMANDS = ("run", "retry", "plan", "ids")
#: The dataclass holding each section's fields (the top-level `log_format` is RunConfig's).
DATACLASSES: dict[str, Any] = {
    "limits": LimitsConfig,
    "transport": TransportConfig,
    "fetch": FetchConfig,
    "output": OutputConfig,
    "ids": IdsConfig,
    "portal.oauth": OAuthAuth,
}
#: Required fields a dataclass cannot be built without.
REQUIRED: dict[str, dict[str, object]] = {
    "output": {"root": "out"},
    "portal.oauth": {
        "endpoint": "https://p.bitrix24.com/rest/",
        "access_token": "a",
        "refresh_token": "r",
        "client_id": "c",
        "client_secret": "s",
    },
}


def _command(name: str) -> click.Command:
    assert isinstance(cli, click.Group)
    return cli.commands[name]


def _options(name: str) -> list[click.Option]:
    return [p for p in _command(name).params if isinstance(p, click.Option)]


def _split(key: str) -> tuple[str, str]:
    section, _, name = key.rpartition(".")
    return section, name


def _field(key: str) -> dataclasses.Field[Any] | None:
    section, name = _split(key)
    cls = DATACLASSES.get(section)
    fields = {f.name: f for f in dataclasses.fields(cls)} if cls is not None else {}
    return fields.get(name)


# --------------------------------------------------------------------------- the declarations


def test_keys_env_names_and_flags_are_unique() -> None:
    assert len(BY_KEY) == len(SETTINGS)
    envs = [s.env_name for s in SETTINGS]
    assert len(set(envs)) == len(envs)
    assert all(e.startswith(("DEAL_EXPORT_", "BITRIX24_")) for e in envs)
    flags = [f for s in SETTINGS for f in s.flags]
    assert len(set(flags)) == len(flags)
    assert not set(flags) & set(COMMAND_ONLY)


def test_the_cli_flag_map_is_the_declarations() -> None:
    assert dict(settings.FLAGS) == FLAGS


#: The one field whose dataclass default is not the setting's: a FetchConfig built in code (the
#: fetch tests, embedders) fetches one get per ID; loaded settings (CLI, TOML, env, the Python
#: API) take the declared `auto`.
LIBRARY_DEFAULTS = {"fetch.strategy": LIBRARY_STRATEGY}


@pytest.mark.parametrize("spec", [s for s in SETTINGS if _field(s.key)], ids=lambda s: s.key)
def test_dataclass_default_is_the_declared_default(spec: Setting) -> None:
    field = _field(spec.key)
    assert field is not None
    if field.default is dataclasses.MISSING:  # required: no default to declare
        assert spec.default is None
    else:
        assert field.default == LIBRARY_DEFAULTS.get(spec.key, spec.default)


def test_loaded_settings_take_the_declared_strategy() -> None:
    loaded = load_config(config_path=None, env={}, overrides={"output.root": "out"})
    assert loaded.fetch.strategy == "auto" == BY_KEY["fetch.strategy"].default


def test_every_section_field_is_declared() -> None:
    for section, cls in DATACLASSES.items():
        for field in dataclasses.fields(cls):
            assert f"{section}.{field.name}" in BY_KEY, f"{cls.__name__}.{field.name}"


@pytest.mark.parametrize(
    ("literal", "choices"),
    [
        (Plan, PLANS),
        (PartitionTransform, PARTITION_TRANSFORMS),
        (ExistingDataBehavior, EXISTING_DATA_BEHAVIORS),
        (TableFormat, TABLE_FORMATS),
        (SchemaContract, SCHEMA_CONTRACTS),
        (FetchStrategy, FETCH_STRATEGIES),
    ],
)
def test_literal_types_match_the_declared_choices(literal: Any, choices: tuple[str, ...]) -> None:
    assert get_args(literal) == choices


def test_the_id_reader_knows_the_declared_formats() -> None:
    assert tuple(LOADER_ID_FORMATS) == ID_FORMATS


@pytest.mark.parametrize("spec", [s for s in SETTINGS if s.secret], ids=lambda s: s.key)
def test_every_secret_setting_is_a_secret_key_for_masking(spec: Setting) -> None:
    assert is_secret_key(_split(spec.key)[1])


# ----------------------------------------------------------------------------- the CLI side


@pytest.mark.parametrize("spec", [s for s in SETTINGS if s.flags], ids=lambda s: s.key)
def test_run_help_lists_every_declared_flag(spec: Setting) -> None:
    shown = CliRunner().invoke(cli, ["run", "--help"], terminal_width=200).output
    assert spec.flags[0] in shown


@pytest.mark.parametrize("name", PORTAL_COMMANDS)
def test_every_option_is_a_declaration_or_command_only(name: str) -> None:
    parsed = _command(name).make_context(name, [], resilient_parsing=True).params
    for option in _options(name):
        flag = next(o for o in option.opts if o.startswith("--"))
        spec = next((s for s in SETTINGS if flag in s.flags), None)
        if spec is None:
            assert flag in COMMAND_ONLY, f"{name} {flag}: no declaration and not command-only"
            continue
        assert option.name == spec.dest
        if spec.kind == "choice":
            assert isinstance(option.type, click.Choice)
            assert tuple(option.type.choices) == spec.choices
        elif spec.kind == "bool":
            assert option.is_flag
        else:
            expected = {"int": click.INT, "float": click.FLOAT}.get(spec.kind)
            if expected is not None:
                assert option.type == expected, f"{name} {flag}"
        assert parsed[option.name] is None, f"{name} {flag}: a default would hide the config"


@pytest.mark.parametrize("name", PORTAL_COMMANDS)
def test_a_flag_is_spelled_and_typed_alike_on_every_command(name: str) -> None:
    run = {o.name: o for o in _options("run")}
    for option in _options(name):
        if option.name in run and option.name in {s.dest for s in SETTINGS}:
            assert option.opts == run[option.name].opts
            assert type(option.type) is type(run[option.name].type)
            assert option.type.name == run[option.name].type.name


def test_settings_and_options_modules_import_no_heavy_package() -> None:
    code = (
        "import sys, pipeline.settings, pipeline.urls, pipeline.redact; "
        "print(sorted(m for m in ('pyarrow', 'aiohttp', 'click') if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO
    )
    assert done.stdout.strip() == "[]"
    tree = ast.parse((REPO / "pipeline" / "cli" / "_options.py").read_text())
    imported = {
        node.module if isinstance(node, ast.ImportFrom) else alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    }
    assert imported <= {"__future__", "collections.abc", "typing", "click", "pipeline.settings"}


# --------------------------------------------------------- one range, whichever way it comes


def _cli_error(args: list[str]) -> str:
    done = CliRunner().invoke(cli, args)
    assert done.exit_code == 2, done.output
    return done.output


def test_the_concurrency_cap_is_the_same_from_cli_toml_env_and_dataclass(tmp_path: Path) -> None:
    message = "must be <= 256, got 257"
    assert f"--concurrency {message}" in _cli_error(["plan", "10", "--concurrency", "257"])
    config = tmp_path / "c.toml"
    config.write_text("[fetch]\nconcurrency = 257\n")
    with pytest.raises(UsageError, match=r"c\.toml: \[fetch\]\.concurrency must be <= 256"):
        load_config(config_path=str(config), env={})
    with pytest.raises(UsageError, match=r"DEAL_EXPORT_FETCH_CONCURRENCY: fetch\.concurrency"):
        load_config(env={"DEAL_EXPORT_FETCH_CONCURRENCY": "257"})
    with pytest.raises(UsageError, match=f"^fetch.concurrency {message}$"):
        FetchConfig(concurrency=257)
    # The cap itself is allowed everywhere.
    assert load_config(env={"DEAL_EXPORT_FETCH_CONCURRENCY": "256"}).fetch.concurrency == 256
    assert FetchConfig(concurrency=256).concurrency == 256
    done = CliRunner().invoke(cli, ["plan", "10", "--concurrency", "256"])
    assert done.exit_code == 0, done.output


def _outside(spec: Setting) -> list[float]:
    """Values just outside the declared range (one per declared bound)."""
    values: list[float] = []
    if spec.minimum is not None:
        values.append(spec.minimum if spec.above_min else spec.minimum - 1)
    if spec.maximum is not None:
        values.append(spec.maximum if spec.below_max else spec.maximum + 1)
    return values


BOUNDED = [s for s in SETTINGS if s.minimum is not None or s.maximum is not None]


@pytest.mark.parametrize("spec", BOUNDED, ids=lambda s: s.key)
def test_loader_and_dataclass_refuse_the_same_values(spec: Setting) -> None:
    section, name = _split(spec.key)
    cls = DATACLASSES[section]
    for value in _outside(spec):
        typed = int(value) if spec.kind == "int" else float(value)
        where = f"^environment variable {spec.env_name}: {spec.key} must be"
        with pytest.raises(UsageError, match=where):
            load_config(env={spec.env_name: str(typed)})
        with pytest.raises(UsageError, match=f"^{spec.key} must be"):
            cls(**REQUIRED.get(section, {}), **{name: typed})


@pytest.mark.parametrize("spec", [s for s in SETTINGS if s.kind == "choice"], ids=lambda s: s.key)
def test_loader_and_dataclass_refuse_the_same_choices(spec: Setting) -> None:
    section, name = _split(spec.key)
    with pytest.raises(UsageError, match=f"must be one of {', '.join(spec.choices)}"):
        load_config(env={spec.env_name: "nonsense"})
    if _field(spec.key) is not None:
        with pytest.raises(UsageError, match=f"^{spec.key} must be one of"):
            DATACLASSES[section](**REQUIRED.get(section, {}), **{name: "nonsense"})
