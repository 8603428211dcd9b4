"""`deal-export compact OUTPUT`: Delta optimize (small files into large ones) and vacuum."""

from __future__ import annotations

import os

import click

from pipeline.cli._errors import fail, json_wanted
from pipeline.errors import OutputError, UsageError
from pipeline.output.delta.maintenance import DEFAULT_RETENTION_HOURS, Compacted, compact
from pipeline.output.store import display_uri
from pipeline.summary import EXIT_FATAL, EXIT_USAGE


def _line(done: Compacted, dry_run: bool) -> str:
    vacuum = "would delete" if dry_run else "deleted"
    return (
        f"{done.name} table: {done.files_removed} file(s) compacted into {done.files_added}; "
        f"vacuum {vacuum} {done.files_vacuumed} unreferenced file(s); version {done.version}"
    )


@click.command()
@click.argument("output")
@click.option(
    "--retention-hours",
    type=int,
    default=DEFAULT_RETENTION_HOURS,
    show_default=True,
    help="Vacuum keeps files older versions need for this long (Delta's default: 7 days).",
)
@click.option(
    "--force",
    is_flag=True,
    help="Allow a retention below 7 days (readers of older versions may lose their files).",
)
@click.option("--dry-run", is_flag=True, help="Only list what vacuum would delete.")
def compact_command(output: str, retention_hours: int, force: bool, dry_run: bool) -> None:
    """Compact a Delta output (--table-format delta) and vacuum files no version needs.

    Rewrites many small data files into few large ones (Delta optimize), then deletes the
    files no version within the retention still references, in the data table and in its
    errors table. Refused while a run writes there. A folder (Parquet) output is refused.

    \b
    Example:
      deal-export compact ./deals
    """
    as_json = json_wanted((), os.environ)
    try:
        done = compact(output, retention_hours=retention_hours, force=force, dry_run=dry_run)
    except UsageError as exc:
        fail(str(exc), EXIT_USAGE, as_json=as_json)
    except OutputError as exc:
        fail(f"output: {exc}", EXIT_FATAL, as_json=as_json)
    click.echo(f"{display_uri(output)}:")
    for table in done:
        click.echo(_line(table, dry_run))


__all__ = ["compact_command"]
