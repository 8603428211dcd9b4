"""Which method fetches the next batch: `crm.<entity>.get` per ID or `crm.<entity>.list` per 50 IDs.
Pure (no asyncio, no I/O; the caller passes the clock's `now`).

    choose(get_cost, list_cost, current, margin) -> (mode, reason)     the truth table
    Chooser(strategy)                                                  the run's state around it

Cost is the operating time a method spends per requested deal on THIS portal, measured as the
pacer measures it (`pipeline.fetch.pacing.observe`): what the cumulative `operating` of its
answers grows by per command, or the `processing` figure where a single command reports it
(which the docs' `time` example shows equal to what `operating` accumulates, REST docs
`api-reference/data-types.md#time`, `limits.md`). A list call's cost per deal includes the
follow-up `crm.<entity>.get` that every absent ID (deleted, hidden) costs. No official figure
compares one list of 50 with 50 gets, so `auto` measures both: one small probe batch of each
method first, the cheaper method afterwards, and a small probe of the other method every
`recheck_s`, since a portal's costs change with its load. A switch needs the other method to
be cheaper by `margin`, so that noise does not flip it batch by batch; on a tie list wins, as it
also sends 50 times fewer commands. The two methods draw on separate operating budgets
(each nested call is charged to its own method), so probes never eat into the other's budget.

A list answer with a row that was not asked for (a portal that ignores the `@ID` filter)
makes `auto` use `get` for the rest of the run; `list` fails the run instead (the engine's job).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from pipeline.entity import DEAL, Entity

Strategy = Literal["get", "list", "auto"]
Mode = Literal["get", "list"]
STRATEGIES: tuple[Strategy, ...] = ("get", "list", "auto")

#: The other method must be this much cheaper per deal before `auto` switches.
SWITCH_MARGIN = 0.1
#: How often (clock seconds) `auto` probes the method it is not using.
RECHECK_S = 120.0
#: Weight of older measurements per new one (a moving average that follows load changes).
DECAY = 0.7
#: Probes of list that yield no measurement before `auto` stops trying list.
MAX_LIST_PROBE_FAILURES = 3


def choose(
    get_cost: float | None,
    list_cost: float | None,
    current: Mode | None,
    margin: float = SWITCH_MARGIN,
) -> tuple[Mode, str]:
    """The cheaper method per deal, given what was measured (None: not yet)."""
    if list_cost is None and get_cost is None:
        return "get", "no cost measured yet"
    if list_cost is None:
        return "get", "list not measured"
    if get_cost is None:
        return "list", "get not measured"
    figures = f"list {_ms(list_cost)} vs get {_ms(get_cost)} operating per record"
    if current == "get" and list_cost > get_cost * (1 - margin):
        return "get", f"{figures}: list not cheaper by {margin:.0%}"
    if current == "list" and get_cost < list_cost * (1 - margin):
        return "get", f"{figures}: get cheaper"
    if current == "list" or list_cost <= get_cost:
        return "list", f"{figures}: list cheaper"
    return "get", f"{figures}: get cheaper"


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


@dataclass(slots=True)
class _Cost:
    """A decaying sum of operating seconds and of the deals they paid for."""

    seconds: float = 0.0
    deals: float = 0.0
    absent: float = 0.0
    samples: int = 0

    def add(self, seconds: float, deals: int, absent: int) -> None:
        self.seconds = self.seconds * DECAY + seconds
        self.deals = self.deals * DECAY + deals
        self.absent = self.absent * DECAY + absent
        self.samples += 1

    def per_deal(self) -> float | None:
        return None if self.deals <= 0 else self.seconds / self.deals

    def absent_share(self) -> float:
        return 0.0 if self.deals <= 0 else self.absent / self.deals


@dataclass(frozen=True, slots=True)
class Pick:
    """The method of the next batch; `probe`: a small batch sent to measure it."""

    mode: Mode
    probe: bool = False


@dataclass(slots=True)
class Chooser:
    """The strategy of one run: what to send next, what was measured, why."""

    strategy: Strategy = "auto"
    recheck_s: float = RECHECK_S
    margin: float = SWITCH_MARGIN
    mode: Mode | None = None
    reason: str = ""
    #: Set once list cannot be used for this run (`auto` only).
    list_off: str = ""
    _costs: dict[str, _Cost] = field(default_factory=lambda: {"get": _Cost(), "list": _Cost()})
    _probing: set[str] = field(default_factory=set)
    _last_probe: dict[str, float] = field(default_factory=dict)
    _list_failures: int = 0
    batches: dict[str, int] = field(default_factory=lambda: {"get": 0, "list": 0})

    def __post_init__(self) -> None:
        if self.strategy == "get":
            self.mode, self.reason = "get", "--strategy get"
        elif self.strategy == "list":
            self.mode, self.reason = "list", "--strategy list"

    def next_batch(self, now: float) -> Pick:
        """The method of the next primary batch (follow-ups of absent IDs are always get)."""
        if self.strategy != "auto":
            assert self.mode is not None
            return Pick(self.mode)
        if self.list_off:
            return Pick("get")
        for mode in ("list", "get"):
            if self._costs[mode].samples == 0 and mode not in self._probing:
                return self._probe(mode, now)
        if self.mode is None:
            # A probe is still out: carry on with get, the method that is known to work.
            return Pick("get")
        other: Mode = "get" if self.mode == "list" else "list"
        last = self._last_probe.get(other, now)
        if other not in self._probing and now - last >= self.recheck_s:
            return self._probe(other, now)
        return Pick(self.mode)

    def _probe(self, mode: Mode, now: float) -> Pick:
        self._probing.add(mode)
        self._last_probe[mode] = now
        return Pick(mode, probe=True)

    def cancel(self, pick: Pick) -> None:
        """`pick` was not used (nothing to send): its probe is still to be sent."""
        if pick.probe:
            self._probing.discard(pick.mode)

    def observed(self, mode: Mode, seconds: float, deals: int, absent: int = 0) -> None:
        """A batch of `mode` answered: `seconds` of operating time for `deals` requested IDs,
        `absent` of which need a follow-up get (list only)."""
        self.batches[mode] += 1
        self._probing.discard(mode)
        if deals <= 0:
            return
        self._costs[mode].add(max(0.0, seconds), deals, absent)
        if mode == "list":
            self._list_failures = 0
        self._decide()

    def settled(self, mode: Mode, measured: bool) -> None:
        """A batch of `mode` ended; without a measurement (it failed) a probe is sent again."""
        if measured:
            return
        self._probing.discard(mode)
        if mode == "list" and self.strategy == "auto" and self._costs["list"].samples == 0:
            self._list_failures += 1
            if self._list_failures >= MAX_LIST_PROBE_FAILURES:
                self.fall_back(f"{self._list_failures} list probes gave no usable answer")

    def fall_back(self, why: str) -> None:
        """List answers cannot be trusted (or used) on this portal: get from now on."""
        self.list_off = why
        self.mode, self.reason = "get", f"fell back to get: {why}"

    def per_deal(self) -> dict[str, float | None]:
        """Operating seconds per requested deal, follow-up gets of absent IDs included."""
        get_cost = self._costs["get"].per_deal()
        list_cost = self._costs["list"].per_deal()
        if list_cost is not None:
            list_cost += self._costs["list"].absent_share() * (get_cost or 0.0)
        return {"get": get_cost, "list": list_cost}

    def _decide(self) -> None:
        if self.strategy != "auto" or self.list_off:
            return
        costs = self.per_deal()
        if costs["get"] is None or costs["list"] is None:
            return
        self.mode, self.reason = choose(costs["get"], costs["list"], self.mode, self.margin)

    def report(self) -> dict[str, Any]:
        """For the manifest and the summary: which strategy ran, why, and the measured costs."""
        return {
            "strategy": self.strategy,
            "ran": self.mode or "get",
            "reason": self.reason or "no batch measured",
            "operating_s_per_deal": self.per_deal(),
            "batches": dict(self.batches),
        }

    def summary_line(self) -> str:
        return strategy_line(self.report())


def strategy_line(report: dict[str, Any], entity: Entity = DEAL) -> str:
    """One sentence of the run summary from `Chooser.report()` (as kept in the manifest)."""
    method = entity.list_method if report.get("ran") == "list" else entity.get_method
    return f"fetched with {method} (strategy {report.get('strategy')}: {report.get('reason')})"


__all__ = [
    "RECHECK_S",
    "STRATEGIES",
    "SWITCH_MARGIN",
    "Chooser",
    "Mode",
    "Pick",
    "Strategy",
    "choose",
    "strategy_line",
]
