"""The columns a Delta row carries beyond the deal's own, and the derived partition column. Pure.

Lineage: `_run_id` (the run that wrote the row's current version) and `_extracted_at` (when it
was fetched, UTC) are added here when the incoming table lacks them, so the table has them
whichever stage upstream adds them. `_deleted_at` is null on every upsert: a deal that comes back
after being marked deleted is live again.
"""

from __future__ import annotations

from datetime import datetime

import pyarrow as pa
import pyarrow.compute as pc

from pipeline.errors import OutputError
from pipeline.output.partition import DATE_FORMATS, PartitionSpec, date_parts

RUN_ID = "_run_id"
EXTRACTED_AT = "_extracted_at"
DELETED_AT = "_deleted_at"
UTC_US = pa.timestamp("us", tz="UTC")


def with_lineage(table: pa.Table, run_id: str, extracted_at: datetime) -> pa.Table:
    """`table` with `_run_id` and `_extracted_at` (kept if present) and a null `_deleted_at`."""
    rows = table.num_rows
    if RUN_ID not in table.column_names:
        # One scalar repeated: a list of `rows` Python objects converts each one (~3 ms a chunk).
        table = table.append_column(
            pa.field(RUN_ID, pa.string()), pa.repeat(pa.scalar(run_id, pa.string()), rows)
        )
    if EXTRACTED_AT not in table.column_names:
        stamp = pa.repeat(pa.scalar(extracted_at, UTC_US), rows)
        table = table.append_column(pa.field(EXTRACTED_AT, UTC_US), stamp)
    else:
        index = table.column_names.index(EXTRACTED_AT)
        table = table.set_column(index, EXTRACTED_AT, table.column(EXTRACTED_AT).cast(UTC_US))
    nulls = pa.nulls(rows, UTC_US)
    if DELETED_AT in table.column_names:
        return table.set_column(table.column_names.index(DELETED_AT), DELETED_AT, nulls)
    return table.append_column(pa.field(DELETED_AT, UTC_US), nulls)


def partition_values(column: pa.ChunkedArray, spec: PartitionSpec) -> pa.Array:
    """The partition key of each row as text (null for a null or empty value), named and
    formatted as the folder sink's directories are (`DATE_CREATE_month` = `2024-08`)."""
    typ = column.type
    if spec.transform in DATE_FORMATS:
        if not (pa.types.is_timestamp(typ) or pa.types.is_date(typ)):
            raise OutputError(f"partition transform {spec.transform!r} needs a date or time column")
        # Formatted once per distinct date, as the folder sink's directories are named.
        indices, texts = date_parts(column.combine_chunks(), spec.transform)
        values = pa.chunked_array([pc.take(texts, indices)])
    elif pa.types.is_boolean(typ):
        values = pc.if_else(column, "true", "false")
    elif pa.types.is_nested(typ):
        raise OutputError(f"cannot partition by {spec.column}: {typ} is not a scalar type")
    else:
        values = pc.cast(column, pa.string())
    empty = pc.equal(values, "")
    return pc.if_else(
        pc.fill_null(empty, False), pa.scalar(None, pa.string()), values
    ).combine_chunks()


def with_partition_column(table: pa.Table, spec: PartitionSpec) -> pa.Table:
    """`table` plus the derived partition column `spec.key`; unchanged when unpartitioned."""
    if spec.key is None or spec.column is None:
        return table
    if spec.column not in table.column_names:
        raise OutputError(f"partition column {spec.column} is not in the data")
    if spec.key in table.column_names:
        raise OutputError(f"partition key {spec.key} clashes with a data column of that name")
    values = partition_values(table.column(spec.column), spec)
    return table.append_column(pa.field(spec.key, pa.string()), values)


def delta_rows(
    table: pa.Table, spec: PartitionSpec, run_id: str, extracted_at: datetime
) -> pa.Table:
    """A chunk's normalised deals as the Delta table stores them."""
    return with_partition_column(with_lineage(table, run_id, extracted_at), spec)


__all__ = [
    "DELETED_AT",
    "EXTRACTED_AT",
    "RUN_ID",
    "UTC_US",
    "delta_rows",
    "partition_values",
    "with_lineage",
    "with_partition_column",
]
