"""Lineage columns: which run extracted each row, and when. Pure, no I/O.

Every sink gets them from the one path that builds chunk tables (`pipeline.run._chunk_tables`),
in the spirit of dlt's `_dlt_load_id` and Airbyte's `_airbyte_extracted_at`. They describe the
extraction, not the portal's schema: fingerprints and drift checks leave them out.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pyarrow as pa

RUN_ID_COLUMN = "_run_id"
EXTRACTED_AT_COLUMN = "_extracted_at"
EXTRACTED_AT_TYPE = pa.timestamp("us", tz="UTC")
LINEAGE_FIELDS = (
    pa.field(RUN_ID_COLUMN, pa.string(), nullable=False),
    pa.field(EXTRACTED_AT_COLUMN, EXTRACTED_AT_TYPE, nullable=False),
)
LINEAGE_COLUMNS = frozenset(f.name for f in LINEAGE_FIELDS)


def with_lineage(table: pa.Table, run_id: str, extracted_at: datetime) -> pa.Table:
    """`table` with the two lineage columns appended (replaced if already there)."""
    at = extracted_at.astimezone(UTC)
    n = table.num_rows
    # One value per table: repeated in C++, not converted once per row from Python objects.
    columns = {
        RUN_ID_COLUMN: pa.repeat(pa.scalar(run_id, pa.string()), n),
        EXTRACTED_AT_COLUMN: pa.repeat(pa.scalar(at, EXTRACTED_AT_TYPE), n),
    }
    for field in LINEAGE_FIELDS:
        if field.name in table.column_names:
            table = table.drop_columns([field.name])
        table = table.append_column(field, columns[field.name])
    return table


def without_lineage(schema: pa.Schema) -> pa.Schema:
    """The schema of the deals alone, as fingerprints compare it."""
    return pa.schema([f for f in schema if f.name not in LINEAGE_COLUMNS], metadata=schema.metadata)


__all__ = [
    "EXTRACTED_AT_COLUMN",
    "LINEAGE_COLUMNS",
    "LINEAGE_FIELDS",
    "RUN_ID_COLUMN",
    "with_lineage",
    "without_lineage",
]
