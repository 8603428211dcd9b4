"""The Delta Lake sink: one table of deals keyed by `ID`, merged into by every run.

Module map: `sink` (`DeltaSink`, the `Sink` protocol), `table` (append, merge and marker
commits), `errors_table` (the current failures), `commits` (run state in commit metadata),
`columns` (lineage and partition columns), `contract` (schema contract), `location` (URI and
storage options), `maintenance` (`deal-export compact`).
"""

from __future__ import annotations

import os
from typing import Any

from pipeline.errors import OutputError
from pipeline.output.delta.commits import last_completed, ours
from pipeline.output.delta.contract import CONTRACTS
from pipeline.output.delta.location import DeltaLocation, errors_table_uri, locate
from pipeline.output.delta.sink import DeltaSink, entity_of, read_watermark_of
from pipeline.output.delta.table import delta_error, delta_errors, open_table


def is_delta_output(root: str) -> bool:
    """True when `root` holds a Delta table (its `_delta_log`); False for anything else,
    including a root deltalake cannot open (a folder output's messages then apply)."""
    if "://" not in root:
        return os.path.isdir(os.path.join(os.path.expanduser(root), "_delta_log"))
    from deltalake import DeltaTable

    try:
        where = locate(root)
        return bool(DeltaTable.is_deltatable(where.uri, storage_options=where.storage_options))
    except (OutputError, delta_error(), OSError):
        return False


@delta_errors
def delta_watermark(root: str) -> object:
    """The watermark of the last completed run in the Delta table at `root`, or None."""
    current = open_table(locate(root))
    return None if current is None else read_watermark_of(ours(current.history()))


@delta_errors
def delta_state(root: str) -> dict[str, Any] | None:
    """The run state of the Delta table at `root` as `deal-export state show` prints it: the
    last completed run's watermark, run id, commit time and table version (None: no run
    completed yet). Read from the commit history, where the runs keep it."""
    current = open_table(locate(root))
    found = [] if current is None else ours(current.history())
    done = last_completed(found)
    if done is None:
        return None
    record = done.record
    return {
        "watermark": read_watermark_of(found),
        "run_id": record.get("run_id"),
        "at": record.get("committed_at"),
        "table_version": done.version,
        "table_format": "delta",
    }


@delta_errors
def delta_entity(root: str) -> str | None:
    """The CRM entity the Delta table at `root` holds, as its commits record it (None: none
    says)."""
    current = open_table(locate(root))
    return None if current is None else entity_of(ours(current.history()))


__all__ = [
    "CONTRACTS",
    "DeltaLocation",
    "DeltaSink",
    "delta_entity",
    "delta_state",
    "delta_watermark",
    "errors_table_uri",
    "is_delta_output",
    "locate",
]
