"""The result of reading an ID source: sorted unique IDs, the rejected lines, and the counts.

IDs are kept as one int64 Arrow array in ascending order without duplicates. Sorting makes the
output deterministic whatever the input order, so a resumed run cuts the same chunks and names
them the same way. Ten million IDs cost 80 MB here (plus a transient copy while sorting), not the
~600 MB of a Python set of ints. A range input is held as its runs of consecutive IDs (`IdRuns`),
which cost bytes whatever their length.
"""

from __future__ import annotations

import bisect
from array import array
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from pipeline.ids.invalid import InvalidLines


@dataclass(frozen=True, slots=True)
class IdCounts:
    """What an ID source held.

    `lines` counts every input unit read (text lines, CSV data rows, Parquet rows, range
    members); `skipped` the blank and comment lines among them; `valid` + `invalid` the rest.
    """

    lines: int
    skipped: int
    valid: int
    invalid: int
    unique: int

    @property
    def duplicates(self) -> int:
        """Valid IDs dropped because they had already appeared."""
        return self.valid - self.unique

    def as_dict(self) -> dict[str, int]:
        return {
            "lines": self.lines,
            "skipped": self.skipped,
            "valid": self.valid,
            "invalid": self.invalid,
            "unique": self.unique,
            "duplicates": self.duplicates,
        }


class IdRuns:
    """Ascending unique IDs held as runs of consecutive values, read like an int64 array
    (`len`, `slice`, indexing, `to_pylist`): what a range input (`1-1000000`) is.

    As an array a million IDs hold 8 MB for the whole run (12 MB resident, with the array's
    growth as it was filled), a tenth of the 1M run's memory beyond its code; as runs they
    hold a few bytes, and a chunk's 10,000 IDs are made when the chunk is fetched.
    """

    __slots__ = ("_firsts", "_length", "_offsets")

    def __init__(self, runs: Sequence[tuple[int, int]]) -> None:
        """`runs`: (first, last) pairs, inclusive, ascending, neither overlapping nor empty."""
        self._firsts = array("q", (first for first, _ in runs))
        #: Position of each run's first ID among all the IDs.
        self._offsets = array("q")
        length = 0
        for first, last in runs:
            self._offsets.append(length)
            length += last - first + 1
        self._length = length

    def __len__(self) -> int:
        return self._length

    def slice(self, offset: int = 0, length: int | None = None) -> pa.Array:
        """IDs `offset` to `offset + length` (clipped to the end) as an int64 array, as
        `pa.Array.slice` gives them."""
        start = min(max(offset, 0), self._length)
        stop = self._length if length is None else min(start + max(length, 0), self._length)
        values = array("q")
        run = bisect.bisect_right(self._offsets, start) - 1
        while start < stop:
            run_end = self._offsets[run + 1] if run + 1 < len(self._offsets) else self._length
            end = min(stop, run_end)
            first = self._firsts[run] + (start - self._offsets[run])
            values.extend(range(first, first + (end - start)))
            start, run = end, run + 1
        if not values:
            return pa.array([], pa.int64())
        # Zero-copy view of the array's buffer; the Arrow buffer keeps `values` alive.
        return pa.Array.from_buffers(pa.int64(), len(values), [None, pa.py_buffer(values)])

    def __getitem__(self, index: int) -> Any:
        """The ID at `index` as an Arrow scalar, as indexing an array gives it."""
        if not -self._length <= index < self._length:
            raise IndexError("index out of bounds")
        return self.slice(index % self._length, 1)[0]

    def to_pylist(self) -> list[int]:
        ids: list[int] = self.slice().to_pylist()
        return ids


@dataclass(frozen=True, slots=True)
class IdSet:
    """Deal IDs ready to fetch, ascending, without duplicates: `ids` is an int64 array, or for a
    range input the same IDs as `IdRuns`; both read alike (`len`, `slice`, `to_pylist`)."""

    source: str
    ids: pa.Array | IdRuns
    invalid: InvalidLines
    counts: IdCounts

    def __len__(self) -> int:
        return len(self.ids)

    def array(self) -> pa.Array:
        """The IDs as one int64 array (made whole for an `IdRuns`)."""
        return self.ids.slice() if isinstance(self.ids, IdRuns) else self.ids

    def batches(self, size: int) -> Iterator[list[int]]:
        """The IDs in order, `size` at a time, as Python ints (materialised one batch at a time)."""
        for ids in self.arrays(size):
            yield ids.to_pylist()

    def arrays(self, size: int) -> Iterator[pa.Array]:
        """The IDs in order, `size` at a time, as int64 arrays (a range is made whole one slice
        at a time, never all at once)."""
        if size < 1:
            raise ValueError("batch size must be >= 1")
        for start in range(0, len(self.ids), size):
            yield self.ids.slice(start, size)


class IdCollector:
    """Gathers valid IDs and invalid lines while a source is read; `finish` sorts and dedupes."""

    __slots__ = ("invalid", "lines", "probed", "skipped", "values")

    def __init__(self) -> None:
        self.probed = False
        self.values = array("q")
        self.invalid = InvalidLines()
        self.lines = 0
        self.skipped = 0

    def finish(self, source: str) -> IdSet:
        valid = len(self.values)
        values, self.values = self.values, array("q")
        # Hand over the only reference so the unsorted copy can be freed mid-sort.
        ids = sorted_unique(values)
        del values
        counts = IdCounts(
            lines=self.lines,
            skipped=self.skipped,
            valid=valid,
            invalid=len(self.invalid),
            unique=len(ids),
        )
        return IdSet(source=source, ids=ids, invalid=self.invalid, counts=counts)


def sorted_unique(values: array[int]) -> pa.Array:
    """`values` sorted ascending with duplicates removed, as an int64 Arrow array.

    Sort-based rather than hash-based: a hash table over 10M int64 costs more than the sort's
    index array, and the sorted order is what we want anyway. Already sorted unique input (a
    range, a sorted file) is returned without copying.
    """
    n = len(values)
    if n == 0:
        return pa.array([], pa.int64())
    # Zero-copy view of the array's buffer; the Arrow buffer keeps `values` alive.
    arr = pa.Array.from_buffers(pa.int64(), n, [None, pa.py_buffer(values)])
    if n == 1:
        return arr
    if _strictly_increasing(arr):
        return arr
    ordered = pc.take(arr, pc.array_sort_indices(arr))
    del arr, values
    keep = pc.not_equal(ordered.slice(1), ordered.slice(0, n - 1))
    if keep.true_count == n - 1:
        return ordered
    keep = pa.concat_arrays([pa.array([True]), keep])
    return pc.filter(ordered, keep)


def _strictly_increasing(arr: pa.Array) -> bool:
    n = len(arr)
    return bool(pc.all(pc.greater(arr.slice(1), arr.slice(0, n - 1))).as_py())


__all__ = ["IdCollector", "IdCounts", "IdRuns", "IdSet", "sorted_unique"]
