"""The errors table: the *current* failures of a Delta output, in the sidecar's columns.

Each commit replaces, in one Delta commit (an overwrite with a predicate, deltalake's
`write_deltalake(..., mode="overwrite", predicate=...)`), every row of the IDs the chunk
accounted for by the chunk's new rows: a deal that now arrives leaves the table, one that fails
again keeps its `first_seen` and adds up its `attempts`. Rows of stage `input` (lines of the ID
input that are not IDs) belong to the latest run that read an input, so they are replaced too.
Replaying a commit (a resumed chunk) gives the same table, apart from `attempts`. A local
table is written without deltalake's writer (`files`): appended to, or rewritten whole when
rows of its current failures are replaced.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc

from pipeline.output.delta.files import ParquetOptions, write_files
from pipeline.output.delta.location import DeltaLocation
from pipeline.output.delta.table import OpenTable, arrow_schema, open_table, same_columns
from pipeline.output.sidecar import SIDECAR_SCHEMA, conform, fetch_rows

# Loaded at the first Delta operation, not by a folder-sink run (see `table`).
if TYPE_CHECKING:
    from deltalake import DeltaTable
    from deltalake.transaction import AddAction, RemoveAction

_FILES = ParquetOptions("zstd", 64 * 1024)


def read_errors(where: DeltaLocation) -> pa.Table:
    """The whole errors table (empty when there is none yet)."""
    table = open_table(where)
    if table is None:
        return SIDECAR_SCHEMA.empty_table()
    return conform(table.to_pyarrow_table())


def retryable_ids(where: DeltaLocation) -> list[int]:
    """IDs whose current failure a retry may fix, ascending."""
    fetch = fetch_rows(read_errors(where))
    mask = pc.fill_null(fetch.column("retryable"), False)
    return sorted({int(i) for i in fetch.filter(mask).column("id").to_pylist() if i is not None})


def _carry_over(table: DeltaTable | None, rows: pa.Table) -> pa.Table:
    """New fetch rows keep the earlier `first_seen` and add the earlier `attempts`."""
    fetch = fetch_rows(rows)
    if table is None or fetch.num_rows == 0:
        return rows
    ids = pa.array(sorted({i for i in fetch.column("id").to_pylist() if i is not None}), pa.int64())
    old = table.to_pyarrow_dataset().to_table(
        filter=(pc.field("stage") == "fetch") & pc.field("id").isin(ids)
    )
    before: dict[int, tuple[Any, int]] = {
        int(i): (seen, int(n or 0))
        for i, seen, n in zip(
            old.column("id").to_pylist(),
            old.column("first_seen").to_pylist(),
            old.column("attempts").to_pylist(),
            strict=True,
        )
    }
    if not before:
        return rows
    out = rows.to_pylist()
    for row in out:
        prior = before.get(row["id"]) if row["stage"] == "fetch" else None
        if prior is not None:
            row["first_seen"] = prior[0] or row["first_seen"]
            row["attempts"] = int(row["attempts"] or 0) + prior[1]
    return pa.Table.from_pylist(out, schema=SIDECAR_SCHEMA)


def _predicate(ids: Iterable[int], replace_input: bool) -> str:
    listed = ",".join(str(int(i)) for i in sorted(set(ids)))
    terms = [f"id IN ({listed})"] if listed else []
    if replace_input:
        terms.append("stage = 'input'")
    return " OR ".join(terms)


def replace_failures(where: DeltaLocation, covered: Iterable[int], rows: pa.Table) -> None:
    """Make the failures of the IDs `covered` exactly `rows` (one commit; nothing to do when
    there is neither an old nor a new row)."""
    Failures(where).replace(covered, rows)


class Failures:
    """The errors table of one open sink, kept open across its commits, with the IDs its rows
    hold: a backfill's chunk covers IDs no current failure has, and knowing that without a scan
    keeps each commit's cost flat as the table grows (a scan opens every file of the table)."""

    def __init__(self, where: DeltaLocation) -> None:
        self.where = where
        self._open = OpenTable(where)
        self._version = -1
        self._held: list[pa.Array] = []
        self._input = False

    def _current(self) -> DeltaTable | None:
        """The table at its newest version, indexed again when a commit other than this
        object's own moved it (its own leave `_version` at the table's version)."""
        table = self._open.current()
        if table is not None and table.version() != self._version:
            self._reindex(table)
        return table

    def _reindex(self, table: DeltaTable) -> None:
        """Read which IDs, and whether `input` rows, the table holds (its two small columns)."""
        self._index_from(
            table.to_pyarrow_dataset().to_table(columns=["id", "stage"]), table.version()
        )

    def _index_from(self, rows: pa.Table, version: int) -> None:
        """The index of a table version that holds exactly `rows`."""
        self._held, self._input = [], False
        self._remember(rows)
        self._version = version

    def _committed(self, table: DeltaTable, rows: pa.Table, *, replaced: bool) -> None:
        """Bring the index and the object to this object's own commit of `rows`."""
        table.update_incremental()
        if replaced:
            self._reindex(table)
            return
        self._remember(rows)
        self._version = table.version()

    def _remember(self, rows: pa.Table) -> None:
        ids = pc.drop_null(rows.column("id")).combine_chunks().cast(pa.int64())
        if len(ids):
            self._held.append(ids)
        self._input = self._input or bool(pc.any(pc.equal(rows.column("stage"), "input")).as_py())

    def _holds_any(self, ids: set[int], replace_input: bool) -> bool:
        """True when a current row is one the commit replaces (`_predicate`'s rows)."""
        if replace_input and self._input:
            return True
        if not ids or not self._held:
            return False
        # One lookup over every chunk's IDs hashes `ids` once, not once per committed chunk.
        held = pa.chunked_array(self._held, pa.int64())
        return bool(pc.any(pc.is_in(held, value_set=pa.array(ids, pa.int64()))).as_py())

    def replace(self, covered: Iterable[int], rows: pa.Table) -> None:
        """`replace_failures` on this table."""
        rows = conform(rows)
        replace_input = "input" in set(rows.column("stage").to_pylist())
        ids = set(covered) | {int(i) for i in rows.column("id").to_pylist() if i is not None}
        table = self._current()
        if table is None:
            if rows.num_rows:
                _create(self.where, rows)
                # Its first version holds exactly `rows`: indexed from them rather than read
                # back, which would load pyarrow's dataset, Acero and S3 code (3.8 MB more
                # resident) for IDs already at hand. Another version found later is read.
                self._index_from(rows, 0)
            return
        if not ids and not replace_input:
            return  # `_predicate` would match no row
        replaces = self._holds_any(ids, replace_input)
        if replaces:
            rows = _carry_over(table, rows)
        if self.where.local and same_columns(rows.schema, arrow_schema(table)):
            _replace_local(self.where, table, ids, replace_input, rows, replaces=replaces)
        else:
            from deltalake import write_deltalake

            write_deltalake(table, rows, mode="overwrite", predicate=_predicate(ids, replace_input))
        self._committed(table, rows, replaced=replaces)


def _create(where: DeltaLocation, rows: pa.Table) -> None:
    if not where.local:
        from deltalake import write_deltalake

        write_deltalake(where.uri, rows, mode="append", storage_options=where.storage_options)
        return
    from deltalake import Schema
    from deltalake.transaction import create_table_with_add_actions

    added = write_files(where.uri, rows, [], _FILES)
    create_table_with_add_actions(where.uri, Schema.from_arrow(rows.schema), added, mode="append")


def _replace_local(
    where: DeltaLocation,
    table: DeltaTable,
    ids: set[int],
    replace_input: bool,
    rows: pa.Table,
    *,
    replaces: bool,
) -> None:
    """The predicate overwrite of `replace_failures` without deltalake's writer (see `files`):
    when no current row is replaced (a backfill's chunks cover new IDs) the new rows are
    appended; otherwise the table, small (current failures only), is rewritten whole."""
    if not replaces:
        if rows.num_rows:
            added: list[AddAction | RemoveAction] = [*write_files(where.uri, rows, [], _FILES)]
            table.create_write_transaction(added, mode="append", schema=table.schema())
        return
    replaced = pc.field("id").isin(pa.array(sorted(ids), pa.int64()))
    if replace_input:
        replaced = replaced | (pc.field("stage") == "input")
    kept = table.to_pyarrow_dataset().to_table(filter=~replaced | replaced.is_null())
    rewritten = pa.concat_tables([conform(kept), rows])
    whole: list[AddAction | RemoveAction] = [*write_files(where.uri, rewritten, [], _FILES)]
    table.create_write_transaction(whole, mode="overwrite", schema=table.schema())


__all__ = ["Failures", "read_errors", "replace_failures", "retryable_ids"]
