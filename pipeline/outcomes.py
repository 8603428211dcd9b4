"""The values that flow between stages. Plain frozen records, no behaviour, no I/O.

fetch     -> DealFetched | DealFailed        exactly one per requested ID
normalise -> RecordError                     one per value that could not be converted
ID source -> InvalidInput                    one per input line that is not a valid deal ID
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

ErrorClass = Literal["permanent", "transient", "limit", "fatal"]


@dataclass(frozen=True, slots=True)
class DealFetched:
    """A deal exactly as the portal sent it (JSON-decoded, values untouched)."""

    id: int
    payload: dict[str, Any]
    attempts: int


@dataclass(frozen=True, slots=True)
class DealFailed:
    """A requested ID that did not make it into the data, and why.

    `code` is the portal's `error` (may be "") or one of ours (`RETRIES_EXHAUSTED`, ...);
    `message` never contains secrets.
    """

    id: int
    code: str
    message: str
    http_status: int | None
    attempts: int
    retryable: bool
    error_class: ErrorClass


FetchOutcome = DealFetched | DealFailed


@dataclass(frozen=True, slots=True)
class RecordError:
    """A value that could not be converted to its column type; its row is still written."""

    id: int
    field: str
    raw_value: str
    reason: str


@dataclass(frozen=True, slots=True)
class InvalidInput:
    """An input line that is not a positive 64-bit deal ID; never sent to the portal."""

    line: int
    raw: str
    reason: str


__all__ = [
    "DealFailed",
    "DealFetched",
    "ErrorClass",
    "FetchOutcome",
    "InvalidInput",
    "RecordError",
]
