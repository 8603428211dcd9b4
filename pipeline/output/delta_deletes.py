"""Deletions on a Delta table of deals: read its IDs cheaply, mark or remove rows in one commit.

    ids = read_table_ids("out/")                      # live and marked IDs (two columns read)
    applied = apply_deletions("out/", deleted=[...], restored=[...], hard=False,
                              now=datetime.now(UTC), run_id="...")

The table is the Delta sink's: keyed by int64 `ID`, with a nullable `_deleted_at` (timestamp us,
UTC) that is null for live rows. A soft deletion sets `_deleted_at` on live rows only (a row
already marked keeps its first date); `hard=True` deletes the rows instead. A restored deal
(marked, yet listed again) gets its mark cleared. Everything happens in ONE merge, so one Delta
commit, which carries `{"deal_export_operation": "reconcile", "run_id": ..., "deleted": n}` in
its metadata. (`operation` itself is a key delta-rs writes and refuses to take.) Nothing to
change means no commit at all.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

import pyarrow as pa
import pyarrow.compute as pc

from pipeline.errors import OutputError
from pipeline.output.delta.table import delta_error

# `run` imports this module (through `reconcile`) for every sink; deltalake loads at the first
# Delta operation (see `pipeline.output.delta.table`).
if TYPE_CHECKING:
    from deltalake import CommitProperties, DeltaTable

ID: Final = "ID"
DELETED_AT: Final = "_deleted_at"
DELETED_AT_TYPE: Final = pa.timestamp("us", tz="UTC")
#: The metadata key naming what a commit of ours did; delta-rs reserves `operation`.
OPERATION_KEY: Final = "deal_export_operation"
RECONCILE: Final = "reconcile"

_SOURCE, _TARGET = "s", "t"
_DELETE = "_delete"


@dataclass(frozen=True, slots=True)
class TableIds:
    """The table's IDs: `live` rows (`_deleted_at` null) and rows `deleted` (marked)."""

    live: pa.Array
    deleted: pa.Array


@dataclass(frozen=True, slots=True)
class AppliedDeletions:
    """What the commit changed; `version` is the table version it made (None: no commit)."""

    marked: int
    removed: int
    restored: int
    version: int | None


def open_table(uri: str, storage_options: Mapping[str, str] | None = None) -> DeltaTable:
    """The Delta table at `uri`, or an OutputError saying why deletions cannot be tracked."""
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError

    options = dict(storage_options or {})
    try:
        table = DeltaTable(uri, storage_options=options or None)
    except TableNotFoundError:
        raise OutputError(
            f"{uri} is not a Delta table (no _delta_log): tracking deletions needs the Delta "
            "sink (deal-export run --table-format delta --out ...); a folder export keeps each "
            "run's rows as they were"
        ) from None
    except (delta_error(), OSError) as exc:
        raise OutputError(f"cannot open the Delta table {uri}: {_first_line(exc)}") from None
    _check_columns(uri, table)
    return table


def _check_columns(uri: str, table: DeltaTable) -> None:
    schema = pa.schema(table.schema().to_arrow())
    for name, kinds in ((ID, "an integer"), (DELETED_AT, "a timestamp")):
        if name not in schema.names:
            raise OutputError(
                f"the Delta table {uri} has no {name} column; it was not written by the Delta "
                "sink of deal-export"
            )
        col_type = schema.field(name).type
        ok = pa.types.is_integer(col_type) if name == ID else pa.types.is_timestamp(col_type)
        if not ok:
            raise OutputError(f"the Delta table {uri}: {name} is {col_type}, expected {kinds}")


def read_table_ids(uri: str, storage_options: Mapping[str, str] | None = None) -> TableIds:
    """Live and marked IDs of the table, reading only the `ID` and `_deleted_at` columns."""
    table = open_table(uri, storage_options)
    ids = table.to_pyarrow_dataset().to_table(columns=[ID, DELETED_AT])
    id_col = ids.column(ID).combine_chunks().cast(pa.int64())
    live = pc.is_null(ids.column(DELETED_AT).combine_chunks())
    return TableIds(live=id_col.filter(live), deleted=id_col.filter(pc.invert(live)))


def apply_deletions(
    uri: str,
    *,
    deleted: Sequence[int],
    restored: Sequence[int] = (),
    hard: bool = False,
    now: datetime,
    run_id: str,
    storage_options: Mapping[str, str] | None = None,
) -> AppliedDeletions:
    """Mark (or with `hard` remove) the `deleted` IDs and clear the mark of `restored` ones, in
    one commit. `now` must be time-zone aware; it is stored in UTC."""
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("the deletion time needs a time zone")
    overlap = set(deleted) & set(restored)
    if overlap:
        raise ValueError(f"IDs both deleted and restored: {sorted(overlap)[:5]}")
    if not deleted and not restored:
        return AppliedDeletions(0, 0, 0, None)
    table = open_table(uri, storage_options)
    source = _source(deleted, restored, now.astimezone(UTC))
    metadata: dict[str, Any] = {
        OPERATION_KEY: RECONCILE,
        "run_id": run_id,
        "deleted": len(deleted),
        "restored": len(restored),
        "hard": hard,
    }
    merger = table.merge(
        source,
        predicate=f'{_TARGET}."{ID}" = {_SOURCE}."{ID}"',
        source_alias=_SOURCE,
        target_alias=_TARGET,
        commit_properties=_commit_properties(metadata),
    )
    if hard:
        merger = merger.when_matched_delete(predicate=f"{_SOURCE}.{_DELETE}")
    else:
        # A row already marked keeps the date it was first seen gone.
        merger = merger.when_matched_update(
            updates={DELETED_AT: f"{_SOURCE}.{DELETED_AT}"},
            predicate=f"{_SOURCE}.{_DELETE} AND {_TARGET}.{DELETED_AT} IS NULL",
        )
    merger = merger.when_matched_update(
        updates={DELETED_AT: f"{_SOURCE}.{DELETED_AT}"},
        predicate=f"NOT {_SOURCE}.{_DELETE} AND {_TARGET}.{DELETED_AT} IS NOT NULL",
    )
    try:
        metrics = merger.execute()
    except (delta_error(), OSError) as exc:
        raise OutputError(f"cannot apply deletions to {uri}: {_first_line(exc)}") from None
    return _applied(metrics, hard, len(restored), table.version())


def _commit_properties(metadata: dict[str, Any]) -> CommitProperties:
    from deltalake import CommitProperties

    return CommitProperties(custom_metadata=metadata)


def _source(deleted: Sequence[int], restored: Sequence[int], now: datetime) -> pa.Table:
    """One source row per changed ID: the value `_deleted_at` takes, and whether it goes."""
    n_del, n_res = len(deleted), len(restored)
    return pa.table(
        {
            ID: pa.array([*deleted, *restored], pa.int64()),
            DELETED_AT: pa.array([now] * n_del + [None] * n_res, DELETED_AT_TYPE),
            _DELETE: pa.array([True] * n_del + [False] * n_res, pa.bool_()),
        }
    )


def _applied(
    metrics: Mapping[str, Any], hard: bool, restored_asked: int, version: int
) -> AppliedDeletions:
    updated = int(metrics.get("num_target_rows_updated", 0))
    removed = int(metrics.get("num_target_rows_deleted", 0))
    # Updates count marks and restores together; a restore matches only a marked row, and
    # every restored ID was read as marked, so the split is exact unless another writer raced.
    restored = min(restored_asked, updated)
    marked = 0 if hard else updated - restored
    changed = updated + removed
    return AppliedDeletions(marked, removed, restored, version if changed else None)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


__all__ = [
    "DELETED_AT",
    "DELETED_AT_TYPE",
    "ID",
    "OPERATION_KEY",
    "RECONCILE",
    "AppliedDeletions",
    "TableIds",
    "apply_deletions",
    "open_table",
    "read_table_ids",
]
