"""The `deal-export` command line: it only translates arguments into calls of the package.

Each sub-command lives in its own module of this package and is registered here.
"""

from __future__ import annotations

import click

from pipeline import __version__


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
    from pipeline.cli.ids import ids
    from pipeline.cli.plan import plan
    from pipeline.cli.retry import retry
    from pipeline.cli.run import run
    from pipeline.cli.simulate import simulate

    cli.add_command(simulate)
    cli.add_command(plan)
    cli.add_command(run)
    cli.add_command(ids)
    cli.add_command(retry)


_register()


def main() -> None:
    cli(prog_name="deal-export")


__all__ = ["cli", "main"]
