"""`deal-export compact`: Delta optimize (bin-packing compaction) and vacuum, on the data table
and its errors table.

Vacuum deletes files no version within the retention window still needs. Readers of an older
version (time travel, or a long query started before the compaction) need those files, so the
retention never goes below Delta's default of 7 days (`delta.deletedFileRetentionDuration`,
https://docs.delta.io/latest/delta-utility.html#remove-files-no-longer-referenced-by-a-delta-table)
unless the caller forces it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from pipeline.errors import OutputError, UsageError
from pipeline.output.delta import table
from pipeline.output.delta.commits import ours
from pipeline.output.delta.location import ERRORS_DIR, DeltaLocation, locate
from pipeline.output.delta.sink import lock_root

DEFAULT_RETENTION_HOURS = 7 * 24


@dataclass(frozen=True, slots=True)
class Compacted:
    """What one table's compaction did."""

    name: str
    files_added: int
    files_removed: int
    files_vacuumed: int
    version: int


def check_retention(hours: int, *, force: bool) -> None:
    if hours < 0:
        raise UsageError("--retention-hours must be >= 0")
    if hours < DEFAULT_RETENTION_HOURS and not force:
        raise UsageError(
            f"--retention-hours {hours} is below Delta's default of {DEFAULT_RETENTION_HOURS} "
            "hours: readers of older versions could lose their files; add --force if no such "
            "reader exists"
        )


def _compression(current: Any) -> str:
    """The codec the runs wrote the table with (their commits record it), else zstd."""
    for commit in ours(current.history(limit=50)):
        output = commit.record.get("output")
        if isinstance(output, dict) and output.get("compression"):
            return str(output["compression"])
    return "zstd"


@table.delta_errors
def _compact_one(
    name: str, where: DeltaLocation, hours: int, force: bool, dry_run: bool
) -> Compacted | None:
    current = table.open_table(where)
    if current is None:
        return None
    added = removed = 0
    if not dry_run:
        metrics: dict[str, Any] = current.optimize.compact(
            writer_properties=table.writer_properties(_compression(current), 64 * 1024)
        )
        added = int(metrics.get("numFilesAdded", 0))
        removed = int(metrics.get("numFilesRemoved", 0))
    vacuumed = current.vacuum(
        retention_hours=hours, dry_run=dry_run, enforce_retention_duration=not force
    )
    return Compacted(name, added, removed, len(vacuumed), current.version())


@table.delta_errors
def compact(
    root: str,
    *,
    retention_hours: int = DEFAULT_RETENTION_HOURS,
    force: bool = False,
    dry_run: bool = False,
) -> list[Compacted]:
    """Compact and vacuum the data table at `root` and its errors table."""
    check_retention(retention_hours, force=force)
    where = locate(root)
    if table.open_table(where) is None:
        raise OutputError(
            f"{root} is not a Delta table: compact works on --table-format delta outputs only "
            "(a folder output has no log to compact against)"
        )
    # Under the run lock: a forced short retention must not delete a running export's new files.
    lock = lock_root(root, f"compact-{os.getpid()}")
    try:
        done = [
            _compact_one("data", where, retention_hours, force, dry_run),
            _compact_one("errors", where.child(ERRORS_DIR), retention_hours, force, dry_run),
        ]
    finally:
        lock.release()
    return [d for d in done if d is not None]


__all__ = ["DEFAULT_RETENTION_HOURS", "Compacted", "check_retention", "compact"]
