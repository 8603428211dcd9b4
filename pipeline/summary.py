"""The end-of-run verdict: counts in, exit code and a few plain sentences out. Pure.

Exit codes are a contract with schedulers:
    0   every ID is accounted for and the only failures are permanent (deleted, hidden deals)
    3   finished, but some IDs failed for reasons a retry may fix (`deal-export retry OUT`)
    1   fatal: auth, portal or output problem; nothing more can be done until someone fixes it
    2   usage or input error
    130 interrupted; the same command resumes
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from pipeline.entity import DEAL, Entity

EXIT_OK = 0
EXIT_FATAL = 1
EXIT_USAGE = 2
EXIT_RETRYABLE_FAILURES = 3
EXIT_INTERRUPTED = 130


@dataclass(frozen=True, slots=True)
class RunCounts:
    """What happened to the requested IDs; `requested` counts valid ID lines with duplicates."""

    requested: int
    unique: int
    exported: int
    duplicates: int = 0
    invalid_input: int = 0
    failed_permanent: Mapping[str, int] = field(default_factory=dict)
    failed_retryable: Mapping[str, int] = field(default_factory=dict)
    record_errors: int = 0

    @property
    def failed(self) -> int:
        return sum(self.failed_permanent.values()) + sum(self.failed_retryable.values())

    @property
    def unaccounted(self) -> int:
        """IDs with neither a data row nor a sidecar row; anything but 0 is a bug."""
        return self.unique - self.exported - self.failed


#: Answers for a record the webhook user may not read. The get methods send an empty code with
#: the text: with the period for an existing record, without it for a missing one when the user
#: lacks general read permission on the entity (crm `restservice.php`,
#: `CCrmDealRestProxy::innerGet`). Portals that answer like `crm.item.get` send the code
#: `ACCESS_DENIED` instead (https://apidocs.bitrix24.com/api-reference/crm/universal/crm-item-get.html).
ACCESS_DENIED = frozenset({"Access denied", "Access denied.", "ACCESS_DENIED"})


def nothing_readable(counts: RunCounts) -> bool:
    """Every requested deal was refused for permissions: the webhook user, not the deals, is
    the problem, and a run that exports nothing must not look like a success."""
    reasons = set(counts.failed_permanent)
    return (
        counts.unique > 0
        and counts.exported == 0
        and bool(reasons)
        and reasons <= ACCESS_DENIED
        and not counts.failed_retryable
    )


def exit_code_for(counts: RunCounts) -> int:
    if counts.unaccounted != 0 or nothing_readable(counts):
        return EXIT_FATAL
    if sum(counts.failed_retryable.values()) > 0:
        return EXIT_RETRYABLE_FAILURES
    return EXIT_OK


def _reasons(by_reason: Mapping[str, int]) -> str:
    ordered = sorted(by_reason.items(), key=lambda kv: -kv[1])
    return ", ".join(f"{n} {reason}" for reason, n in ordered)


def render_summary(
    counts: RunCounts,
    *,
    output: str,
    seconds: float,
    drift: Sequence[str] = (),
    exported_now: int | None = None,
    entity: Entity = DEAL,
) -> list[str]:
    """Plain sentences for the operator, in the order they will be read in the morning.

    `drift` lists the portal's field changes since the previous completed run, one per line.
    `exported_now`: deals this attempt exported, when earlier attempts did part of the work; the
    rate is this attempt's own, not earlier attempts' deals over this attempt's time.
    """
    now = counts.exported if exported_now is None else exported_now
    rate = now / seconds if seconds > 0 else 0.0
    speed = f"{rate:,.0f} {entity.plural}/s"
    if exported_now is not None:
        speed = f"{exported_now:,} in this attempt at {speed}"
    lines = [
        f"exported {counts.exported:,} of {counts.unique:,} unique {entity.id_noun}s "
        f"in {seconds:,.1f} s ({speed}) into {output}",
    ]
    if counts.duplicates:
        lines.append(f"dropped {counts.duplicates:,} duplicate IDs from the input")
    if counts.invalid_input:
        lines.append(
            f"{counts.invalid_input:,} input lines were not valid {entity.id_noun}s "
            "(see the sidecar, stage 'input')"
        )
    if counts.failed_permanent:
        lines.append(
            f"permanently unavailable: {_reasons(counts.failed_permanent)} "
            f"(deleted or hidden {entity.plural}; no retry will change this)"
        )
    if counts.failed_retryable:
        lines.append(f"failed but retryable: {_reasons(counts.failed_retryable)}")
    if counts.record_errors:
        lines.append(
            f"{counts.record_errors:,} values could not be converted; their rows are in the data "
            "with the value null (see the sidecar, stage 'normalise')"
        )
    if drift:
        lines.append(f"the portal's fields changed since the previous run: {'; '.join(drift)}")
    if counts.failed or counts.invalid_input or counts.record_errors:
        lines.append(f"error sidecar: {output.rstrip('/')}/_errors/")
    if nothing_readable(counts):
        lines.append(
            f"the webhook's user could read none of the requested {entity.plural}: check its "
            f"CRM permissions ({entity.name} read access) or use a webhook of a user who can"
        )
    elif "Access denied" in counts.failed_permanent:
        lines.append(
            "'Access denied' without a period means the webhook's user lacks general "
            f"{entity.name} read permission: missing {entity.plural} cannot be told apart from "
            "hidden ones"
        )
    if counts.failed_retryable:
        lines.append(f"next: deal-export retry {output}")
    if counts.unaccounted:
        lines.append(f"BUG: {counts.unaccounted} IDs are unaccounted for; please report this run")
    return lines


__all__ = [
    "ACCESS_DENIED",
    "EXIT_FATAL",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_RETRYABLE_FAILURES",
    "EXIT_USAGE",
    "RunCounts",
    "exit_code_for",
    "nothing_readable",
    "render_summary",
]
