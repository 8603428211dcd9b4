"""Counters the simulator keeps for tests and benchmarks (`GET /_simulator/stats`)."""

from __future__ import annotations

from collections import Counter
from typing import Any


class Stats:
    """Mutable counters; `snapshot()` is the JSON-ready view."""

    def __init__(self) -> None:
        self.requests = 0
        self.by_method: Counter[str] = Counter()
        self.by_status: Counter[int] = Counter()
        self.by_method_status: Counter[tuple[str, int]] = Counter()
        self.rate_limited = 0
        self.operating_limited = 0  # top-level 429s
        self.operating_limited_commands = 0  # per-command 429s inside batch
        self.deals_served = 0  # deal records returned (get results and list rows)
        self.deal_gets = 0  # crm.deal.get executions, top level and inside batch
        self.deal_lists = 0  # crm.deal.list executions, likewise
        self.batch_commands = 0
        self.faults: Counter[str] = Counter()
        self.oauth_refreshes = 0

    def response(self, method: str, status: int) -> None:
        self.by_method[method] += 1
        self.by_status[status] += 1
        self.by_method_status[(method, status)] += 1

    def snapshot(self, operating_charged_s: float) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "by_method": dict(self.by_method),
            "by_status": {str(k): v for k, v in sorted(self.by_status.items())},
            "by_method_status": {
                f"{m} {s}": v for (m, s), v in sorted(self.by_method_status.items())
            },
            "rate_limited": self.rate_limited,
            "operating_limited": self.operating_limited,
            "operating_limited_commands": self.operating_limited_commands,
            "deals_served": self.deals_served,
            "deal_gets": self.deal_gets,
            "deal_lists": self.deal_lists,
            "batch_commands": self.batch_commands,
            "operating_seconds_charged": round(operating_charged_s, 6),
            "faults": dict(self.faults),
            "oauth_refreshes": self.oauth_refreshes,
        }


__all__ = ["Stats"]
