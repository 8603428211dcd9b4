"""The Delta Lake sink: one table of deals keyed by `ID`, merged into by every run.

Module map: `sink` (`DeltaSink`, the `Sink` protocol), `table` (append, merge and marker
commits), `errors_table` (the current failures), `commits` (run state in commit metadata),
`columns` (lineage and partition columns), `contract` (schema contract), `location` (URI and
storage options), `maintenance` (`deal-export compact`).
"""

from __future__ import annotations

import os
from typing import Any

from deltalake import DeltaTable
from deltalake.exceptions import DeltaError

from pipeline.errors import OutputError
from pipeline.output.delta.commits import latest_value, ours
from pipeline.output.delta.contract import CONTRACTS
from pipeline.output.delta.location import DeltaLocation, errors_table_uri, locate
from pipeline.output.delta.sink import DeltaSink, read_watermark_of
from pipeline.output.delta.table import delta_errors, open_table


def is_delta_output(root: str) -> bool:
    """True when `root` holds a Delta table (its `_delta_log`); False for anything else,
    including a root deltalake cannot open (a folder output's messages then apply)."""
    if "://" not in root:
        return os.path.isdir(os.path.join(os.path.expanduser(root), "_delta_log"))
    try:
        where = locate(root)
        return bool(DeltaTable.is_deltatable(where.uri, storage_options=where.storage_options))
    except (OutputError, DeltaError, OSError):
        return False


@delta_errors
def delta_watermark(root: str) -> object:
    """The watermark of the last completed run in the Delta table at `root`, or None."""
    current = open_table(locate(root))
    return None if current is None else read_watermark_of(ours(current.history()))


@delta_errors
def delta_run_config(root: str) -> dict[str, Any] | None:
    """The newest run configuration (entity included) the finalize commits of the Delta table at
    `root` carry, or None: what the folder sink's manifest says about its run."""
    current = open_table(locate(root))
    found = None if current is None else latest_value(ours(current.history()), "config")
    return found if isinstance(found, dict) else None


__all__ = [
    "CONTRACTS",
    "DeltaLocation",
    "DeltaSink",
    "delta_run_config",
    "delta_watermark",
    "errors_table_uri",
    "is_delta_output",
    "locate",
]
