"""Data files of a local Delta table written by pyarrow, committed as `add` actions.

deltalake's own writer (`write_deltalake`) runs every write through DataFusion: one tiny write
makes the process touch some 45 MB more of deltalake's library code and its working memory, so
a run to the Delta sink peaked at twice the folder sink's memory. Writing a chunk's Parquet
files with pyarrow (already loaded for the folder sink) and committing them with
`create_write_transaction` / `create_table_with_add_actions` (deltalake's "bring your own
files" API) keeps only the log code of deltalake in use. The files are encoded as the folder
sink's are (`pipeline.output.encode.Encoding`), into memory, without `pyarrow.parquet`: that
module imports `pyarrow.fs` and its S3 binding, 2.7 MB more resident for a local table. Remote
tables keep deltalake's writer: these files are written through the local filesystem only.

Layout follows delta-rs: `<key>=<value>/part-<n>-<uuid>-c000.<codec>.parquet`, the value
percent-encoded in the directory name (null: `__HIVE_DEFAULT_PARTITION__`). The add action takes
that on-disk relative path as is: deltalake percent-encodes it once more for the log, whose
`add.path` is a URI (delta-io/delta PROTOCOL.md, "Add File and Remove File": "The path is a URI
as specified by RFC 2396 URI Generic Syntax").
"""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.output.encode import Encoding
from pipeline.output.partition import iter_grouped, key_dir

if TYPE_CHECKING:
    from deltalake.transaction import AddAction

#: Columns whose min/max go into each file's stats: the merge key, so a later MERGE on `ID`
#: can skip files whose ID range misses the source.
STATS_COLUMNS = ("ID",)
#: The table property that tells readers which columns the file stats cover (delta-io/delta
#: PROTOCOL.md, "Per-file Statistics": `delta.dataSkippingStatsColumns`). Without it a reader
#: assumes the first 32 columns, and deltalake's `to_pyarrow_dataset` then turned the missing
#: min/max of `TITLE` into a condition no row meets: a filter on it read 0 rows (deltalake
#: 1.6.6; Polars read them).
STATS_PROPERTIES = {"delta.dataSkippingStatsColumns": ",".join(STATS_COLUMNS)}


@dataclass(frozen=True, slots=True)
class ParquetOptions:
    """What the files are written with: `output.compression` and the row group size."""

    compression: str
    max_rows_per_group: int

    @property
    def codec(self) -> str | None:
        return None if self.compression == "none" else self.compression


def _stats(rows: pa.Table) -> str:
    """Delta file statistics: the row count, and min/max/null count of STATS_COLUMNS."""
    found: dict[str, Any] = {"numRecords": rows.num_rows}
    lows: dict[str, Any] = {}
    highs: dict[str, Any] = {}
    nulls: dict[str, int] = {}
    for name in STATS_COLUMNS:
        if name not in rows.column_names or not pa.types.is_integer(rows.schema.field(name).type):
            continue
        column = rows.column(name)
        bounds = pc.min_max(column).as_py()
        nulls[name] = column.null_count
        if bounds["min"] is not None:
            lows[name], highs[name] = bounds["min"], bounds["max"]
    if nulls:
        found.update(minValues=lows, maxValues=highs, nullCount=nulls)
    return orjson.dumps(found).decode()


def _split(rows: pa.Table, key: str | None) -> Iterator[tuple[str | None, pa.Table]]:
    """The rows per partition value (the partition column dropped), values in the order they
    first appear and each group's rows in input order; or all of them. One group at a time, as
    the folder sink's (`iter_grouped`): a group is written before the next is copied."""
    if key is None:
        return iter([(None, rows)])
    # null_encoding="encode": null is a dictionary value like any other (its own partition).
    encoded = pc.dictionary_encode(rows.column(key), null_encoding="encode").combine_chunks()
    values = encoded.dictionary.to_pylist()
    data = rows.drop_columns([key])
    if len(values) == 1:
        return iter([(values[0], data)])
    return zip(values, iter_grouped(data, encoded.indices, len(values)), strict=True)


def write_files(
    root: str, rows: pa.Table, partition_by: list[str], options: ParquetOptions
) -> list[AddAction]:
    """Write `rows` under the local table directory `root`, one file per partition value, and
    return the `add` actions that make them part of the table once committed."""
    from deltalake.transaction import AddAction

    key = partition_by[0] if partition_by else None
    suffix = f"{options.codec or 'uncompressed'}.parquet"
    encoding = Encoding(options.compression, options.max_rows_per_group)
    actions: list[AddAction] = []
    for n, (value, part) in enumerate(_split(rows, key)):
        folder = "" if key is None else key_dir(key, value)
        name = f"part-{n:05d}-{uuid.uuid4()}-c000.{suffix}"
        relative = f"{folder}/{name}" if folder else name
        path = os.path.join(root, relative)
        data = encoding.encode(part)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        # A file is part of the table only once a commit adds it; one cut short (a full disk,
        # Ctrl-C) is removed rather than left in the table's folder.
        try:
            with open(path, "wb") as out:
                out.write(data)
        except BaseException:
            with contextlib.suppress(OSError):
                os.remove(path)
            raise
        actions.append(
            AddAction(
                path=relative,
                size=data.size,
                partition_values={} if key is None else {key: value},
                modification_time=int(time.time() * 1000),
                data_change=True,
                stats=_stats(part),
            )
        )
    return actions


__all__ = ["STATS_COLUMNS", "STATS_PROPERTIES", "ParquetOptions", "write_files"]
