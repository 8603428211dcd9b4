"""Shared helpers of the deletion tests: a Delta table shaped like the Delta sink's."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
from deltalake import DeltaTable, write_deltalake

TS = pa.timestamp("us", tz="UTC")
EXTRACTED = datetime(2026, 11, 30, 2, 0, tzinfo=UTC)


def deal_rows(ids: Iterable[int], *, deleted: Iterable[int] = (), run_id: str = "r0") -> pa.Table:
    """Rows as the sink writes them (the contract: int64 ID, nullable `_deleted_at`, lineage);
    IDs in `deleted` already carry a mark."""
    ids = list(ids)
    marked = set(deleted)
    return pa.table(
        {
            "ID": pa.array(ids, pa.int64()),
            "TITLE": pa.array([f"deal {i}" for i in ids]),
            "_deleted_at": pa.array([EXTRACTED if i in marked else None for i in ids], TS),
            "_run_id": pa.array([run_id] * len(ids)),
            "_extracted_at": pa.array([EXTRACTED] * len(ids), TS),
        }
    )


def make_table(path: Path, ids: Iterable[int], *, deleted: Iterable[int] = ()) -> str:
    uri = str(path)
    write_deltalake(uri, deal_rows(ids, deleted=deleted))
    return uri


def rows_by_id(uri: str) -> dict[int, datetime | None]:
    """`ID -> _deleted_at` of every row of the table."""
    table = DeltaTable(uri).to_pyarrow_table(columns=["ID", "_deleted_at"])
    return dict(
        zip(table.column("ID").to_pylist(), table.column("_deleted_at").to_pylist(), strict=True)
    )


def live_ids(uri: str) -> list[int]:
    return sorted(i for i, mark in rows_by_id(uri).items() if mark is None)
