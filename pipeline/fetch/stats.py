"""Counters of one fetch run, for the run summary and the manifest."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(slots=True)
class FetchStats:
    """Mutable counters; one instance per client. Times are in clock (portal) seconds.

    `rate_wait_s` / `operating_wait_s`: time during which at least one request was held back
    by that limit (wall time on the clock, not summed over tasks), accrued as the run goes;
    `PortalClient.pacer.wait_totals()` adds a wait still open. `operating_peak_s`: the
    highest `operating` the portal reported for any method.
    """

    requests: int = 0
    commands: int = 0
    http_errors: int = 0
    transient_errors: int = 0
    rate_limited: int = 0
    operating_limited: int = 0
    operating_limited_commands: int = 0
    missing_commands: int = 0
    #: Batches split in halves to isolate a deal that fails the whole request.
    batch_splits: int = 0
    #: Health probes sent to tell a poison deal from an outage before a split.
    health_probes: int = 0
    rate_wait_s: float = 0.0
    operating_wait_s: float = 0.0
    operating_peak_s: float = 0.0
    token_refreshes: int = 0
    redirects: int = 0
    deals_fetched: int = 0
    deals_failed: int = 0
    retries: int = 0
    #: The list strategy: `crm.<entity>.list` commands sent, rows they returned, and requested IDs
    #: they did not return (each fetched again with `crm.<entity>.get` for its reason).
    list_commands: int = 0
    list_rows: int = 0
    list_followups: int = 0
    #: Body bytes of the list answers (as decoded from HTTP, the size held in memory).
    list_answer_bytes: int = 0

    @property
    def limit_wait_s(self) -> float:
        return self.rate_wait_s + self.operating_wait_s

    def as_dict(self) -> dict[str, float | int]:
        out: dict[str, float | int] = asdict(self)
        out["limit_wait_s"] = self.limit_wait_s
        return out


__all__ = ["FetchStats"]
