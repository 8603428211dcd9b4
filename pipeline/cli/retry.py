"""`deal-export retry OUTPUT`: re-fetch only the sidecar IDs whose failure may pass."""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import click

from pipeline.cli._errors import fail, run_guarded
from pipeline.cli._tokens import rotated_tokens
from pipeline.cli.run import (
    FLAGS,
    break_lock_option,
    load,
    portal_options,
    quiet_progress_option,
    report,
    start_logging,
    wants_json,
    warn_if_insecure,
)
from pipeline.clock import ScaledClock
from pipeline.config import RunConfig
from pipeline.config_load import secrets_of
from pipeline.errors import UsageError
from pipeline.logs import set_run_id
from pipeline.output.lock import break_lock
from pipeline.run import RunResult, new_run_id, retry_failed
from pipeline.summary import EXIT_USAGE


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
    loaded = load(kw, {"output.root": output}, {**FLAGS, "output.root": "OUTPUT"})
    secrets = secrets_of(loaded)
    if loaded.auth is None:
        fail(
            "no portal credentials: set BITRIX24_WEBHOOK_URL (or --webhook-file, or --config)",
            EXIT_USAGE,
            as_json=wants_json(kw),
        )
    try:
        config: RunConfig = loaded.run_config()
    except UsageError as exc:
        fail(str(exc), EXIT_USAGE, secrets, as_json=wants_json(kw))
    run_id = new_run_id()
    set_run_id(run_id)
    _, handler = start_logging(kw, config.log_format, secrets)
    warn_if_insecure(loaded)
    saver = rotated_tokens(config.auth, handler, secrets)
    clock = ScaledClock(kw.get("time_scale") or 1.0)
    # The output says which entity it holds; a given --entity (or setting) must agree with it.
    wanted = loaded.entity if "entity" in loaded.names else None

    async def main() -> RunResult:
        if kw.get("break_lock"):
            await asyncio.to_thread(break_lock, output)
        return await retry_failed(
            config, output, clock=clock, run_id=run_id, on_tokens_rotated=saver, entity=wanted
        )

    json_logs = config.log_format == "json"
    result = run_guarded(main, lambda: secrets, json_errors=json_logs)
    report(result, json_logs=json_logs, secrets=secrets, retry=True)
    sys.exit(result.exit_code)


__all__ = ["retry"]
