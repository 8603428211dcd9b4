"""Writes to the data table: the first load appends, later loads MERGE on `ID`, and every write
is one Delta commit carrying the run state (`commits.encode`)."""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

import pyarrow as pa

from pipeline.errors import OutputError
from pipeline.output.delta.commits import encode
from pipeline.output.delta.location import DeltaLocation

# deltalake (and the arro3 it loads) costs ~18 MB and ~0.1 s to import: a run to a folder output
# imports this module yet never writes Delta, so deltalake loads at the first Delta operation.
if TYPE_CHECKING:
    from deltalake import CommitProperties, DeltaTable, WriterProperties

ID_COLUMN = "ID"

_P = ParamSpec("_P")
_R = TypeVar("_R")


def delta_error() -> type[Exception]:
    """deltalake's base exception, importing deltalake (for an `except` clause, which evaluates
    it only when something was raised)."""
    from deltalake.exceptions import DeltaError

    return DeltaError


def delta_errors(fn: Callable[_P, _R]) -> Callable[_P, _R]:
    """A failed Delta operation (store unreachable, disk full, a conflicting writer, a schema
    the table refuses) becomes a one-line OutputError, never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return fn(*args, **kwargs)
        except (delta_error(), OSError) as exc:
            text = " ".join(str(exc).split())[:400]
            raise OutputError(f"Delta table write failed: {type(exc).__name__}: {text}") from exc

    return wrapper


_CODECS: dict[str, Any] = {
    "zstd": "ZSTD",
    "snappy": "SNAPPY",
    "gzip": "GZIP",
    "lz4": "LZ4_RAW",
    "brotli": "BROTLI",
    "none": "UNCOMPRESSED",
}


def writer_properties(compression: str, max_rows_per_group: int) -> WriterProperties:
    """The Parquet settings of the folder sink (`output.compression`, row group size), for the
    files Delta writes."""
    from deltalake import WriterProperties

    return WriterProperties(
        compression=_CODECS.get(compression, "ZSTD"), max_row_group_size=max_rows_per_group
    )


def open_table(where: DeltaLocation) -> DeltaTable | None:
    """The table, or None when there is none at `where` yet."""
    from deltalake import DeltaTable

    if not DeltaTable.is_deltatable(where.uri, storage_options=where.storage_options):
        return None
    return DeltaTable(where.uri, storage_options=where.storage_options)


def arrow_schema(table: DeltaTable) -> pa.Schema:
    return pa.schema(table.schema().to_arrow())


def _props(record: Mapping[str, Any]) -> CommitProperties:
    from deltalake import CommitProperties

    return CommitProperties(custom_metadata=encode(record))


def create(
    where: DeltaLocation,
    rows: pa.Table,
    partition_by: list[str],
    record: Mapping[str, Any],
    writer: WriterProperties,
) -> None:
    """The table's first commit: its rows, partitioning and the run state together."""
    from deltalake import write_deltalake

    write_deltalake(
        where.uri,
        rows,
        mode="append",
        partition_by=partition_by or None,
        storage_options=where.storage_options,
        writer_properties=writer,
        commit_properties=_props(record),
    )


def append(
    table: DeltaTable,
    rows: pa.Table,
    record: Mapping[str, Any],
    *,
    new_columns: bool,
    writer: WriterProperties,
) -> None:
    """Rows no version of the table holds yet (the first load): a plain append."""
    from deltalake import write_deltalake

    write_deltalake(
        table,
        rows,
        mode="append",
        schema_mode="merge" if new_columns else None,
        writer_properties=writer,
        commit_properties=_props(record),
    )


def upsert(
    table: DeltaTable,
    rows: pa.Table,
    record: Mapping[str, Any],
    *,
    new_columns: bool,
    writer: WriterProperties,
) -> None:
    """Update the deals whose ID the table holds, insert the others: replaying it is harmless."""
    (
        table.merge(
            rows,
            f't."{ID_COLUMN}" = s."{ID_COLUMN}"',
            source_alias="s",
            target_alias="t",
            merge_schema=new_columns,
            writer_properties=writer,
            commit_properties=_props(record),
        )
        .when_matched_update_all()
        .when_not_matched_insert_all()
        .execute()
    )


def mark(table: DeltaTable, record: Mapping[str, Any]) -> None:
    """A commit with no data change: it only carries the run state (a chunk of failures only,
    or the end of a run)."""
    table.create_write_transaction(
        [],
        mode="append",
        schema=table.schema(),
        partition_by=list(table.metadata().partition_columns) or None,
        commit_properties=_props(record),
    )


def rewrite(
    table: DeltaTable,
    rows: pa.Table,
    record: Mapping[str, Any],
    writer: WriterProperties,
) -> None:
    """Replace the whole table with `rows` and their schema (schema evolution of a type)."""
    from deltalake import write_deltalake

    write_deltalake(
        table,
        rows,
        mode="overwrite",
        schema_mode="overwrite",
        partition_by=list(table.metadata().partition_columns) or None,
        writer_properties=writer,
        commit_properties=_props(record),
    )


__all__ = [
    "ID_COLUMN",
    "append",
    "arrow_schema",
    "create",
    "delta_error",
    "delta_errors",
    "mark",
    "open_table",
    "rewrite",
    "upsert",
    "writer_properties",
]
