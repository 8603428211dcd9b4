"""Which table rows are deals the portal deleted: set arithmetic and a verdict per ID. Pure.

    plan = plan_reconcile(table_live, table_deleted, portal_ids)
    # plan.gone: live rows the listing lacks -> one crm.<entity>.get each (the follow-up)
    verdict = judge(outcomes_of_the_follow_up)

A listing (`crm.<entity>.list`) leaves out deleted AND hidden deals without a reason (crm
`restservice.php` `innerGetList` filters by row permissions), so an ID missing from it is only a
candidate. The follow-up `crm.<entity>.get` tells them apart (crm `restservice.php`
`CCrmDealRestProxy::innerGet`):

    answer                                  verdict     the row
    the deal                                present     stays live (listed late, a race: refresh)
    "" + `Not found` (or NOT_FOUND)         deleted     `_deleted_at` set, or removed with hard
    "" + `Access denied` / `Access denied.` denied      stays live; the errors table says why
      (or ACCESS_DENIED)                                it was not refreshed
    anything else (retries spent, ...)      unresolved  stays live; the errors table has it

`Access denied` without the period is what a missing deal answers when the user lacks general
read permission, so it could be a deletion; it is never treated as one: a row is only marked
on the portal's word that the deal does not exist. A deal marked deleted that the listing shows
again (restored from the recycle bin) is `restored`: its mark is cleared.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Final, TypeAlias

import pyarrow as pa
import pyarrow.compute as pc

from pipeline.outcomes import DealFailed, DealFetched, FetchOutcome

#: The portal's texts and codes for a deal that does not exist (`crm.<entity>.get`: empty code and a
#: fixed English text; `crm.item.get`: NOT_FOUND, REST docs `crm-item-get.md`).
NOT_FOUND_TEXTS: Final = frozenset({"Not found", "Not found."})
NOT_FOUND_CODES: Final = frozenset({"NOT_FOUND"})
#: ... and for one the user may not read (with and without the period, see the module doc).
DENIED_TEXTS: Final = frozenset({"Access denied", "Access denied."})
DENIED_CODES: Final = frozenset({"ACCESS_DENIED"})

IdsLike: TypeAlias = "pa.Array | pa.ChunkedArray | Sequence[int] | array[int]"


@dataclass(frozen=True, slots=True)
class ReconcilePlan:
    """`gone`: live table IDs the listing lacks (ascending), to be asked about one by one.
    `restored`: IDs marked deleted in the table that the listing shows again (ascending)."""

    gone: list[int]
    restored: list[int]


@dataclass(frozen=True, slots=True)
class Verdict:
    """The follow-up's answers sorted into what happens to each row (see the module doc)."""

    deleted: list[int] = field(default_factory=list)
    present: list[DealFetched] = field(default_factory=list)
    denied: list[DealFailed] = field(default_factory=list)
    unresolved: list[DealFailed] = field(default_factory=list)

    @property
    def failures(self) -> list[DealFailed]:
        """What the errors table should hold for this reconciliation: rows not refreshed."""
        return [*self.denied, *self.unresolved]

    @property
    def retryable(self) -> int:
        """Failures a later run may resolve (the exit code's business)."""
        return sum(1 for f in self.failures if f.retryable)


def as_int64(ids: IdsLike) -> pa.Array:
    """IDs as one int64 Arrow array; an `array("q")` is wrapped without a copy."""
    if isinstance(ids, pa.ChunkedArray):
        combined = ids.combine_chunks()
        return combined.cast(pa.int64()) if combined.type != pa.int64() else combined
    if isinstance(ids, pa.Array):
        return ids.cast(pa.int64()) if ids.type != pa.int64() else ids
    if isinstance(ids, array) and ids.typecode == "q":
        return pa.Array.from_buffers(pa.int64(), len(ids), [None, pa.py_buffer(ids)])
    return pa.array(list(ids), pa.int64())


def plan_reconcile(
    table_live: IdsLike, table_deleted: IdsLike, portal_ids: IdsLike
) -> ReconcilePlan:
    """Compare the table with a complete listing of the portal.

    IDs on the portal but not in the table are new deals: the export's business, not this.
    """
    portal = as_int64(portal_ids)
    return ReconcilePlan(
        gone=_sorted_ids(_without(as_int64(table_live), portal)),
        restored=_sorted_ids(_within(as_int64(table_deleted), portal)),
    )


def _without(values: pa.Array, value_set: pa.Array) -> pa.Array:
    return values.filter(pc.invert(pc.is_in(values, value_set=value_set)))


def _within(values: pa.Array, value_set: pa.Array) -> pa.Array:
    return values.filter(pc.is_in(values, value_set=value_set))


def _sorted_ids(values: pa.Array) -> list[int]:
    return sorted(set(values.drop_null().to_pylist()))


def is_not_found(failure: DealFailed) -> bool:
    """The portal says the deal does not exist."""
    if failure.code in NOT_FOUND_CODES:
        return True
    return failure.code == "" and failure.message.strip() in NOT_FOUND_TEXTS


def is_denied(failure: DealFailed) -> bool:
    """The portal refuses to say: the user may not read this deal (or any deal)."""
    if failure.code in DENIED_CODES:
        return True
    return failure.code == "" and failure.message.strip() in DENIED_TEXTS


def judge(outcomes: Iterable[FetchOutcome]) -> Verdict:
    """Sort the follow-up answers (one per gone ID) into deleted, present, denied, unresolved."""
    verdict = Verdict()
    for outcome in outcomes:
        if isinstance(outcome, DealFetched):
            verdict.present.append(outcome)
        elif is_not_found(outcome):
            verdict.deleted.append(outcome.id)
        elif is_denied(outcome):
            verdict.denied.append(outcome)
        else:
            verdict.unresolved.append(outcome)
    verdict.deleted.sort()
    return verdict


__all__ = [
    "DENIED_CODES",
    "DENIED_TEXTS",
    "NOT_FOUND_CODES",
    "NOT_FOUND_TEXTS",
    "ReconcilePlan",
    "Verdict",
    "as_int64",
    "is_denied",
    "is_not_found",
    "judge",
    "plan_reconcile",
]
