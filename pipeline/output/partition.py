"""Hive partitioning of one chunk: which `key=value/` directory each row goes to. Pure, no I/O.

Naming. The directory key is `<column>_<transform>` (`DATE_CREATE_month=2024-08`,
`STAGE_ID_value=C1%3AWON`), never the column's own name: the data column stays in every file with
its real type, and a reader that adds the discovered partition column would otherwise meet two
columns of one name with different types (pyarrow refuses to merge int64 with the int32 it infers
from a directory name). Values:

    year   2024            month  2024-08            day  2024-08-15
    value  the value as text, percent-encoded (pyarrow, DuckDB and Polars all decode it)

Date parts are taken in the column's own time zone (a `timestamp[us, tz=UTC]` column is split by
UTC months). A null or empty value goes to `__HIVE_DEFAULT_PARTITION__`, which pyarrow, DuckDB
and Polars read back as null. Transform `none` writes files directly under the root.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from urllib.parse import quote

import pyarrow as pa
import pyarrow.compute as pc

from pipeline.config import OutputConfig, PartitionTransform
from pipeline.errors import OutputError

NULL_PARTITION = "__HIVE_DEFAULT_PARTITION__"

#: About how many bytes of a chunk's rows `iter_grouped` copies at a time (whole groups, so one
#: group larger than this is copied alone). A copy of the whole chunk next to the chunk itself
#: was the largest Arrow allocation of a commit; a few takes instead of one cost little more,
#: a take per group (dozens of files per chunk) about twice the time of the one.
SLAB_BYTES = 4 << 20

DATE_FORMATS = {"year": "%Y", "month": "%Y-%m", "day": "%Y-%m-%d"}


@dataclass(frozen=True, slots=True)
class PartitionSpec:
    """Which column partitions the dataset, and how."""

    column: str | None
    transform: PartitionTransform

    @classmethod
    def from_config(cls, config: OutputConfig) -> PartitionSpec:
        if config.partition_by is None or config.partition_transform == "none":
            return cls(None, "none")
        return cls(config.partition_by, config.partition_transform)

    @property
    def key(self) -> str | None:
        """The directory key (`DATE_CREATE_month`), or None when unpartitioned."""
        if self.column is None:
            return None
        return f"{self.column}_{self.transform}"

    def as_dict(self) -> dict[str, str | None]:
        return {"partition_by": self.column, "partition_transform": self.transform}


def _keys(column: pa.ChunkedArray, spec: PartitionSpec) -> tuple[pa.Array, list[str | None]]:
    """Each row's key as a position in a list of the chunk's distinct key texts (a null
    position where the row has no value)."""
    typ = column.type
    if spec.transform in DATE_FORMATS:
        if not (pa.types.is_timestamp(typ) or pa.types.is_date(typ)):
            raise OutputError(
                f"partition transform {spec.transform!r} needs a date or timestamp column, "
                f"but {spec.column} is {typ}; use partition_transform 'value' or 'none'"
            )
        return _date_keys(column.combine_chunks(), spec.transform)
    if pa.types.is_nested(typ):
        raise OutputError(f"cannot partition by {spec.column}: {typ} is not a scalar type")
    # Arrow spells booleans `true`/`false`, as the directory names always have.
    encoded = pc.dictionary_encode(pc.cast(column, pa.string()).combine_chunks())
    return encoded.indices, encoded.dictionary.to_pylist()


def _date_keys(column: pa.Array, transform: str) -> tuple[pa.Array, list[str | None]]:
    """`_keys` of a date or timestamp column (see `date_parts`)."""
    indices, texts = date_parts(column, transform)
    return indices, texts.to_pylist()


def date_parts(column: pa.Array, transform: str) -> tuple[pa.Array, pa.Array]:
    """Each row's index into the texts of the distinct date parts (year, month or day, in the
    column's own time zone), and those texts. The parts are one integer per row (about a tenth
    of the cost of formatting each row); each text is formatted from a row that has it, so the
    texts are exactly strftime's. The folder sink names directories and the Delta sink fills
    its partition column from this."""
    key = pc.year(column)
    if transform != "year":
        key = pc.add(pc.multiply(key, 100), pc.month(column))
    if transform == "day":
        key = pc.add(pc.multiply(key, 100), pc.day(column))
    encoded = pc.dictionary_encode(key)
    texts = pc.strftime(column.take(_first_rows(encoded.indices)), format=DATE_FORMATS[transform])
    return encoded.indices, texts


def _first_rows(codes: pa.Array) -> pa.Array:
    """The row where each dictionary code first occurs, in code order.

    `dictionary_encode` numbers the distinct values in the order they first occur (Arrow's
    hash kernels insert into the memo table as they scan), so a code's first row is where the
    running maximum of the codes rises to it: one pass, where a search per code made a chunk
    of many distinct days (a day partition) cost ~30 ms per 10,000 rows."""
    if not len(codes):
        return pa.array([], pa.int64())
    running = pc.cumulative_max(pc.fill_null(codes, -1))
    before = pa.concat_arrays([pa.array([-1], running.type), running.slice(0, len(running) - 1)])
    return pc.indices_nonzero(pc.greater(running, before))


def _groups(indices: pa.Array, texts: list[str | None], key: str) -> tuple[list[str], pa.Array]:
    """The distinct directories in order, and each row's position in that list.

    Directory names are made once per distinct value, not per row; a null and an empty value
    share NULL_PARTITION, so two values may map to one directory."""
    names = [key_dir(key, value) for value in texts]
    null_name = key_dir(key, None)
    distinct = sorted(set(names) | ({null_name} if indices.null_count else set()))
    rank = {name: n for n, name in enumerate(distinct)}
    # The entry after the texts' is for nulls (0 when there are none: nothing points there).
    lookup = pa.array([rank[name] for name in names] + [rank.get(null_name, 0)], pa.int32())
    return distinct, pc.take(lookup, pc.fill_null(indices, len(names)))


def _sizes(codes: pa.Array, groups: int) -> list[int]:
    """Rows per group position."""
    sizes = [0] * groups
    counted = pc.value_counts(codes)
    for value, count in zip(
        counted.field("values").to_pylist(), counted.field("counts").to_pylist(), strict=True
    ):
        sizes[value] = count
    return sizes


def _ascending(codes: pa.Array) -> bool:
    """True when the rows already come group by group, in group order."""
    n = len(codes)
    return n < 2 or bool(pc.all(pc.less_equal(codes.slice(0, n - 1), codes.slice(1))).as_py())


def partition_problem(
    spec: PartitionSpec, columns: Mapping[str, pa.DataType], noun: str = "deal"
) -> str | None:
    """Why `spec` cannot partition records (`noun`: the entity) of these column types, or None
    if it can.

    The same rules `split` applies to each chunk, judged from the schema alone, so a bad
    setting is reported before any deal is fetched rather than after the first chunk.
    """
    if spec.column is None:
        return None
    typ = columns.get(spec.column)
    if typ is None:
        close = difflib.get_close_matches(spec.column, list(columns), n=1, cutoff=0.6)
        hint = f" (did you mean {close[0]}?)" if close else ""
        return f"{spec.column!r} is not a {noun} field of this portal{hint}"
    if spec.transform in DATE_FORMATS and not (pa.types.is_timestamp(typ) or pa.types.is_date(typ)):
        return (
            f"transform {spec.transform!r} needs a date or time field, but {spec.column} is "
            f"{typ}; use the transform 'value' (or 'none')"
        )
    if pa.types.is_nested(typ):
        return f"{spec.column} holds {typ}, not one scalar value per {noun}"
    if spec.key in columns:
        return f"the partition key {spec.key} clashes with a {noun} field of that name"
    return None


def partition_dir(spec: PartitionSpec, value: str | None) -> str:
    """The relative directory for one key value (`""` when unpartitioned)."""
    return "" if spec.key is None else key_dir(spec.key, value)


def key_dir(key: str, value: str | None) -> str:
    """`key=value`, the value percent-encoded; null or empty: NULL_PARTITION (the folder sink's
    directories and a Delta table's data files alike)."""
    text = NULL_PARTITION if value is None or value == "" else quote(value, safe="")
    return f"{key}={text}"


def split(table: pa.Table, spec: PartitionSpec) -> list[tuple[str, pa.Table]]:
    """Rows of `table` grouped by partition directory, in directory order.

    Row order inside a group is the input order, so file contents are deterministic for a given
    chunk. Empty tables produce no groups.
    """
    return list(iter_split(table, spec))


def iter_split(table: pa.Table, spec: PartitionSpec) -> Iterator[tuple[str, pa.Table]]:
    """`split`, one group at a time (`iter_grouped`): what a writer that is done with a group
    before it asks for the next one should use. A bad spec is refused here, not on the first
    `next`."""
    if table.num_rows == 0:
        return iter(())
    if spec.column is None:
        return iter([("", table)])
    if spec.column not in table.column_names:
        raise OutputError(f"partition column {spec.column} is not in the data")
    if spec.key in table.column_names:
        raise OutputError(
            f"partition key {spec.key} clashes with a data column of the same name; "
            "choose another partition column or transform"
        )
    directories, codes = _directories(table, spec)
    if len(directories) == 1:
        return iter([(directories[0], table)])
    return zip(directories, iter_grouped(table, codes, len(directories)), strict=True)


def _directories(table: pa.Table, spec: PartitionSpec) -> tuple[list[str], pa.Array]:
    indices, texts = _keys(table.column(spec.column), spec)
    return _groups(indices, texts, spec.key or "")


def directory_codes(table: pa.Table, spec: PartitionSpec) -> pa.Array | None:
    """Each row's position among the directories `iter_split` writes `table` to, in that
    order; None when every row goes to one directory, or when `iter_split` would refuse the
    table (it says why). A table ordered by these codes, and by ID within a code, comes out
    of `iter_split` as zero-copy slices, each the rows an ID-ordered table of the same rows
    yields for that directory, in the same order."""
    if (
        table.num_rows == 0
        or spec.column is None
        or spec.column not in table.column_names
        or spec.key in table.column_names
    ):
        return None
    directories, codes = _directories(table, spec)
    return None if len(directories) == 1 else codes


def iter_grouped(table: pa.Table, codes: pa.Array, groups: int) -> Iterator[pa.Table]:
    """The rows of `table` per group position `codes` gives each row (0..groups-1), in input
    order within a group, one group at a time.

    The order is one stable sort (sort_indices "computes an array of indices that define a
    stable sort", arrow.apache.org/docs/python/generated/pyarrow.compute.sort_indices.html),
    and the rows are copied about SLAB_BYTES (whole groups) per take instead of the whole table
    at once: while a caller works on one group, the chunk and at most one slab of copied rows
    are alive, not a second copy of the chunk. A take or filter per group would read every
    chunk each time. Rows that already come group by group are zero-copy slices."""
    sizes = _sizes(codes, groups)
    if _ascending(codes):
        yield from _slices(table, sizes)
        return
    order = pc.sort_indices(codes)
    per_slab = max(1, int(SLAB_BYTES * table.num_rows / max(table.nbytes, 1)))
    start = 0
    for first, end in _slabs(sizes, per_slab):
        rows = sum(sizes[first:end])
        slab = _take_span(table, order.slice(start, rows))
        start += rows
        yield from _slices(slab, sizes[first:end])
        del slab


def _slabs(sizes: list[int], per_slab: int) -> Iterator[tuple[int, int]]:
    """Runs of consecutive group positions `[first, end)` of at most `per_slab` rows each (or
    one group, when it alone is larger)."""
    first = 0
    while first < len(sizes):
        end, rows = first + 1, sizes[first]
        while end < len(sizes) and rows + sizes[end] <= per_slab:
            rows += sizes[end]
            end += 1
        yield first, end
        first = end


def _take_span(table: pa.Table, indices: pa.Array) -> pa.Table:
    """`table.take(indices)`, from the zero-copy slice between the least and the greatest index:
    a take from a table of many record batches first joins every batch it is given, and the
    rows of a few partitions of one chunk usually lie in a few of them."""
    bounds = pc.min_max(indices)
    low, high = bounds["min"].as_py(), bounds["max"].as_py()
    return table.slice(low, high - low + 1).take(pc.subtract(indices, low))


def _slices(table: pa.Table, sizes: list[int]) -> Iterator[pa.Table]:
    """Consecutive zero-copy slices of `table` of these row counts."""
    start = 0
    for size in sizes:
        yield table.slice(start, size)
        start += size


__all__ = [
    "DATE_FORMATS",
    "NULL_PARTITION",
    "PartitionSpec",
    "date_parts",
    "directory_codes",
    "iter_grouped",
    "iter_split",
    "key_dir",
    "partition_dir",
    "partition_problem",
    "split",
]
