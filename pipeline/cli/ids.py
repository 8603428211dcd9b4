"""`deal-export ids`: print the IDs a run would export, one per line (nothing is written)."""

from __future__ import annotations

import logging
import sys
from typing import Any

import click

from pipeline.cli._errors import fail, run_guarded
from pipeline.cli._options import setting_options
from pipeline.cli.run import (
    load,
    portal_options,
    quiet_progress_option,
    start_logging,
    warn_if_insecure,
)
from pipeline.clock import ScaledClock
from pipeline.config_load import secrets_of
from pipeline.entity import entity_named
from pipeline.fetch import PortalClient
from pipeline.logs import log_event
from pipeline.run import resolve_ids
from pipeline.summary import EXIT_USAGE


@click.command()
@setting_options(
    "ids.modified_since",
    "ids.since_last_run",
    "ids.start_from",
    "output.root",
    "ids.overlap_s",
    help={
        "ids.modified_since": "Deals modified since this ISO time with zone, or a date (UTC).",
        "ids.since_last_run": "Deals modified since the last successful run into --out.",
        "output.root": "Output root whose watermark --since-last-run reads.",
    },
)
@quiet_progress_option
@portal_options
def ids(**kw: Any) -> None:
    """Discover the IDs of deals modified since a time, and print them one per line.

    Uses the entity's list method (only the ID field, keyset paging), as an incremental run
    does: crm.lead.list with --entity lead.

    \b
    Example:
      deal-export ids --modified-since 2026-11-26T00:00:00+03:00 > ids.txt
      deal-export ids --since-last-run --out ./deals | wc -l
    """
    loaded = load(kw, {})
    secrets = secrets_of(loaded)
    as_json = loaded.log_format == "json"
    if loaded.auth is None:
        fail(
            "no portal credentials: set BITRIX24_WEBHOOK_URL (or --webhook-file)",
            EXIT_USAGE,
            as_json=as_json,
        )
    if loaded.ids.modified_since is None and not loaded.ids.since_last_run:
        fail(
            "say since when: --modified-since TIME or --since-last-run --out DIR",
            EXIT_USAGE,
            as_json=as_json,
        )
    if loaded.ids.since_last_run and loaded.output is None:
        fail(
            "--since-last-run needs --out (where the last run stored its watermark)",
            EXIT_USAGE,
            as_json=as_json,
        )
    start_logging(kw, loaded.log_format, secrets)
    warn_if_insecure(loaded)
    auth = loaded.auth
    root = loaded.output.root if loaded.output is not None else ""
    entity = entity_named(loaded.entity)

    async def main() -> int:
        async with PortalClient(
            auth,
            limits=loaded.limits,
            transport=loaded.transport,
            fetch=loaded.fetch,
            clock=ScaledClock(kw.get("time_scale") or 1.0),
            entity=entity,
        ) as client:
            idset = (await resolve_ids(loaded.ids, client, root)).idset
        out = sys.stdout
        for batch in idset.batches(10_000):
            out.write("".join(f"{i}\n" for i in batch))
        out.flush()
        return len(idset)

    count = run_guarded(main, lambda: secrets, json_errors=as_json)
    found = f"{count} {entity.id_noun}s"
    if as_json:
        log_event(logging.getLogger("pipeline.cli"), "ids_found", found, count=count)
    else:
        click.echo(found, err=True)


__all__ = ["ids"]
