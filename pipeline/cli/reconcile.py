"""`deal-export reconcile OUT`: mark (or remove) the deals the portal deleted in a Delta table."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import click

from pipeline.cli._errors import run_guarded
from pipeline.cli._session import start_output_session
from pipeline.cli.run import (
    portal_options,
    quiet_progress_option,
)
from pipeline.fetch.client import PortalClient
from pipeline.fetch.stats import FetchStats
from pipeline.logs import json_record
from pipeline.redact import mask_text

if TYPE_CHECKING:
    from pipeline.output.lock import RunLock
    from pipeline.reconcile import ReconcileResult

_EPILOG = """\b
Exit codes: 0 every gone row decided (deleted, still present, or denied: those rows are
kept); 3 some rows could not be decided for reasons a later run may fix; 1 fatal (auth,
portal, not a Delta table); 2 usage error; 130 interrupted (nothing was changed).
"""


@click.command(epilog=_EPILOG)
@click.argument("output")
@click.option(
    "--hard-delete",
    is_flag=True,
    help="Remove the rows of deleted deals instead of setting their _deleted_at.",
)
@quiet_progress_option
@portal_options
def reconcile(output: str, **kw: Any) -> None:
    """Find the deals of the Delta table OUTPUT that were deleted in Bitrix24, and mark them.

    Lists every deal ID on the portal (crm.<entity>.list, IDs only, many pages per request),
    asks crm.<entity>.get about each live row the listing lacks, and sets _deleted_at (UTC) on
    the rows of deals the portal no longer has (`Not found`), in one Delta commit. A deal
    the user may not read (`Access denied`) is not a deletion: its row stays. Needs the
    Delta sink's table; a folder (Parquet) export is refused.

    \b
    Example:
      deal-export reconcile ./deals
      deal-export reconcile s3://bucket/deals --hard-delete
    """
    session = start_output_session(kw, output)
    config, secrets = session.config, session.secrets
    run_id, saver, clock = session.run_id, session.saver, session.clock

    async def main() -> ReconcileResult:
        # Imported here: the Delta library loads only for the command that needs it, so the
        # rest of the CLI starts (and `--help` works) without it.
        from pipeline.reconcile import detect_and_apply_deletes

        client = PortalClient(
            config.auth,
            limits=config.limits,
            transport=config.transport,
            fetch=config.fetch,
            clock=clock,
            on_tokens_rotated=saver,
            stats=FetchStats(),
        )
        async with client:
            lock = await asyncio.to_thread(_lock_table, output, run_id)
            try:
                return await detect_and_apply_deletes(
                    client, output, run_id=run_id, clock=clock, hard=bool(kw.get("hard_delete"))
                )
            finally:
                if lock is not None:
                    await asyncio.to_thread(lock.release)

    json_logs = config.log_format == "json"
    result = run_guarded(main, lambda: secrets, json_errors=json_logs)
    _report(result, json_logs=json_logs, secrets=secrets)
    sys.exit(result.exit_code)


def _lock_table(output: str, run_id: str) -> RunLock | None:
    """The output's run lock, held from reading the table to committing the marks, as `run`
    and `compact` hold it: a run that merged rows between reconcile's read and its commit
    would have them judged on a stale listing, so the two are refused rather than
    interleaved. None when `output` holds no Delta table: `detect_and_apply_deletes` then
    says so, and no lock file is left in a folder that is not ours."""
    from pipeline.output.delta import table
    from pipeline.output.delta.location import locate
    from pipeline.output.delta.sink import lock_root

    if table.open_table(locate(output)) is None:
        return None
    return lock_root(output, run_id)


def _report(result: ReconcileResult, *, json_logs: bool, secrets: Iterable[str]) -> None:
    """One line on stdout: the sentence, or in JSON mode one object (as `run` does)."""
    line = mask_text(result.summary(), secrets)
    if not json_logs:
        click.echo(line)
        return
    fields = result.fields()
    fields["output"] = mask_text(str(fields["output"]), secrets)
    click.echo(
        json_record(
            created=time.time(),
            level="info",
            logger="pipeline.cli",
            event="reconcile_finished",
            message=line,
            run_id=result.run_id,
            fields=fields,
        )
    )


__all__ = ["reconcile"]
