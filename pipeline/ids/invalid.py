"""Compact storage for rejected input lines: every one must reach the sidecar, none may cost much.

A garbage file can have millions of bad lines, so we keep no Python object per line: line numbers
live in an `array('q')`, reasons as one byte indexing `REASONS`, and the (already truncated) raw
text in one growing bytearray with end offsets.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterator

from pipeline.ids.validate import REASONS, display_raw
from pipeline.outcomes import InvalidInput

_REASON_INDEX = {reason: i for i, reason in enumerate(REASONS)}


class InvalidLines:
    """An append-only, ordered collection of `InvalidInput` records stored in a few flat arrays."""

    __slots__ = ("_ends", "_lines", "_raw", "_reasons")

    def __init__(self) -> None:
        self._lines = array("q")
        self._reasons = array("B")
        self._ends = array("q")
        self._raw = bytearray()

    def add(self, line: int, token: bytes, reason: str) -> None:
        """Record that input line `line` (1-based) holding `token` was rejected for `reason`."""
        self.add_text(line, display_raw(token), reason)

    def add_text(self, line: int, raw: str, reason: str) -> None:
        """Like `add`, for callers that already hold the text (Parquet strings, CSV rows)."""
        self._lines.append(line)
        self._reasons.append(_REASON_INDEX[reason])
        self._raw += raw.encode("utf-8", errors="backslashreplace")
        self._ends.append(len(self._raw))

    def __len__(self) -> int:
        return len(self._lines)

    def __bool__(self) -> bool:
        return len(self._lines) > 0

    def __getitem__(self, index: int) -> InvalidInput:
        if index < 0:
            index += len(self._lines)
        if not 0 <= index < len(self._lines):
            raise IndexError(index)
        start = self._ends[index - 1] if index else 0
        raw = self._raw[start : self._ends[index]].decode("utf-8")
        return InvalidInput(self._lines[index], raw, REASONS[self._reasons[index]])

    def __iter__(self) -> Iterator[InvalidInput]:
        for i in range(len(self._lines)):
            yield self[i]

    def nbytes(self) -> int:
        """Approximate memory held, for tests and benchmarks."""
        return (
            self._lines.itemsize * len(self._lines)
            + len(self._reasons)
            + self._ends.itemsize * len(self._ends)
            + len(self._raw)
        )


__all__ = ["InvalidLines"]
