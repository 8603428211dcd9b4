"""The values that flow between stages. Plain frozen records, no behaviour, no I/O.

fetch     -> DealFetched | DealFailed        exactly one per requested ID
             (handed over per answered request as one FetchedBatch)
normalise -> RecordError                     one per value that could not be converted
ID source -> InvalidInput                    one per input line that is not a valid deal ID
"""

from __future__ import annotations

from dataclasses import dataclass, field
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


@dataclass(slots=True)
class FetchedBatch:
    """The outcomes one answered request settled, handed over at once: the deals in request
    order (`ids[i]` is the requested ID of `payloads[i]`, fetched in `attempts[i]` attempts) and
    the IDs that ended failed. An ID has its outcome in exactly one batch of a run."""

    ids: list[int] = field(default_factory=list)
    payloads: list[dict[str, Any]] = field(default_factory=list)
    attempts: list[int] = field(default_factory=list)
    failed: list[DealFailed] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ids) + len(self.failed)

    def outcomes(self) -> list[FetchOutcome]:
        """One outcome per ID (deals first, as the request asked for them, then failures)."""
        fetched: list[FetchOutcome] = [
            DealFetched(i, p, a)
            for i, p, a in zip(self.ids, self.payloads, self.attempts, strict=True)
        ]
        return fetched + list(self.failed)


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
    "FetchedBatch",
    "InvalidInput",
    "RecordError",
]
