"""The error sidecar: one row per ID (or input line, or bad value) that did not make it cleanly.

Fixed schema (`SIDECAR_SCHEMA`), one Parquet file per chunk under `_errors/`:

    id           int64       the deal ID; null for an input line that is not a valid ID
    line         int64       input line number (1-based) for stage `input`; null otherwise
    stage        string      `input` | `fetch` | `normalise`
    code         string      portal error code or ours (`INVALID_ID`, `BAD_VALUE`, ...)
    message      string      human-readable, never contains secrets
    http_status  int32       HTTP status of the last attempt, if any
    attempts     int32       fetch attempts spent on this ID so far (all runs)
    retryable    bool        `deal-export retry` will try this ID again
    error_class  string      `permanent` | `transient` | `limit` | `fatal` for fetch rows
    field        string      the field that failed to convert (stage `normalise`)
    raw_value    string      the offending value or input line, as text
    first_seen   timestamp[us, UTC]
    last_seen    timestamp[us, UTC]
    run_id       string      the run that last wrote this row

Accounting: every requested ID is in the data XOR in exactly one `fetch` row; every invalid input
line is one `input` row. `normalise` rows describe values of deals whose row IS in the data.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from pipeline.errors import OutputError
from pipeline.outcomes import DealFailed, InvalidInput, RecordError

STAGES = ("input", "fetch", "normalise")

SIDECAR_SCHEMA = pa.schema(
    [
        pa.field("id", pa.int64()),
        pa.field("line", pa.int64()),
        pa.field("stage", pa.string(), nullable=False),
        pa.field("code", pa.string()),
        pa.field("message", pa.string()),
        pa.field("http_status", pa.int32()),
        pa.field("attempts", pa.int32()),
        pa.field("retryable", pa.bool_()),
        pa.field("error_class", pa.string()),
        pa.field("field", pa.string()),
        pa.field("raw_value", pa.string()),
        pa.field("first_seen", pa.timestamp("us", tz="UTC")),
        pa.field("last_seen", pa.timestamp("us", tz="UTC")),
        pa.field("run_id", pa.string()),
    ]
)

ErrorRow = dict[str, Any]

_SEEN_TYPE = SIDECAR_SCHEMA.field("first_seen").type


def failed_row(failure: DealFailed, *, run_id: str, seen: datetime) -> ErrorRow:
    """A `fetch` row for an ID the portal did not deliver."""
    return {
        "id": failure.id,
        "stage": "fetch",
        "code": failure.code,
        "message": failure.message,
        "http_status": failure.http_status,
        "attempts": failure.attempts,
        "retryable": failure.retryable,
        "error_class": failure.error_class,
        "first_seen": seen,
        "last_seen": seen,
        "run_id": run_id,
    }


def failed_table(failures: Sequence[DealFailed], *, run_id: str, seen: datetime) -> pa.Table:
    """The `fetch` rows of `failures` (in their order) as a sidecar table: the rows
    `failed_row` makes, built a column at a time instead of a dict per failure."""
    n = len(failures)
    seen_at = pa.repeat(pa.scalar(seen, _SEEN_TYPE), n)
    columns = {
        "id": pa.array([f.id for f in failures], pa.int64()),
        "stage": pa.repeat(pa.scalar("fetch", pa.string()), n),
        "code": pa.array([f.code for f in failures], pa.string()),
        "message": pa.array([f.message for f in failures], pa.string()),
        "http_status": pa.array([f.http_status for f in failures], pa.int32()),
        "attempts": pa.array([f.attempts for f in failures], pa.int32()),
        "retryable": pa.array([f.retryable for f in failures], pa.bool_()),
        "error_class": pa.array([f.error_class for f in failures], pa.string()),
        "first_seen": seen_at,
        "last_seen": seen_at,
        "run_id": pa.repeat(pa.scalar(run_id, pa.string()), n),
    }
    arrays = [columns[f.name] if f.name in columns else pa.nulls(n, f.type) for f in SIDECAR_SCHEMA]
    return pa.Table.from_arrays(arrays, schema=SIDECAR_SCHEMA)


def record_error_row(error: RecordError, *, run_id: str, seen: datetime) -> ErrorRow:
    """A `normalise` row for one value that could not be converted (the deal row is in the data)."""
    return {
        "id": error.id,
        "stage": "normalise",
        "code": "BAD_VALUE",
        "message": error.reason,
        "retryable": False,
        "field": error.field,
        "raw_value": error.raw_value,
        "first_seen": seen,
        "last_seen": seen,
        "run_id": run_id,
    }


def invalid_input_row(invalid: InvalidInput, *, run_id: str, seen: datetime) -> ErrorRow:
    """An `input` row for a line that is not a valid deal ID."""
    return {
        "line": invalid.line,
        "stage": "input",
        "code": "INVALID_ID",
        "message": invalid.reason,
        "retryable": False,
        "raw_value": invalid.raw,
        "first_seen": seen,
        "last_seen": seen,
        "run_id": run_id,
    }


def sidecar_table(rows: Iterable[Mapping[str, Any]]) -> pa.Table:
    """Rows (dicts with any subset of the columns) as a table of exactly `SIDECAR_SCHEMA`."""
    materialised = list(rows)
    columns = {
        f.name: pa.array([r.get(f.name) for r in materialised], type=f.type) for f in SIDECAR_SCHEMA
    }
    return conform(pa.table(columns))


def with_rows(table: pa.Table, rows: Iterable[Mapping[str, Any]]) -> pa.Table:
    """A sidecar table with more rows (dicts, as `sidecar_table` takes them) after its own."""
    return pa.concat_tables([conform(table), sidecar_table(rows)])


def as_sidecar(rows: pa.Table | Iterable[Mapping[str, Any]] | None) -> pa.Table:
    """Sidecar rows as given to a commit (a table, dicts, or nothing) as a conformed table."""
    return conform(rows if isinstance(rows, pa.Table) else sidecar_table(rows or []))


def conform(table: pa.Table | None) -> pa.Table:
    """Cast a sidecar table to the fixed schema (missing columns become null) and validate it."""
    if table is None:
        return SIDECAR_SCHEMA.empty_table()
    out = table if table.schema.equals(SIDECAR_SCHEMA, check_metadata=True) else _cast(table)
    stages = set(pc.unique(out.column("stage")).to_pylist())
    if not stages <= set(STAGES):
        bad = sorted(map(str, stages - set(STAGES)))
        raise OutputError(f"error sidecar has unknown stages: {bad}")
    return out


def _cast(table: pa.Table) -> pa.Table:
    extra = set(table.column_names) - set(SIDECAR_SCHEMA.names)
    if extra:
        raise OutputError(f"error sidecar has unknown columns: {sorted(extra)}")
    arrays = []
    for f in SIDECAR_SCHEMA:
        if f.name in table.column_names:
            arrays.append(table.column(f.name).cast(f.type))
        else:
            arrays.append(pa.nulls(table.num_rows, f.type))
    return pa.Table.from_arrays(arrays, schema=SIDECAR_SCHEMA)


def fetch_rows(table: pa.Table) -> pa.Table:
    """The `fetch` rows of a sidecar table: the IDs the portal did not deliver."""
    return table.filter(pc.equal(table.column("stage"), "fetch"))


def failure_reasons(fetch: pa.Table) -> dict[str, dict[str, int]]:
    """Fetch failures by exact reason (the portal's code, else its message), split by whether a
    retry may pass: what the run's verdict needs, whichever session wrote the chunk."""
    out: dict[str, Counter[str]] = {"permanent": Counter(), "retryable": Counter()}
    rows = zip(
        fetch.column("code").to_pylist(),
        fetch.column("message").to_pylist(),
        fetch.column("retryable").to_pylist(),
        strict=True,
    )
    for code, message, retryable in rows:
        out["retryable" if retryable else "permanent"][str(code or message or "")] += 1
    return {k: dict(v) for k, v in out.items()}


def summarise(table: pa.Table) -> dict[str, Any]:
    """What a checkpoint records about its sidecar: rows by stage, failures by class and by
    exact reason, and how many a retry may fix."""
    fetch = fetch_rows(table)
    return {
        "by_stage": dict(Counter(table.column("stage").to_pylist())),
        "failed_by_class": dict(Counter(str(c) for c in fetch.column("error_class").to_pylist())),
        "retryable": sum(1 for r in fetch.column("retryable").to_pylist() if r),
        "failed_by_reason": failure_reasons(fetch),
    }


__all__ = [
    "SIDECAR_SCHEMA",
    "STAGES",
    "ErrorRow",
    "as_sidecar",
    "conform",
    "failed_row",
    "failed_table",
    "failure_reasons",
    "fetch_rows",
    "invalid_input_row",
    "record_error_row",
    "sidecar_table",
    "summarise",
    "with_rows",
]
