"""Every command explains itself: help text with an example, reachable without a traceback."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from pipeline.cli import COMMANDS, cli
from tests.conftest import SimulatorFactory
from tests.e2e.helpers import FAST, cli_env, run_cli


def _commands() -> list[tuple[str, click.Command]]:
    assert isinstance(cli, click.Group)
    return sorted(cli.commands.items())


def test_group_has_help_with_example() -> None:
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    assert "Example" in result.output


@pytest.mark.parametrize(("name", "command"), _commands())
def test_every_command_has_help_with_example(name: str, command: click.Command) -> None:
    result = CliRunner().invoke(cli, [name, "--help"])
    assert result.exit_code == 0, result.output
    assert command.help, f"{name} has no help text"
    assert "Example" in result.output, f"{name} help shows no example"
    assert f"deal-export {name}" in result.output


def test_version() -> None:
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0
    assert "deal-export" in result.output


def test_importing_the_cli_loads_no_arrow_or_aiohttp() -> None:
    # A fresh interpreter: this test process has imported everything already.
    code = (
        "import sys, pipeline.cli\n"
        "heavy = [m for m in sys.modules if m.split('.')[0] in ('pyarrow', 'aiohttp')]\n"
        "heavy += [m for m in sys.modules if m.startswith('pipeline.cli.') and m != "
        "'pipeline.cli._errors']\n"
        "print(','.join(sorted(heavy)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.strip() == ""


def test_group_help_lists_commands_without_importing_them() -> None:
    code = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "from pipeline.cli import cli\n"
        "out = CliRunner().invoke(cli, ['--help']).output\n"
        "assert 'simulate' in out and 'retry' in out, out\n"
        "print('pyarrow' in sys.modules or 'aiohttp' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.strip() == "False"


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_lazy_help_line_matches_the_command(name: str) -> None:
    module, attr, line = COMMANDS[name]
    command = getattr(importlib.import_module(module), attr)
    assert command.name == name
    for limit in (40, 60, 1000):
        stand_in = click.Command(name, help=line)
        assert stand_in.get_short_help_str(limit) == command.get_short_help_str(limit)


@pytest.mark.parametrize(("given", "expected"), [(None, "0"), ("25", "25")])
def test_main_sets_allocator_defaults_but_keeps_the_users(given: str | None, expected: str) -> None:
    code = (
        "import os, sys\n"
        "sys.argv = ['deal-export', '--version']\n"
        "from pipeline.cli import main\n"
        "try:\n"
        "    main()\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(os.environ['MIMALLOC_PURGE_DELAY'])\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("MIMALLOC_")}
    if given is not None:
        env["MIMALLOC_PURGE_DELAY"] = given
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        env=env,
    )
    assert done.stdout.strip().splitlines()[-1] == expected


def _imported_packages(stderr: str) -> set[str]:
    """Top-level packages a child run with PYTHONPROFILEIMPORTTIME=1 imported (its stderr)."""
    names = (line.rsplit("|", 1)[-1].strip() for line in stderr.splitlines())
    return {name.split(".")[0] for name in names if name}


@pytest.mark.parametrize("table_format", ["parquet", "delta"])
async def test_only_a_delta_run_imports_deltalake(
    simulator: SimulatorFactory, tmp_path: Path, table_format: str
) -> None:
    # deltalake and its arro3 cost ~18 MB and ~0.1 s of a run's fixed startup; a folder output
    # never needs them. The delta run shows the check sees the import when it happens.
    sim = await simulator(deals=5, seed=1)
    args = ["run", "--ids", "1-5", "--ids-format", "range", "--out", "out", *FAST]
    done = await run_cli(
        [*args, "--table-format", table_format],
        env=cli_env(sim, PYTHONPROFILEIMPORTTIME="1"),
        cwd=tmp_path,
    )
    assert done.code == 0, done.stderr[-2000:]
    imported = _imported_packages(done.stderr)
    assert "pyarrow" in imported
    assert ("deltalake" in imported) == (table_format == "delta")


async def test_a_run_without_detect_deletes_imports_no_deletion_check(
    simulator: SimulatorFactory, tmp_path: Path
) -> None:
    # The deletion check (pipeline.reconcile and what it needs) is start-up cost a run pays only
    # with --detect-deletes, which needs a Delta output: a folder run never imports it.
    sim = await simulator(deals=5, seed=1)
    args = ["run", "--ids", "1-5", "--ids-format", "range", "--out", "out", *FAST]
    done = await run_cli(args, env=cli_env(sim, PYTHONPROFILEIMPORTTIME="1"), cwd=tmp_path)
    assert done.code == 0, done.stderr[-2000:]
    modules = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines()}
    assert "pipeline.run" in modules
    assert not modules & {"pipeline.reconcile", "pipeline.deletes", "pipeline.output.delta_deletes"}
