"""Writes to the data table: the first load appends, later loads MERGE on `ID`, and every write
is one Delta commit carrying the run state (`commits.encode`)."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar
from urllib.parse import unquote, urlsplit

import pyarrow as pa

from pipeline.errors import OutputError
from pipeline.output.delta.commits import encode
from pipeline.output.delta.files import STATS_PROPERTIES, ParquetOptions, write_files
from pipeline.output.delta.location import DeltaLocation

# deltalake (and the arro3 it loads) costs ~18 MB and ~0.1 s to import: a run to a folder output
# imports this module yet never writes Delta, so deltalake loads at the first Delta operation.
if TYPE_CHECKING:
    from deltalake import CommitProperties, DeltaTable, WriterProperties
    from deltalake.transaction import AddAction, RemoveAction

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
            raise OutputError(f"Delta table operation failed: {_one_line(exc)}") from exc

    return wrapper


#: Terminal colours deltalake's error chains carry (`↳` lines in red).
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
#: Where the native stack trace deltalake's kernel errors append begins (its frame 0).
_FRAMES = re.compile(r"\n\s*(?:Stack backtrace:|0: )")


def _one_line(exc: BaseException) -> str:
    """`exc` as one line: without terminal colours or the native stack trace, and at most 400
    characters."""
    text = _FRAMES.split(_ANSI.sub("", str(exc)), maxsplit=1)[0]
    return f"{type(exc).__name__}: {' '.join(text.split())[:400]}"


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


@dataclass(frozen=True, slots=True)
class Writer:
    """The Parquet settings of the data files, for either writer: pyarrow's (`files`, local
    appends) or deltalake's (`properties()`, merges and remote tables)."""

    compression: str
    max_rows_per_group: int

    @property
    def files(self) -> ParquetOptions:
        return ParquetOptions(self.compression, self.max_rows_per_group)

    def properties(self) -> WriterProperties:
        return writer_properties(self.compression, self.max_rows_per_group)


def open_table(where: DeltaLocation) -> DeltaTable | None:
    """The table, or None when there is none at `where` yet."""
    from deltalake import DeltaTable

    if not DeltaTable.is_deltatable(where.uri, storage_options=where.storage_options):
        return None
    return DeltaTable(where.uri, storage_options=where.storage_options)


#: Versions between the checkpoints a session writes itself. An open table object keeps the log
#: entries since the checkpoint it last loaded, and every commit and update through it works
#: over all of them, so a session's commits get dearer until deltalake's own post-commit
#: checkpoint (deltalake `PostCommitHookProperties`: "created based on the
#: delta.checkpointInterval config setting"; our tables set none, and deltalake 1.6 wrote the
#: first one at version 100).
#: Measured on a local table with 10 files per commit: commit plus update 4 ms just after a
#: checkpoint, 25 ms 80 versions later. A checkpoint adds no commit: the log's versions and
#: actions stay exactly what they were.
CHECKPOINT_EVERY = 10


class OpenTable:
    """One Delta table kept open across a session's commits: reopening it at every commit
    would replay its log from the last checkpoint each time. `current` brings it up to date
    (`update_incremental` reads only the log entries since the object's version), and once
    CHECKPOINT_EVERY versions have passed the last checkpoint this session relies on, writes
    one and loads the table again from it, as only a freshly loaded object starts from one."""

    def __init__(self, where: DeltaLocation, table: DeltaTable | None = None) -> None:
        self.where = where
        self._table = table
        self._checked = table.version() if table is not None else 0

    def current(self) -> DeltaTable | None:
        """The table at its newest version, or None while there is none at `where`."""
        table = self._table
        if table is None:
            return self.reopen()
        table.update_incremental()
        version = table.version()
        if version - self._checked >= CHECKPOINT_EVERY:
            table.create_checkpoint()
            self._table = self._load()
            self._checked = version
        return self._table

    def reopen(self) -> DeltaTable | None:
        """The table loaded afresh (after it was created through another object)."""
        self._table = open_table(self.where)
        self._checked = self._table.version() if self._table is not None else 0
        return self._table

    def _load(self) -> DeltaTable:
        from deltalake import DeltaTable

        return DeltaTable(self.where.uri, storage_options=self.where.storage_options)


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
    writer: Writer,
) -> None:
    """The table's first commit: its rows, partitioning and the run state together."""
    if where.local:
        from deltalake import Schema
        from deltalake.transaction import create_table_with_add_actions

        create_table_with_add_actions(
            where.uri,
            Schema.from_arrow(rows.schema),
            write_files(where.uri, rows, partition_by, writer.files),
            mode="append",
            partition_by=partition_by or None,
            configuration=STATS_PROPERTIES,
            commit_properties=_props(record),
        )
        return
    from deltalake import write_deltalake

    write_deltalake(
        where.uri,
        rows,
        mode="append",
        partition_by=partition_by or None,
        storage_options=where.storage_options,
        writer_properties=writer.properties(),
        configuration=STATS_PROPERTIES,
        commit_properties=_props(record),
    )


def declare_stats(table: DeltaTable) -> None:
    """Give a table made before its creation set STATS_PROPERTIES that property (one metadata
    commit), so readers stop taking the missing min/max of other columns as a range no row
    falls in (see `files.STATS_PROPERTIES`)."""
    configuration = table.metadata().configuration or {}
    if any(configuration.get(key) != value for key, value in STATS_PROPERTIES.items()):
        table.alter.set_table_properties(dict(STATS_PROPERTIES), raise_if_not_exists=False)


def _local_root(table: DeltaTable) -> str | None:
    """The directory of a table on the local filesystem; None for an object store."""
    uri = table.table_uri
    if not uri.startswith("file://"):
        return None if "://" in uri else uri
    return unquote(urlsplit(uri).path)


def same_columns(rows: pa.Schema, table: pa.Schema) -> bool:
    """True when `rows` has exactly the table's columns and types (in any order)."""
    have = {f.name: f.type for f in rows}
    return len(have) == len(table) and all(have.get(f.name) == f.type for f in table)


def append(
    table: DeltaTable,
    rows: pa.Table,
    record: Mapping[str, Any],
    *,
    new_columns: bool,
    writer: Writer,
) -> None:
    """Rows no version of the table holds yet (the first load): a plain append. Into a local
    table with the same columns, as pyarrow-written files (`files`); a change of columns goes
    through deltalake's writer, which evolves the table's schema."""
    from deltalake import write_deltalake

    root = _local_root(table)
    if root is not None and same_columns(rows.schema, arrow_schema(table)):
        partition_by = list(table.metadata().partition_columns)
        added: list[AddAction | RemoveAction] = [
            *write_files(root, rows, partition_by, writer.files)
        ]
        table.create_write_transaction(
            added,
            mode="append",
            schema=table.schema(),
            partition_by=partition_by or None,
            commit_properties=_props(record),
        )
        return
    write_deltalake(
        table,
        rows,
        mode="append",
        schema_mode="merge" if new_columns else None,
        writer_properties=writer.properties(),
        commit_properties=_props(record),
    )


def upsert(
    table: DeltaTable,
    rows: pa.Table,
    record: Mapping[str, Any],
    *,
    new_columns: bool,
    writer: Writer,
) -> None:
    """Update the deals whose ID the table holds, insert the others: replaying it is harmless."""
    (
        table.merge(
            rows,
            f't."{ID_COLUMN}" = s."{ID_COLUMN}"',
            source_alias="s",
            target_alias="t",
            merge_schema=new_columns,
            writer_properties=writer.properties(),
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
    writer: Writer,
) -> None:
    """Replace the whole table with `rows` and their schema (schema evolution of a type)."""
    from deltalake import write_deltalake

    write_deltalake(
        table,
        rows,
        mode="overwrite",
        schema_mode="overwrite",
        partition_by=list(table.metadata().partition_columns) or None,
        writer_properties=writer.properties(),
        commit_properties=_props(record),
    )


__all__ = [
    "CHECKPOINT_EVERY",
    "ID_COLUMN",
    "OpenTable",
    "Writer",
    "append",
    "arrow_schema",
    "create",
    "declare_stats",
    "delta_error",
    "delta_errors",
    "mark",
    "open_table",
    "rewrite",
    "same_columns",
    "upsert",
    "writer_properties",
]
