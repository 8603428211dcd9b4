"""The `deal-export` command line: it only translates arguments into calls of the package.

Each sub-command lives in its own module of this package and is registered here.
"""

from __future__ import annotations

import os
import sys

import click

from pipeline import __version__
from pipeline.cli._errors import fail, json_wanted
from pipeline.summary import EXIT_INTERRUPTED


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="deal-export")
def cli() -> None:
    """Export Bitrix24 CRM deals into typed, partitioned Parquet.

    \b
    Example:
      deal-export simulate --deals 5000          # a local Bitrix24 portal to try it on
      deal-export run --ids ids.txt --out ./deals
      deal-export plan 1M                        # how long a backfill of 1M deals takes
    """


def _register() -> None:
    from pipeline.cli.compact import compact_command
    from pipeline.cli.ids import ids
    from pipeline.cli.plan import plan
    from pipeline.cli.reconcile import reconcile
    from pipeline.cli.retry import retry
    from pipeline.cli.run import run
    from pipeline.cli.simulate import simulate
    from pipeline.cli.state import state

    cli.add_command(simulate)
    cli.add_command(plan)
    cli.add_command(run)
    cli.add_command(ids)
    cli.add_command(retry)
    cli.add_command(state)
    cli.add_command(reconcile)
    cli.add_command(compact_command, name="compact")


_register()


def main() -> None:
    if not json_wanted(sys.argv[1:], os.environ):
        cli(prog_name="deal-export")
        return
    # In JSON mode even click's own usage errors (unknown option, bad choice) must be a JSON
    # record like every other line, so click must not print them itself.
    try:
        code = cli.main(prog_name="deal-export", standalone_mode=False)
    except click.ClickException as exc:
        fail(exc.format_message(), exc.exit_code, as_json=True)
    except click.Abort:
        fail("interrupted", EXIT_INTERRUPTED, as_json=True)
    sys.exit(code if isinstance(code, int) else 0)


__all__ = ["cli", "main"]
