"""How long will N deals take? Pure arithmetic over the portal's limits, for `deal-export plan`.

Three ceilings, each a deals-per-second figure and a duration for N deals (inferred from
Bitrix24 REST docs `limits.md` and `settings/how-to-call-rest-api/batch.md`, which says nested
calls run sequentially):

    rate         the leaky bucket counts HTTP requests: a `batch` of 50 is one request, so
                 2 req/s x 50 = 100 deals/s on a standard plan (less headroom). The bucket starts
                 empty, so the first `burst` requests go at once.
    operating    each nested get command is charged to the method's operating-time budget
                 (480 s per 600 s window): 0.8 s of method time per second / cost per deal. A fresh
                 window can be spent at once; after that the budget refills at budget/window.
    concurrency  nested calls of a batch run one after another on the server, so one request
                 takes latency + batch_size x cost, and only `concurrency` are in flight.

The slowest ceiling binds. The per-deal cost is an assumption (`--ms-per-deal`): the portal reports
it as `time.operating` in each response, so measure it on a small run and plan with that.

The list strategy (`estimate_list`) is the same arithmetic with other units: one request carries
up to 20 crm.<entity>.list calls of up to 50 IDs each, and one call costs a base plus a part per
row (assumptions too: no official figure exists; `auto` measures both on the portal). Its calls
are charged to crm.<entity>.list's own budget.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Final, Literal

from pipeline.config import FetchConfig, LimitsConfig

LimitName = Literal["rate", "operating", "concurrency"]

#: The cloud cuts one REST request at 60 s, nested batch calls included (Bitrix24 REST docs,
#: `limits.md`).
REQUEST_CUTOFF_S: Final = 60.0
DEFAULT_MS_PER_DEAL: Final = 30.0
DEFAULT_LATENCY_MS: Final = 150.0
#: The list model's assumed cost of one crm.<entity>.list call: a base plus a part per row.
DEFAULT_LIST_MS: Final = 20.0
DEFAULT_LIST_ROW_MS: Final = 2.0
#: IDs per list call (one page).
LIST_PAGE: Final = 50
#: List calls per `batch` request: the engine's `LIST_BATCH_COMMANDS` (`pipeline.fetch.listing`),
#: which this pure module does not import (that would load the HTTP client for `plan`); a test
#: keeps the two equal. Fewer than batch's 50 because a 2,500-row answer briefly takes ~80 MB to
#: decode.
LIST_CALLS_PER_REQUEST: Final = 20


@dataclass(frozen=True, slots=True)
class PlanInputs:
    """Everything the estimate depends on; rates and budgets already net of headroom."""

    ids: int
    rate: float  # requests/s; 0 = no client-side rate limit
    burst: int
    batch_size: int
    concurrency: int
    ms_per_deal: float
    latency_ms: float
    operating_budget_s: float | None  # per window; None = no operating limit (on-premise)
    operating_window_s: float
    #: The records counted, in the texts (`Entity.plural`).
    noun: str = "deals"

    @classmethod
    def from_config(
        cls,
        ids: int,
        limits: LimitsConfig,
        fetch: FetchConfig,
        *,
        ms_per_deal: float = DEFAULT_MS_PER_DEAL,
        latency_ms: float = DEFAULT_LATENCY_MS,
        noun: str = "deals",
    ) -> PlanInputs:
        budget = limits.operating_budget_s
        return cls(
            ids=ids,
            rate=limits.effective_rate,
            burst=limits.effective_burst,
            batch_size=fetch.batch_size,
            concurrency=fetch.concurrency,
            ms_per_deal=ms_per_deal,
            latency_ms=latency_ms,
            operating_budget_s=None if budget is None else budget * (1 - limits.operating_headroom),
            operating_window_s=limits.operating_window_s,
            noun=noun,
        )


@dataclass(frozen=True, slots=True)
class Ceiling:
    """One limit: its sustained deals/s (inf if it does not apply) and the time it needs."""

    name: LimitName
    deals_per_s: float
    seconds: float
    detail: str


@dataclass(frozen=True, slots=True)
class PlanEstimate:
    inputs: PlanInputs
    requests: int
    ceilings: tuple[Ceiling, ...]
    binding: Ceiling
    seconds: float
    warnings: tuple[str, ...]

    @property
    def deals_per_s(self) -> float:
        return self.inputs.ids / self.seconds if self.seconds > 0 else math.inf


def estimate(inputs: PlanInputs) -> PlanEstimate:
    """The duration of exporting `inputs.ids` deals and the limit that decides it."""
    if inputs.ids < 0:
        raise ValueError("ids must be >= 0")
    n, batch = inputs.ids, inputs.batch_size
    cost = inputs.ms_per_deal / 1000
    requests = math.ceil(n / batch)
    per_request = inputs.latency_ms / 1000 + batch * cost

    if inputs.rate > 0:
        rate = Ceiling(
            "rate",
            inputs.rate * batch,
            max(0, requests - inputs.burst) / inputs.rate,
            f"{inputs.rate:g} req/s x {batch} {inputs.noun} per batch, burst {inputs.burst}",
        )
    else:
        rate = Ceiling("rate", math.inf, 0.0, "no client-side rate limit")

    budget, window = inputs.operating_budget_s, inputs.operating_window_s
    if budget is not None and cost > 0:
        spend = n * cost
        operating = Ceiling(
            "operating",
            budget / window / cost,
            max(0.0, spend - budget) * window / budget,
            f"{budget:g} s per {window:g} s / {inputs.ms_per_deal:g} ms per "
            f"{inputs.noun.removesuffix('s')}",
        )
    else:
        operating = Ceiling("operating", math.inf, 0.0, "no operating-time limit")

    conc_rate = inputs.concurrency * batch / per_request
    concurrency = Ceiling(
        "concurrency",
        conc_rate,
        n / conc_rate,
        f"{inputs.concurrency} in flight x {batch} {inputs.noun} / {per_request:.2f} s per request",
    )

    ceilings = (rate, operating, concurrency)
    # Durations decide; for inputs too small to reach any limit, the lowest ceiling is named.
    binding = max(ceilings, key=lambda c: (c.seconds, -c.deals_per_s))
    seconds = binding.seconds + (per_request if n else 0.0)
    return PlanEstimate(
        inputs=inputs,
        requests=requests,
        ceilings=ceilings,
        binding=binding,
        seconds=seconds,
        warnings=_warnings(inputs, per_request, binding),
    )


def estimate_list(
    inputs: PlanInputs,
    list_ms: float = DEFAULT_LIST_MS,
    row_ms: float = DEFAULT_LIST_ROW_MS,
) -> PlanEstimate:
    """The same estimate for the list strategy: up to LIST_CALLS_PER_REQUEST list calls of
    LIST_PAGE IDs per request, each costing `list_ms + LIST_PAGE * row_ms` (deals a list call
    does not return cost one crm.<entity>.get more each; not modelled here)."""
    per_deal = (list_ms + LIST_PAGE * row_ms) / LIST_PAGE
    calls = min(inputs.batch_size, LIST_CALLS_PER_REQUEST)
    return estimate(replace(inputs, batch_size=calls * LIST_PAGE, ms_per_deal=per_deal))


def auto_pick(get: PlanEstimate, listed: PlanEstimate) -> Literal["get", "list"]:
    """What `auto` would use: the method with less operating time per deal (list on a tie)."""
    return "list" if listed.inputs.ms_per_deal <= get.inputs.ms_per_deal else "get"


def _warnings(inputs: PlanInputs, per_request: float, binding: Ceiling) -> tuple[str, ...]:
    out = []
    if per_request > REQUEST_CUTOFF_S:
        out.append(
            f"one batch of {inputs.batch_size} would take {per_request:.0f} s; the portal cuts "
            f"requests at {REQUEST_CUTOFF_S:.0f} s: lower fetch.batch_size"
        )
    if binding.name == "concurrency":
        out.append(
            "concurrency binds: more batches in flight (fetch.concurrency) would go faster, "
            "up to the next limit"
        )
    if binding.name == "operating":
        out.append(
            "the operating-time budget binds: more concurrency will not help; the estimate is "
            "only as good as --ms-per-deal (responses report time.operating: measure it)"
        )
    return tuple(out)


__all__ = [
    "DEFAULT_LATENCY_MS",
    "DEFAULT_LIST_MS",
    "DEFAULT_LIST_ROW_MS",
    "DEFAULT_MS_PER_DEAL",
    "REQUEST_CUTOFF_S",
    "Ceiling",
    "LimitName",
    "PlanEstimate",
    "PlanInputs",
    "auto_pick",
    "estimate",
    "estimate_list",
]
