"""The `deal-export` command line: it only translates arguments into calls of the package.

Each sub-command lives in its own module of this package and is registered here by name only:
its module is imported when that command runs (or shows its own help), so `deal-export --help`
and `import pipeline.cli` do not pay for pyarrow or aiohttp.
"""

from __future__ import annotations

import gc
import importlib
import io
import os
import sys
from collections.abc import Iterator, MutableMapping
from typing import Any

import click

from pipeline import __version__
from pipeline.cli._errors import fail, json_wanted
from pipeline.memory import configure as configure_memory
from pipeline.redact import mask_text
from pipeline.summary import EXIT_INTERRUPTED

#: name -> (module, attribute, one-line help). The help line is what `deal-export --help` lists
#: without importing the module; tests/test_cli_help.py checks it matches the command's own.
COMMANDS: dict[str, tuple[str, str, str]] = {
    "simulate": (
        "pipeline.cli.simulate",
        "simulate",
        "Serve a local Bitrix24 portal simulator until Ctrl-C.",
    ),
    "plan": (
        "pipeline.cli.plan",
        "plan",
        "Estimate how long exporting N deals takes, and which portal limit binds.",
    ),
    "run": (
        "pipeline.cli.run",
        "run",
        "Export deals into typed, partitioned Parquet with an error sidecar.",
    ),
    "ids": (
        "pipeline.cli.ids",
        "ids",
        "Discover the IDs of deals modified since a time, and print them one per line.",
    ),
    "retry": (
        "pipeline.cli.retry",
        "retry",
        "Re-fetch the IDs an earlier run could not get for reasons a retry may fix.",
    ),
    "state": (
        "pipeline.cli.state",
        "state",
        "Show or move the watermark the next `run --since-last-run` starts from.",
    ),
    "reconcile": (
        "pipeline.cli.reconcile",
        "reconcile",
        "Find the deals of the Delta table OUTPUT that were deleted in Bitrix24, and mark them.",
    ),
    "compact": (
        "pipeline.cli.compact",
        "compact_command",
        "Compact a Delta output (--table-format delta) and vacuum files no version needs.",
    ),
}


class _LazyCommands(MutableMapping[str, click.Command]):
    """The group's commands, each imported on first access; names are known without imports."""

    def __init__(self, table: dict[str, tuple[str, str, str]]) -> None:
        self._table = table
        self._loaded: dict[str, click.Command] = {}

    def is_loaded(self, name: str) -> bool:
        return name in self._loaded

    def __getitem__(self, name: str) -> click.Command:
        command = self._loaded.get(name)
        if command is None:
            if name not in self._table:
                raise KeyError(name)
            module, attr, _ = self._table[name]
            command = getattr(importlib.import_module(module), attr)
            assert isinstance(command, click.Command)
            self._loaded[name] = command
        return command

    def __setitem__(self, name: str, command: click.Command) -> None:
        self._loaded[name] = command

    def __delitem__(self, name: str) -> None:
        self._loaded.pop(name, None)
        self._table.pop(name, None)

    def __iter__(self) -> Iterator[str]:
        return iter({**dict.fromkeys(self._table), **dict.fromkeys(self._loaded)})

    def __len__(self) -> int:
        return len(self._table.keys() | self._loaded.keys())


class _LazyGroup(click.Group):
    """A group whose overview lists commands from the table instead of importing them."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy = _LazyCommands(dict(COMMANDS))
        self.commands = self.lazy

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        names = self.list_commands(ctx)
        if not names:
            return
        limit = formatter.width - 6 - max(len(name) for name in names)
        rows: list[tuple[str, str]] = []
        for name in names:
            if self.lazy.is_loaded(name) or name not in COMMANDS:
                command = self.lazy[name]
                if command.hidden:
                    continue
                rows.append((name, command.get_short_help_str(limit)))
            else:
                # A stand-in command shortens the line exactly as the real one would.
                stand_in = click.Command(name, help=COMMANDS[name][2])
                rows.append((name, stand_in.get_short_help_str(limit)))
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="deal-export")
def cli() -> None:
    """Export Bitrix24 CRM deals into typed, partitioned Parquet.

    \b
    Example:
      deal-export simulate --deals 5000          # a local Bitrix24 portal to try it on
      deal-export run --ids ids.txt --out ./deals
      deal-export plan 1M                        # how long a backfill of 1M deals takes
    """


def main() -> None:
    """The `deal-export` process: the command, then the interpreter's exit."""
    configure_memory()
    try:
        _command()
    finally:
        # Only the exit is left: at shutdown the cyclic collector walks every container still
        # alive (modules, classes, functions: what the command imported) once more and frees
        # nothing the process's end would not. Frozen objects are out of its reach (Python
        # docs, `gc.freeze`): a one-ID export 0.355 -> 0.322 s CPU (min of 10, interleaved).
        # Only here, in the process's own entry point: a test process that invokes `cli`
        # goes on collecting as before.
        gc.freeze()


def _command() -> None:
    as_json = json_wanted(sys.argv[1:], os.environ)
    # click must not print its own usage errors (unknown option, bad choice, extra argument):
    # they quote the argument as given, a webhook URL with its secret included, and in JSON
    # mode they must be a JSON record like every other line.
    try:
        code = cli.main(prog_name="deal-export", standalone_mode=False)
    except click.ClickException as exc:
        if as_json:
            fail(mask_text(exc.format_message(), ()), exc.exit_code, as_json=True)
        shown = io.StringIO()
        exc.show(file=shown)
        sys.stderr.write(mask_text(shown.getvalue(), ()))
        sys.exit(exc.exit_code)
    except click.Abort:
        if as_json:
            fail("interrupted", EXIT_INTERRUPTED, as_json=True)
        click.echo("Aborted!", err=True)  # what click's standalone mode prints
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)


__all__ = ["COMMANDS", "cli", "main"]
