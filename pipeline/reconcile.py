"""Deletion detection on a Delta table of deals: list the portal, ask about the gaps, commit.

    result = await detect_and_apply_deletes(client, "out/", run_id=run_id, clock=clock)

What `deal-export reconcile OUT` runs, and what `run --detect-deletes` calls once its data is
committed. Steps: the table's live and marked IDs (two columns read) -> every ID the portal
lists (`pipeline.ids.all_ids`) -> live rows the listing lacks get one `crm.<entity>.get` each,
batched like an export -> `pipeline.deletes.judge` -> one Delta commit
(`pipeline.output.delta_deletes`). The table is read before the portal is listed, so a deal
created in between is merely new (the next run's business) and never a candidate.

Nothing is marked on a listing alone: a deal the user may not read is absent from a listing as
surely as a deleted one, and only `Not found` marks a row.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from pipeline.clock import Clock
from pipeline.deletes import ReconcilePlan, Verdict, judge, plan_reconcile
from pipeline.fetch.client import PortalClient
from pipeline.fetch.engine import fetch_deals
from pipeline.ids.all_ids import DEFAULT_PAGES_PER_BATCH, list_all_ids
from pipeline.logs import log_event
from pipeline.outcomes import DealFailed, DealFetched, FetchOutcome
from pipeline.output.delta.errors_table import read_errors
from pipeline.output.delta.location import ERRORS_DIR, DeltaLocation
from pipeline.output.delta_deletes import AppliedDeletions, apply_deletions, read_table_ids
from pipeline.output.sidecar import fetch_rows
from pipeline.summary import EXIT_OK, EXIT_RETRYABLE_FAILURES

_log = logging.getLogger("pipeline.reconcile")
#: Rows left undecided that get a log line each; the rest are counted in one more line (a user
#: who lost read permission leaves every gone row undecided).
LOGGED_FAILURES = 20


@dataclass(frozen=True, slots=True)
class ReconcileResult:
    """What one reconciliation found and did.

    `listed`: IDs the portal listed; `table_live`: live rows before; `gone`: live rows the
    listing lacked; `present`: of those, deals the follow-up got after all (to refresh);
    `failures`: rows left as they were for want of an answer (denied first), for the errors
    table.
    """

    run_id: str
    output: str
    listed: int
    table_live: int
    gone: int
    verdict: Verdict
    applied: AppliedDeletions
    hard: bool
    restored_ids: list[int] = field(default_factory=list)
    #: Errors-table IDs asked about again (`recheck_failures`), beyond the `gone` rows.
    rechecked: int = 0

    @property
    def deleted(self) -> int:
        return self.applied.removed if self.hard else self.applied.marked

    @property
    def present(self) -> list[DealFetched]:
        return self.verdict.present

    @property
    def failures(self) -> list[DealFailed]:
        return self.verdict.failures

    @property
    def exit_code(self) -> int:
        """As for a run: 3 when a later attempt may settle rows left undecided, else 0."""
        return EXIT_RETRYABLE_FAILURES if self.verdict.retryable else EXIT_OK

    def summary(self) -> str:
        """The one-line summary the CLI prints."""
        v = self.verdict
        verb = "removed" if self.hard else "marked deleted"
        parts = [
            f"reconciled {self.output}: listed {self.listed:,} deals on the portal",
            f"{self.gone:,} of {self.table_live:,} live rows gone from the listing",
            f"{self.deleted:,} {verb}",
            f"{len(v.denied):,} denied (rows kept)",
        ]
        if v.present:
            parts.append(f"{len(v.present):,} still present (listed late)")
        if v.unresolved:
            parts.append(f"{len(v.unresolved):,} unresolved (retry later)")
        if self.applied.restored:
            parts.append(f"{self.applied.restored:,} restored")
        if self.rechecked:
            parts.append(f"{self.rechecked:,} earlier failures asked about again")
        return ", ".join(parts)

    def fields(self) -> dict[str, object]:
        """The figures of `summary`, for a JSON record."""
        return {
            "output": self.output,
            "exit_code": self.exit_code,
            "listed": self.listed,
            "table_live": self.table_live,
            "gone": self.gone,
            "deleted": self.deleted,
            "hard_delete": self.hard,
            "denied": len(self.verdict.denied),
            "present": len(self.verdict.present),
            "unresolved": len(self.verdict.unresolved),
            "restored": self.applied.restored,
            "rechecked": self.rechecked,
            "table_version": self.applied.version,
        }


async def detect_and_apply_deletes(
    client: PortalClient,
    out: str,
    *,
    run_id: str,
    clock: Clock | None = None,
    hard: bool = False,
    pages_per_batch: int = DEFAULT_PAGES_PER_BATCH,
    storage_options: Mapping[str, str] | None = None,
    recheck_failures: bool = False,
) -> ReconcileResult:
    """Find the deals of the Delta table at `out` that the portal deleted, and mark them
    (`hard`: remove them) in one commit. `client` must be open. The mark's time is `clock`'s
    now (the client's clock by default).

    `recheck_failures` (what `run --detect-deletes` asks): the IDs of the errors table's fetch
    failures get the same follow-up. A deal that failed and was then deleted is never
    discovered again, so only this settles its row; one hidden once and readable again is
    refreshed (`present`) instead of staying `Access denied`.

    Raises OutputError when `out` is not a Delta table of deals, FatalPortalError when the
    portal cannot be listed completely (nothing is changed then).
    """
    clock = clock or client.clock
    table = await asyncio.to_thread(read_table_ids, out, storage_options)
    failing = (
        await asyncio.to_thread(_failing_ids, out, storage_options) if recheck_failures else []
    )
    portal = await list_all_ids(client, pages_per_batch=pages_per_batch)
    plan: ReconcilePlan = plan_reconcile(table.live, table.deleted, portal)
    asked = sorted(set(plan.gone) | set(failing))
    log_event(
        _log,
        "deletes_listed",
        f"the portal lists {len(portal):,} deals; {len(plan.gone):,} live rows are not among "
        "them and are asked about one by one",
        listed=len(portal),
        gone=len(plan.gone),
        restored=len(plan.restored),
    )
    outcomes: list[FetchOutcome] = []
    if asked:
        async for outcome in fetch_deals(_aiter(asked), client):
            outcomes.append(outcome)
    verdict = judge(outcomes)
    _log_failures(verdict.failures)
    now = datetime.fromtimestamp(clock.now(), UTC)
    applied = await asyncio.to_thread(
        apply_deletions,
        out,
        deleted=verdict.deleted,
        restored=plan.restored,
        hard=hard,
        now=now,
        run_id=run_id,
        storage_options=storage_options,
    )
    return ReconcileResult(
        run_id=run_id,
        output=out,
        listed=len(portal),
        table_live=len(table.live),
        gone=len(plan.gone),
        verdict=verdict,
        applied=applied,
        hard=hard,
        restored_ids=plan.restored,
        rechecked=len(asked) - len(plan.gone),
    )


def _failing_ids(out: str, storage_options: Mapping[str, str] | None) -> list[int]:
    """IDs with a fetch failure in the errors table beside the table at `out`."""
    where = DeltaLocation(out, dict(storage_options or {})).child(ERRORS_DIR)
    rows = fetch_rows(read_errors(where))
    return sorted({int(i) for i in rows.column("id").to_pylist() if i is not None})


def _log_failures(failures: Sequence[DealFailed]) -> None:
    """One line per row left as it was, so the reason is on record even before an errors
    table holds it (the portal's text is already masked)."""
    for failure in failures[:LOGGED_FAILURES]:
        log_event(
            _log,
            "deletion_undecided",
            f"deal {failure.id} is not on the listing and could not be read "
            f"({failure.code or '(no code)'}: {failure.message}); its row is kept",
            level=logging.WARNING,
            deal_id=failure.id,
            code=failure.code,
            error_class=failure.error_class,
            retryable=failure.retryable,
        )
    if len(failures) > LOGGED_FAILURES:
        log_event(
            _log,
            "deletion_undecided_more",
            f"{len(failures) - LOGGED_FAILURES:,} more rows are kept for the same want of an "
            "answer",
            level=logging.WARNING,
            count=len(failures) - LOGGED_FAILURES,
        )


async def _aiter(values: list[int]) -> AsyncIterator[int]:
    for value in values:
        yield value


__all__ = ["ReconcileResult", "detect_and_apply_deletes"]
