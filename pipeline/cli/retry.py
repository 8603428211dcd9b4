"""`deal-export retry OUTPUT`: re-fetch only the sidecar IDs whose failure may pass."""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import click

from pipeline.cli._errors import run_guarded
from pipeline.cli._session import start_output_session
from pipeline.cli.run import (
    break_lock_option,
    collecting_less,
    portal_options,
    quiet_progress_option,
    report,
)
from pipeline.output.lock import break_lock
from pipeline.run import RunResult, retry_failed


@click.command()
@click.argument("output")
@quiet_progress_option
@break_lock_option
@portal_options
def retry(output: str, **kw: Any) -> None:
    """Re-fetch the IDs an earlier run could not get for reasons a retry may fix.

    Deals that now arrive are written into the same dataset; their sidecar rows go. IDs that
    fail again stay in the sidecar with their attempts added up. Permanent failures (deleted
    or hidden deals) are left alone. Exit codes are those of `deal-export run`. Running the
    same `deal-export run` command again does the same.

    \b
    Example:
      deal-export retry ./deals
    """
    session = start_output_session(kw, output)
    loaded, config, secrets = session.loaded, session.config, session.secrets
    run_id, saver, clock = session.run_id, session.saver, session.clock
    # The output says which entity it holds; a given --entity (or setting) must agree with it.
    wanted = loaded.entity if "entity" in loaded.names else None

    async def main() -> RunResult:
        if kw.get("break_lock"):
            await asyncio.to_thread(break_lock, output)
        return await retry_failed(
            config, output, clock=clock, run_id=run_id, on_tokens_rotated=saver, entity=wanted
        )

    json_logs = config.log_format == "json"
    with collecting_less():
        result = run_guarded(main, lambda: secrets, json_errors=json_logs)
    report(result, json_logs=json_logs, secrets=secrets, retry=True)
    sys.exit(result.exit_code)


__all__ = ["retry"]
