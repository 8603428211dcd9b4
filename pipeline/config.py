"""Typed, frozen, validated configuration: built once, then passed down.

Only the dataclasses live here; reading TOML, environment and command-line overrides into them
is `pipeline.config_load`. The core never sees click or raw dicts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from pipeline.errors import UsageError

Plan = Literal["standard", "enterprise", "custom"]
PartitionTransform = Literal["none", "value", "year", "month", "day"]
ExistingDataBehavior = Literal["error", "overwrite", "resume", "new_run"]

#: Documented leaky-bucket parameters per plan: drain rate (req/s) and burst (requests).
PLAN_LIMITS: dict[str, tuple[float, int]] = {
    "standard": (2.0, 50),
    "enterprise": (5.0, 250),
}

#: Historical cloud operating budget: 480 s of one method's execution per 10-minute window.
DEFAULT_OPERATING_BUDGET_S = 480.0
OPERATING_WINDOW_S = 600.0


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
    token_url: str = "https://oauth.bitrix24.tech/oauth/token/"
    token_file: str | None = None


Auth = WebhookAuth | OAuthAuth


@dataclass(frozen=True, slots=True)
class LimitsConfig:
    """The portal's limits as the client paces itself against them.

    `headroom` is the fraction of rate and burst left for other integrations: the portal's bucket
    is shared per source IP, so a nightly load and a backfill from one host compete for it.
    `operating_budget_s=None` turns operating-time pacing off (on-premise portals).
    """

    rate: float = 2.0
    burst: int = 50
    headroom: float = 0.1
    operating_budget_s: float | None = DEFAULT_OPERATING_BUDGET_S
    operating_window_s: float = OPERATING_WINDOW_S
    operating_headroom: float = 0.05

    def __post_init__(self) -> None:
        if self.rate < 0:
            raise UsageError("limits.rate must be >= 0 (0 means no client-side rate limit)")
        if self.burst < 1:
            raise UsageError("limits.burst must be >= 1")
        if not 0 <= self.headroom < 1:
            raise UsageError("limits.headroom must be in [0, 1)")
        if self.operating_budget_s is not None and self.operating_budget_s <= 0:
            raise UsageError("limits.operating_budget_s must be > 0")
        if self.operating_window_s <= 0:
            raise UsageError("limits.operating_window_s must be > 0")
        if not 0 <= self.operating_headroom < 1:
            raise UsageError("limits.operating_headroom must be in [0, 1)")

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

    connect_timeout_s: float = 10.0
    request_timeout_s: float = 75.0
    ca_bundle: str | None = None
    verify_tls: bool = True

    def __post_init__(self) -> None:
        if self.connect_timeout_s <= 0 or self.request_timeout_s <= 0:
            raise UsageError("transport timeouts must be > 0")


@dataclass(frozen=True, slots=True)
class FetchConfig:
    """How IDs are fetched: commands per `batch`, batches in flight, attempts per ID."""

    batch_size: int = 50
    concurrency: int = 4
    max_attempts: int = 5
    backoff_base_s: float = 1.0
    backoff_max_s: float = 60.0

    def __post_init__(self) -> None:
        if not 1 <= self.batch_size <= 50:
            raise UsageError("fetch.batch_size must be between 1 and 50 (the portal's maximum)")
        if self.concurrency < 1:
            raise UsageError("fetch.concurrency must be >= 1")
        if self.max_attempts < 1:
            raise UsageError("fetch.max_attempts must be >= 1")
        if self.backoff_base_s < 0 or self.backoff_max_s < self.backoff_base_s:
            raise UsageError("fetch.backoff_base_s must be >= 0 and <= fetch.backoff_max_s")


@dataclass(frozen=True, slots=True)
class OutputConfig:
    """Where and how the dataset is written (names follow pyarrow's `write_dataset`)."""

    root: str
    partition_by: str | None = "DATE_CREATE"
    partition_transform: PartitionTransform = "month"
    existing_data_behavior: ExistingDataBehavior = "error"
    chunk_size: int = 10_000
    max_rows_per_group: int = 64 * 1024
    compression: str = "zstd"

    def __post_init__(self) -> None:
        if not self.root:
            raise UsageError("output.root must not be empty")
        if self.chunk_size < 1:
            raise UsageError("output.chunk_size must be >= 1")
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


__all__ = [
    "DEFAULT_OPERATING_BUDGET_S",
    "OPERATING_WINDOW_S",
    "PLAN_LIMITS",
    "Auth",
    "ExistingDataBehavior",
    "FetchConfig",
    "LimitsConfig",
    "OAuthAuth",
    "OutputConfig",
    "PartitionTransform",
    "Plan",
    "RunConfig",
    "TransportConfig",
    "WebhookAuth",
]
