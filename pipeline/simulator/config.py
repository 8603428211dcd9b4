"""Frozen configuration of the portal simulator: what portal to generate and how it misbehaves.

Every number is in *simulated* seconds; `time_scale=K` makes the simulator's clock run K times
faster than the wall, so a 10-minute operating window lasts 600/K real seconds.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from pipeline.simulator.timefmt import check_zone

FaultKind = Literal[
    "error_500",
    "html_502",
    "html_503",
    "html_504",
    "reset",
    "truncated",
    "slow",
    "no_time",
    "error_429",
]

#: Transport and server fault kinds (what a fault mix covers), in the fixed order used to map
#: one uniform draw onto a kind (reproducibility depends on this order never changing).
FAULT_KINDS: tuple[FaultKind, ...] = (
    "error_500",
    "html_502",
    "html_503",
    "html_504",
    "reset",
    "truncated",
    "slow",
    "no_time",
)

#: Limit answers a fault can fake; drawn after FAULT_KINDS, so adding them kept every earlier
#: seed's draws.
LIMIT_FAULT_KINDS: tuple[FaultKind, ...] = ("error_429",)
DRAW_ORDER: tuple[FaultKind, ...] = FAULT_KINDS + LIMIT_FAULT_KINDS

#: The webhook secret of a simulator unless one is given (tests and demos only).
DEFAULT_SECRET = "s1mw3bh00ks3cr3t"

#: How an empty multiple user field is sent: "mix" as on a real portal, or one form for all.
EmptyMultiple = Literal["mix", "false", "empty_string", "empty_list"]
EMPTY_MULTIPLE_FORMS: tuple[EmptyMultiple, ...] = ("mix", "false", "empty_string", "empty_list")
BatchBilling = Literal["nested", "batch"]
BATCH_BILLINGS: tuple[BatchBilling, ...] = ("nested", "batch")

#: Documented leaky-bucket presets: (drain rate per second, burst).
PLANS: dict[str, tuple[float, int]] = {"standard": (2.0, 50), "enterprise": (5.0, 250)}


@dataclass(frozen=True)
class FaultConfig:
    """Faults injected into `/rest/` requests, decided by the request's sequence number.

    Probabilities are per request, 0..1, and their sum must not exceed 1. The draw for request
    number n depends only on (`seed`, n), so the same seed yields the same faults on the same
    request numbers. `script` forces a kind on given request numbers (1-based) and wins over the
    draw. `methods`, when set, limits injection to requests for those REST methods (request
    numbers still count every request).

    Error faults (`error_500`, `error_429`, `html_50x`, `reset`) answer before the portal sees
    the call: no rate-limit or operating time is consumed. `truncated`, `slow` and `no_time`
    damage a real answer, so the work (and its operating charge) did happen.
    """

    error_500: float = 0.0
    html_502: float = 0.0
    html_503: float = 0.0
    html_504: float = 0.0
    reset: float = 0.0
    truncated: float = 0.0
    slow: float = 0.0
    no_time: float = 0.0
    #: HTTP 429 with an empty `error` code (what a 429 without a known code looks like).
    error_429: float = 0.0
    slow_s: float = 5.0
    seed: int | None = None
    script: Mapping[int, FaultKind] = field(default_factory=dict)
    methods: frozenset[str] | None = None

    def __post_init__(self) -> None:
        probs = [getattr(self, kind) for kind in DRAW_ORDER]
        if any(not 0.0 <= p <= 1.0 for p in probs):
            raise ValueError("fault probabilities must be within 0..1")
        if sum(probs) > 1.0 + 1e-9:
            raise ValueError("fault probabilities must sum to at most 1")
        if self.slow_s < 0:
            raise ValueError("slow_s must be >= 0")
        for n, kind in self.script.items():
            if n < 1 or kind not in DRAW_ORDER:
                raise ValueError(f"bad scripted fault {n}: {kind!r}")

    @property
    def active(self) -> bool:
        return bool(self.script) or any(getattr(self, kind) > 0 for kind in DRAW_ORDER)


@dataclass(frozen=True)
class OAuthSettings:
    """The simulated OAuth application and its initial token pair.

    `access_ttl_s` is the documented 1 hour; `refresh_ttl_s` the documented 180 days.
    """

    client_id: str = "local.sim0000000000001"
    client_secret: str = "sim-client-secret-0001"
    access_token: str = "sim-access-token-0001"
    refresh_token: str = "sim-refresh-token-0001"
    user_id: int = 1
    member_id: str = "a223c6b3710f85df22e9377d6c4f7553"
    scope: str = "crm"
    access_ttl_s: float = 3600.0
    refresh_ttl_s: float = 180 * 86400.0


@dataclass(frozen=True)
class SimulatorConfig:
    """What portal to generate and how it behaves.

    * `deals`: deals that exist (hidden ones included); IDs have gaps and deleted deals between.
    * `leads`: leads that exist, likewise, in an ID space of their own (`crm.lead.*`); the same
      hidden/deleted fractions, user field kinds and empty forms apply.
    * `rate`/`burst`: leaky bucket (requests drained per second / blocking threshold); `rate=0`
      disables it. `plan` fills both from the documented presets unless given explicitly.
    * `operating_budget_s`: per method per webhook/app, per 10-minute window; None = off
      (on-premise behaviour, responses then carry no `operating` keys).
    * `processing_ms`: operating time charged per `crm.deal.get` (per command inside `batch`).
    * `list_processing_ms` + `list_row_processing_ms`: operating time of one `crm.deal.list`
      call, a base (None = same as `processing_ms`) plus a part per returned row that carries
      more than its ID (a select of `ID` alone joins no field tables, so ID-only discovery pages
      cost the base alone). Charged to `crm.deal.list`'s own budget, apart from
      `crm.deal.get`'s (REST docs `limits.md`: each method is counted on its own). No public
      figure compares the two; the defaults are issue 13's model, 20 ms + 2 ms per row.
    * `server_tz`: fixed offset like `"+03:00"`/`"-05:00"` or an IANA zone (`"Europe/Berlin"`)
      in which the portal renders dates (rest module `rest_util.php`, `CRestUtil::ConvertDate`).
    * `poison_ids` / `poison_fraction`: visible deals whose text the portal cannot JSON-encode:
      any request that returns one (a plain `crm.deal.get`, a `batch` holding its get, or a
      `crm.deal.list` page holding its row with more than the ID, plain or in a `batch`)
      answers as a whole `{"error":"WRONG_ENCODING","error_description":"Wrong request
      encoding"}` with HTTP 200 (core `rest.php` `outputJson`). The fraction picks deals by a
      draw on (seed, ID), so the same seed poisons the same deals. `poison_answer="error_500"`
      answers such requests with HTTP 500 INTERNAL_SERVER_ERROR instead, as a request that
      fails on the server every time does.
    * `denied_code` / `denied_status`: the `error` code and HTTP status of a refused read
      (hidden deals; every deal with `can_read_deals=False`). The default is crm.deal.get's
      empty code with 400; `denied_code="ACCESS_DENIED"` answers like `crm.item.get`, and
      `denied_status=403` like portals that send it with 403 (the status shows on a plain
      call; inside `batch` a command's error sits under the batch's 200).
    * `can_read_deals=False`: the webhook user has no deal read permission at all: every
      `crm.deal.get` answers `Access denied.`, and missing deals `Access denied` (no period).
    * `user_fields`: names of the UF kinds to expose (None = the default set, see
      `pipeline.simulator.fields`; extra kinds such as `integer_multi` only when named).
    * `empty_multiple`: the wire form of an empty multiple UF. `"mix"` (default) is a real
      portal: mostly `false` (NULL column), some `""` (no UF row) and some `[]` (stored empty
      array), except that empty date/datetime multiples are always `""` and empty file
      multiples always `[]`, as the server's converters make them. `"false"`, `"empty_string"`
      or `"empty_list"` send that one form for every multiple UF, of every type (a test lever).
    * `list_ignores_id_filter`: `crm.deal.list` ignores an `@ID` filter (as a portal that
      does not know the operator would): it answers the first readable deals in ID order. A
      test lever for a client that must notice rows it did not ask for.
    * `batch_billing`: who a `batch` request's operating time is charged to. `"nested"`
      (default) is what the REST docs say (`limits.md`: the outer `batch` is not counted; each
      nested call counts against its own method). `"batch"` is what the official JS SDK's
      maintainers measured on a portal with the limiter on (github.com/bitrix24/b24jssdk pull
      request 539, issue 459): the whole request is charged to the method `batch` (one budget
      whatever the nested methods), the envelope's `time` carries that counter, and every
      nested command's `result_time` entry carries one and the same `operating`.
    * `comment_bytes`: every deal's COMMENTS is a text of about this many bytes (UTF-8), as on
      portals whose deals carry long notes or pasted e-mails: wide deals, for memory bounds
      that must hold by bytes rather than by deal count. 0 (default): the usual short notes.
    """

    deals: int = 1000
    leads: int = 1000
    seed: int = 1
    secret: str = DEFAULT_SECRET
    user_id: int = 1
    plan: Literal["standard", "enterprise"] | None = None
    rate: float = 0.0
    burst: int = 50
    operating_budget_s: float | None = None
    processing_ms: float = 20.0
    list_processing_ms: float | None = None
    list_row_processing_ms: float = 2.0
    time_scale: float = 1.0
    faults: FaultConfig = field(default_factory=FaultConfig)
    oauth: OAuthSettings = field(default_factory=OAuthSettings)
    server_tz: str = "+03:00"
    can_read_deals: bool = True
    hidden_fraction: float = 0.02
    deleted_fraction: float = 0.04
    poison_ids: frozenset[int] = frozenset()
    poison_fraction: float = 0.0
    poison_answer: Literal["wrong_encoding", "error_500"] = "wrong_encoding"
    denied_code: str = ""
    denied_status: int = 400
    user_fields: tuple[str, ...] | None = None
    cache_size: int = 10_000
    empty_multiple: EmptyMultiple = "mix"
    list_ignores_id_filter: bool = False
    comment_bytes: int = 0
    batch_billing: BatchBilling = "nested"

    def __post_init__(self) -> None:
        if self.deals < 0 or self.leads < 0:
            raise ValueError("deals and leads must be >= 0")
        if self.plan is not None:
            if self.plan not in PLANS:
                raise ValueError(f"unknown plan {self.plan!r}")
            rate, burst = PLANS[self.plan]
            if self.rate == 0.0:
                object.__setattr__(self, "rate", rate)
            if self.burst == 50:
                object.__setattr__(self, "burst", burst)
        if self.rate < 0 or self.burst < 1:
            raise ValueError("rate must be >= 0 and burst >= 1")
        if self.operating_budget_s is not None and self.operating_budget_s <= 0:
            raise ValueError("operating_budget_s must be > 0 (or None for no budget)")
        if self.processing_ms < 0 or (self.list_processing_ms or 0) < 0:
            raise ValueError("processing_ms must be >= 0")
        if self.list_row_processing_ms < 0:
            raise ValueError("list_row_processing_ms must be >= 0")
        if self.time_scale <= 0:
            raise ValueError("time_scale must be > 0")
        if not 0 <= self.hidden_fraction < 1 or not 0 <= self.deleted_fraction < 1:
            raise ValueError("hidden_fraction and deleted_fraction must be within [0, 1)")
        if not 0 <= self.poison_fraction < 1:
            raise ValueError("poison_fraction must be within [0, 1)")
        if self.poison_answer not in ("wrong_encoding", "error_500"):
            raise ValueError(f"unknown poison_answer {self.poison_answer!r}")
        if not 400 <= self.denied_status < 500:
            raise ValueError("denied_status must be a 4xx status")
        if not self.secret or "/" in self.secret:
            raise ValueError("secret must be a non-empty path segment")
        check_zone(self.server_tz)
        if self.comment_bytes < 0:
            raise ValueError("comment_bytes must be >= 0")
        if self.batch_billing not in BATCH_BILLINGS:
            raise ValueError(
                f"batch_billing must be one of {', '.join(BATCH_BILLINGS)}, "
                f"not {self.batch_billing!r}"
            )
        if self.empty_multiple not in EMPTY_MULTIPLE_FORMS:
            raise ValueError(
                f"empty_multiple must be one of {', '.join(EMPTY_MULTIPLE_FORMS)}, "
                f"not {self.empty_multiple!r}"
            )


__all__ = [
    "BATCH_BILLINGS",
    "DEFAULT_SECRET",
    "EMPTY_MULTIPLE_FORMS",
    "FAULT_KINDS",
    "PLANS",
    "BatchBilling",
    "EmptyMultiple",
    "FaultConfig",
    "FaultKind",
    "OAuthSettings",
    "SimulatorConfig",
]
