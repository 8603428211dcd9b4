"""Typed, frozen, validated configuration: built once, then passed down.

Only the dataclasses live here; reading TOML, environment and command-line overrides into them
is `pipeline.config_load`. The core never sees click or raw dicts. Defaults, ranges and choices
come from the declarations in `pipeline.settings` (`default(...)`, `check_fields(...)`), so a
dataclass built directly (the Python API, tests) is checked exactly as a loaded one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Final, Literal

from pipeline.entity import EntityName
from pipeline.errors import UsageError
from pipeline.settings import check_fields, default

Plan = Literal["standard", "enterprise", "custom"]
PartitionTransform = Literal["none", "value", "year", "month", "day"]
ExistingDataBehavior = Literal["error", "overwrite", "resume", "new_run"]
#: `parquet`: the folder sink; `delta`: one Delta table merged on ID (pipeline/output/delta).
TableFormat = Literal["parquet", "delta"]
#: Which schema changes a Delta output follows (pipeline/output/delta/contract.py).
SchemaContract = Literal["add-columns", "evolve", "freeze"]
FetchStrategy = Literal["get", "list", "auto"]
#: The strategy of a FetchConfig built in code rather than loaded from settings.
LIBRARY_STRATEGY: Final = "get"

#: Documented leaky-bucket parameters per plan: drain rate (req/s) and burst (requests).
PLAN_LIMITS: dict[str, tuple[float, int]] = {
    "standard": (2.0, 50),
    "enterprise": (5.0, 250),
}

#: Historical cloud operating budget: 480 s of one method's execution per 10-minute window.
DEFAULT_OPERATING_BUDGET_S = default("limits.operating_budget_s", float)
OPERATING_WINDOW_S = default("limits.operating_window_s", float)


@dataclass(frozen=True, slots=True)
class WebhookAuth:
    """Inbound webhook: `https://<portal>/rest/<user_id>/<secret>/` (trailing slash optional)."""

    url: str


@dataclass(frozen=True, slots=True)
class OAuthAuth:
    """OAuth 2.0 application: calls go to `<endpoint><method>` with `auth=<access_token>`.

    `token_file` is where the tokens were read from, if a token file: the rotated pair of a
    refresh is written back there.
    """

    endpoint: str
    access_token: str
    refresh_token: str
    client_id: str
    client_secret: str
    token_url: str = default("portal.oauth.token_url", str)
    token_file: str | None = None


Auth = WebhookAuth | OAuthAuth


@dataclass(frozen=True, slots=True)
class LimitsConfig:
    """The portal's limits as the client paces itself against them.

    `headroom` is the fraction of rate and burst left for other integrations: the portal's bucket
    is shared per source IP, so a nightly load and a backfill from one host compete for it.
    `operating_budget_s=None` turns operating-time pacing off (on-premise portals).
    """

    rate: float = default("limits.rate", float)
    burst: int = default("limits.burst", int)
    headroom: float = default("limits.headroom", float)
    operating_budget_s: float | None = DEFAULT_OPERATING_BUDGET_S
    operating_window_s: float = OPERATING_WINDOW_S
    operating_headroom: float = default("limits.operating_headroom", float)

    def __post_init__(self) -> None:
        check_fields("limits", self)

    @classmethod
    def for_plan(cls, plan: str, **overrides: object) -> LimitsConfig:
        """Limits of a documented plan (`standard`, `enterprise`), with explicit overrides."""
        if plan not in PLAN_LIMITS:
            raise UsageError(f"unknown plan {plan!r}: expected one of {sorted(PLAN_LIMITS)}")
        rate, burst = PLAN_LIMITS[plan]
        values: dict[str, object] = {"rate": rate, "burst": burst, **overrides}
        return cls(**values)  # type: ignore[arg-type]

    @property
    def effective_rate(self) -> float:
        return self.rate * (1 - self.headroom)

    @property
    def effective_burst(self) -> int:
        return max(1, int(self.burst * (1 - self.headroom)))


@dataclass(frozen=True, slots=True)
class TransportConfig:
    """HTTP behaviour. The cloud cuts a request at 60 s, so the read timeout sits above that."""

    connect_timeout_s: float = default("transport.connect_timeout_s", float)
    request_timeout_s: float = default("transport.request_timeout_s", float)
    ca_bundle: str | None = None
    verify_tls: bool = default("transport.verify_tls", bool)

    def __post_init__(self) -> None:
        check_fields("transport", self)


@dataclass(frozen=True, slots=True)
class FetchConfig:
    """How IDs are fetched: commands per `batch`, batches in flight, attempts per ID, and the
    method (`strategy`: `crm.<entity>.get` per ID, `crm.<entity>.list` per 50 IDs, or `auto`, the
    cheaper one as measured on the portal; see `pipeline.fetch.strategy`)."""

    batch_size: int = default("fetch.batch_size", int)
    concurrency: int = default("fetch.concurrency", int)
    max_attempts: int = default("fetch.max_attempts", int)
    backoff_base_s: float = default("fetch.backoff_base_s", float)
    backoff_max_s: float = default("fetch.backoff_max_s", float)
    #: A run's settings default to "auto" (`pipeline.settings`); code that builds a FetchConfig
    #: itself gets "get", one request per ID (the library default: exact request counts).
    strategy: FetchStrategy = LIBRARY_STRATEGY

    def __post_init__(self) -> None:
        check_fields("fetch", self)
        if self.backoff_max_s < self.backoff_base_s:
            raise UsageError("fetch.backoff_base_s must be <= fetch.backoff_max_s")
        if self.strategy == "list" and self.batch_size == 1:
            raise UsageError("fetch.strategy = list needs batch (fetch.batch_size > 1)")


#: `name:` at the start of a root: a URI scheme, which needs `//` after it (RFC 3986 §3.2 for the
#: schemes pyarrow opens: `s3://`, `gs://`, `file://` ...). One letter is a drive, not a scheme.
_SCHEME_PREFIX: Final = re.compile(r"([A-Za-z][A-Za-z0-9+.-]+):")


def check_root_scheme(root: str) -> None:
    """Refuse a root that starts like a URI but is not one (`delta:/tmp/x`, `s3:bucket/p`):
    taken as a local path, it would quietly become a folder named `delta:` in the working
    directory. A local folder whose name has a colon can still be named as `./name:...`."""
    match = _SCHEME_PREFIX.match(root)
    if match is None or root[match.end() :].startswith("//"):
        return
    scheme = match.group(1)
    raise UsageError(
        f"output root {root!r} starts with {scheme + ':'!r} but is not a URI "
        f"(expected {scheme}://...); a Delta table is chosen with --table-format delta, and a "
        f"local folder whose name holds a colon is written ./{root}"
    )


@dataclass(frozen=True, slots=True)
class OutputConfig:
    """Where and how the dataset is written (names follow pyarrow's `write_dataset`)."""

    root: str
    partition_by: str | None = default("output.partition_by", str)
    partition_transform: PartitionTransform = "month"
    existing_data_behavior: ExistingDataBehavior = "error"
    chunk_size: int = default("output.chunk_size", int)
    max_rows_per_group: int = default("output.max_rows_per_group", int)
    compression: str = default("output.compression", str)
    table_format: TableFormat = "parquet"
    schema_contract: SchemaContract = "add-columns"
    detect_deletes: bool = default("output.detect_deletes", bool)
    hard_delete: bool = default("output.hard_delete", bool)

    def __post_init__(self) -> None:
        if not self.root:
            raise UsageError("output.root must not be empty")
        check_root_scheme(self.root)
        check_fields("output", self)
        if self.partition_by is None and self.partition_transform != "none":
            object.__setattr__(self, "partition_transform", "none")


@dataclass(frozen=True, slots=True)
class RunConfig:
    """Everything one `deal-export run` needs."""

    auth: Auth
    output: OutputConfig
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    transport: TransportConfig = field(default_factory=TransportConfig)
    fetch: FetchConfig = field(default_factory=FetchConfig)
    log_format: Literal["text", "json"] = "text"
    #: The CRM entity exported (`pipeline.entity.ENTITIES`).
    entity: EntityName = "deal"

    def __post_init__(self) -> None:
        check_fields("", self)


__all__ = [
    "DEFAULT_OPERATING_BUDGET_S",
    "OPERATING_WINDOW_S",
    "PLAN_LIMITS",
    "Auth",
    "ExistingDataBehavior",
    "FetchConfig",
    "FetchStrategy",
    "LimitsConfig",
    "OAuthAuth",
    "OutputConfig",
    "PartitionTransform",
    "Plan",
    "RunConfig",
    "SchemaContract",
    "TableFormat",
    "TransportConfig",
    "WebhookAuth",
]
