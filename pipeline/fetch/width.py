"""How wide deals are on the wire, from the answers of one run (`batch` answers, and plain
gets where batch is forbidden): what bounds list batches and the payload credits by bytes
rather than by deals. Pure."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

#: Weight of older answers per new one in `RowWidth` (as the strategy's cost average).
WIDTH_DECAY = 0.7


@dataclass(slots=True)
class RowWidth:
    """Wire bytes per deal of a run's answers, list rows and get results alike (the two forms
    differ by a few empty values): the bytes of an answer's deals (`rows_size`) divided by the
    deals it carried.

    `per_row` is the larger of the latest answer's figure and a decaying average over the
    answers before it (weighted by deals): when deals get wider, the next batch is sized for
    them at once, since an answer sized for narrow deals may be many times the bound; when
    they get narrower, it grows back over a few answers, so one answer of short deals between
    wide ones does not make the next batch full size. An answer without deals (or without a
    size) says nothing about width and is left out, so `per_row` is never 0."""

    bytes: float = 0.0
    rows: float = 0.0
    latest: float | None = None

    def observe(self, size: int, rows: int) -> None:
        if rows <= 0 or size <= 0:
            return
        self.bytes = self.bytes * WIDTH_DECAY + size
        self.rows = self.rows * WIDTH_DECAY + rows
        self.latest = size / rows

    @property
    def per_row(self) -> float | None:
        """Bytes per deal to size the next batch by (None: no answer with deals yet)."""
        if self.latest is None:
            return None
        return max(self.latest, self.bytes / self.rows)


def rows_size(size: int, body: Mapping[str, Any]) -> int:
    """Bytes of a `batch` answer's deals: the body's `size` less its other parts encoded again
    (each command's `result_time` entry, `result_total`, `result_next`, errors, the request's
    `time`; the answer's layout: REST docs `settings/how-to-call-rest-api/batch.md`). Those
    parts are a few hundred bytes per command whatever it returns, so counted as deals they
    made a mostly-absent list answer (1 row in 1,000 IDs asked for) read 4-6 kB a row for
    deals of 2 kB, and the next batches shrink for nothing."""
    result = body.get("result")
    parts: list[Any] = [body.get("time")]
    if isinstance(result, Mapping):
        parts.extend(value for key, value in result.items() if key != "result")
    return _less(size, parts)


def result_size(size: int, body: Mapping[str, Any]) -> int:
    """Bytes of a plain get's `result`, its one record (for an entity whose answer wraps the
    record, the wrapper's few bytes too): the body's `size` less its `time` encoded again. Not
    `rows_size`: here the fields under `result` are the record's, not framing."""
    return _less(size, [body.get("time")])


def _less(size: int, parts: list[Any]) -> int:
    """`size` less the bytes of `parts` encoded again, never below 0."""
    try:
        other = sum(len(orjson.dumps(part)) for part in parts)
    except TypeError:  # JSONEncodeError: nested deeper than orjson encodes (it decodes more)
        return size
    return max(0, size - other)


__all__ = ["WIDTH_DECAY", "RowWidth", "result_size", "rows_size"]
