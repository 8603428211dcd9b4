"""Every setting declared once: key, kind, range, choices, default, environment name, secret
flag, command-line flag and help text.

The TOML and environment loader (`pipeline.config_load`), the dataclass checks
(`pipeline.config`) and the click options (`pipeline.cli._options`) are all derived from
`SETTINGS`, so they cannot disagree. Adding a setting is one `Setting(...)` line here plus its
dataclass field; a setting with `flags` appears on every command that lists its key.

Adding a setting:
1. one `Setting(...)` in `SETTINGS` (kind, default, range or choices; `flags` and `help` if the
   command line takes it; `env` only when the name is not `DEAL_EXPORT_<SECTION>_<KEY>`);
2. the dataclass field, its default read with `default(key, type)`;
3. its key in the `setting_options(...)` of each command that takes it (`PORTAL_SETTINGS` in
   `pipeline.cli.run` for every command that talks to a portal).
The click parameter is the key with underscores (`fetch.batch_size` -> `fetch_batch_size`).

Pure: no click, no I/O. The checks raise `UsageError` with the texts users see.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields, is_dataclass
from typing import Final, Literal, TypeVar

from pipeline.entity import ENTITY_NAMES
from pipeline.errors import UsageError

Kind = Literal["str", "int", "float", "bool", "choice", "budget", "timestamp"]
T = TypeVar("T")

ENV_PREFIX: Final = "DEAL_EXPORT_"

PLANS: Final = ("standard", "enterprise", "custom")
COMPRESSIONS: Final = ("zstd", "snappy", "gzip", "lz4", "brotli", "none")
PARTITION_TRANSFORMS: Final = ("none", "value", "year", "month", "day")
EXISTING_DATA_BEHAVIORS: Final = ("error", "overwrite", "resume", "new_run")
ID_FORMATS: Final = ("auto", "text", "csv", "parquet", "range")
LOG_FORMATS: Final = ("text", "json")
TABLE_FORMATS: Final = ("parquet", "delta")
SCHEMA_CONTRACTS: Final = ("add-columns", "evolve", "freeze")
FETCH_STRATEGIES: Final = ("get", "list", "auto")


@dataclass(frozen=True, slots=True)
class Setting:
    """One setting. `minimum`/`maximum` are inclusive unless `above_min`/`below_max`.

    `flags` are the command-line spellings (the first is the one errors name); `flag_sets`
    makes a bool setting a switch that sets this value (`--no-verify-tls` sets False).
    `is_file` makes the option a click path to a file. `default` is what the dataclass field
    starts at (`None`: not set).
    """

    key: str
    kind: Kind
    default: object = None
    choices: tuple[str, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    above_min: bool = False
    below_max: bool = False
    secret: bool = False
    env: str = ""
    flags: tuple[str, ...] = ()
    help: str = ""
    metavar: str | None = None
    is_file: bool = False
    flag_sets: bool | None = None

    @property
    def env_name(self) -> str:
        """`env`, else `DEAL_EXPORT_<SECTION>_<KEY>`."""
        return self.env or ENV_PREFIX + self.key.replace(".", "_").upper()

    @property
    def dest(self) -> str:
        """The click parameter name: the dotted key with underscores."""
        return self.key.replace(".", "_")

    @property
    def flag(self) -> str | None:
        return self.flags[0] if self.flags else None


# Ranges follow the portal where it has one: at most 50 commands per batch (REST docs
# `settings/how-to-call-rest-api/batch.md`; rest module `rest_util.php`, BATCH_MAX_LENGTH).
SETTINGS: Final[tuple[Setting, ...]] = (
    Setting(
        "log_format",
        "choice",
        "text",
        choices=LOG_FORMATS,
        flags=("--log-format",),
        help="text (default) or one JSON object per line; in JSON the summary is one "
        "JSON object on stdout.",
    ),
    Setting(
        "entity",
        "choice",
        "deal",
        choices=ENTITY_NAMES,
        flags=("--entity",),
        help="The CRM entity to export: deal (default) or lead.",
    ),
    # ------------------------------------------------------------------------------ portal
    Setting(
        "portal.webhook_url",
        "str",
        secret=True,
        env="BITRIX24_WEBHOOK_URL",
        flags=("--webhook",),
        help="Inbound webhook URL. Prefer BITRIX24_WEBHOOK_URL: "
        "a URL on the command line is visible to other users of the machine.",
    ),
    Setting(
        "portal.webhook_url_file",
        "str",
        env="BITRIX24_WEBHOOK_URL_FILE",
        flags=("--webhook-file",),
        is_file=True,
        help="File holding the webhook URL.",
    ),
    Setting("portal.oauth.endpoint", "str", env="BITRIX24_OAUTH_ENDPOINT"),
    Setting("portal.oauth.client_id", "str", env="BITRIX24_OAUTH_CLIENT_ID"),
    Setting("portal.oauth.client_secret", "str", secret=True, env="BITRIX24_OAUTH_CLIENT_SECRET"),
    Setting("portal.oauth.client_secret_file", "str", env="BITRIX24_OAUTH_CLIENT_SECRET_FILE"),
    Setting("portal.oauth.access_token", "str", secret=True, env="BITRIX24_OAUTH_ACCESS_TOKEN"),
    Setting("portal.oauth.access_token_file", "str", env="BITRIX24_OAUTH_ACCESS_TOKEN_FILE"),
    Setting("portal.oauth.refresh_token", "str", secret=True, env="BITRIX24_OAUTH_REFRESH_TOKEN"),
    Setting("portal.oauth.refresh_token_file", "str", env="BITRIX24_OAUTH_REFRESH_TOKEN_FILE"),
    Setting(
        "portal.oauth.token_file",
        "str",
        env="BITRIX24_OAUTH_TOKEN_FILE",
        flags=("--token-file",),
        is_file=True,
        help="OAuth: JSON file with access_token and refresh_token; "
        "a refresh writes the new pair back to it.",
    ),
    Setting(
        "portal.oauth.token_url",
        "str",
        "https://oauth.bitrix24.tech/oauth/token/",
        env="BITRIX24_OAUTH_TOKEN_URL",
    ),
    # ------------------------------------------------------------------------------ limits
    Setting(
        "limits.plan",
        "choice",
        "standard",
        choices=PLANS,
        flags=("--plan",),
        help="The portal's plan: sets rate and burst (standard 2/s, 50).",
    ),
    Setting(
        "limits.rate",
        "float",
        2.0,
        minimum=0,
        flags=("--rate",),
        help="Requests per second the portal drains (0: no client-side limit).",
    ),
    Setting(
        "limits.burst",
        "int",
        50,
        minimum=1,
        flags=("--burst",),
        help="Requests the portal's bucket holds.",
    ),
    Setting(
        "limits.headroom",
        "float",
        0.1,
        minimum=0,
        maximum=1,
        below_max=True,
        flags=("--headroom",),
        help="Share of rate and burst left to other integrations (0..1, default 0.1).",
    ),
    Setting(
        "limits.operating_budget_s",
        "budget",
        480.0,
        minimum=0,
        above_min=True,
        flags=("--operating-budget",),
        metavar="SECONDS|off",
        help="Seconds of the get method's time per 10 minutes (480), or 'off'.",
    ),
    Setting("limits.operating_window_s", "float", 600.0, minimum=0, above_min=True),
    Setting("limits.operating_headroom", "float", 0.05, minimum=0, maximum=1, below_max=True),
    # --------------------------------------------------------------------------- transport
    Setting("transport.connect_timeout_s", "float", 10.0, minimum=0, above_min=True),
    # The cloud cuts a request at 60 s, so the read timeout sits above that.
    Setting("transport.request_timeout_s", "float", 75.0, minimum=0, above_min=True),
    Setting(
        "transport.ca_bundle",
        "str",
        flags=("--ca-bundle",),
        is_file=True,
        help="PEM file of the CA that signed an on-premise portal's certificate.",
    ),
    Setting(
        "transport.verify_tls",
        "bool",
        True,
        flags=("--no-verify-tls",),
        flag_sets=False,
        help="Do not check the portal's TLS certificate (a warning says so; prefer --ca-bundle).",
    ),
    # ------------------------------------------------------------------------------- fetch
    Setting(
        "fetch.batch_size",
        "int",
        50,
        minimum=1,
        maximum=50,
        flags=("--batch-size",),
        help="Get commands per batch (1-50, default 50).",
    ),
    Setting(
        "fetch.concurrency",
        "int",
        4,
        minimum=1,
        maximum=256,
        flags=("--concurrency",),
        help="Batch requests in flight (1-256, default 4).",
    ),
    Setting(
        "fetch.max_attempts",
        "int",
        5,
        minimum=1,
        flags=("--max-attempts",),
        help="Attempts per ID on transient faults.",
    ),
    Setting("fetch.backoff_base_s", "float", 1.0, minimum=0),
    Setting("fetch.backoff_max_s", "float", 60.0, minimum=0),
    Setting(
        "fetch.strategy",
        "choice",
        "auto",
        choices=FETCH_STRATEGIES,
        flags=("--strategy",),
        help="get: one get command per ID; list: one list call per 50 IDs (@ID filter); auto "
        "(default): the cheaper per deal as measured on this portal, re-checked as the run goes.",
    ),
    # ------------------------------------------------------------------------------ output
    Setting(
        "output.root",
        "str",
        flags=("--out",),
        help="Output root: a directory, s3://bucket/prefix or gs://...",
    ),
    Setting(
        "output.partition_by",
        "str",
        "DATE_CREATE",
        flags=("--partition-by",),
        help="Partition column (default DATE_CREATE); 'none' for none.",
    ),
    Setting(
        "output.partition_transform",
        "choice",
        "month",
        choices=PARTITION_TRANSFORMS,
        flags=("--partition-transform",),
        help="How the partition column's value names a folder (default month).",
    ),
    Setting(
        "output.existing_data_behavior",
        "choice",
        "error",
        choices=EXISTING_DATA_BEHAVIORS,
        flags=("--existing-data-behavior",),
        help="What to do when --out holds a completed export (default error). One that ended "
        "with failures a retry may fix (exit 3) is not replaced or refused but retried, unless "
        "overwrite. new_run keeps every run in its own --out/run_id=<id>/ directory (nightly).",
    ),
    Setting(
        "output.chunk_size",
        "int",
        10_000,
        minimum=1,
        flags=("--chunk-size",),
        help="IDs per committed chunk (resume granularity).",
    ),
    Setting("output.max_rows_per_group", "int", 64 * 1024, minimum=1),
    Setting("output.compression", "choice", "zstd", choices=COMPRESSIONS),
    Setting(
        "output.table_format",
        "choice",
        "parquet",
        choices=TABLE_FORMATS,
        flags=("--table-format",),
        help="parquet (default): partitioned Parquet files; delta: one Delta table keyed by ID "
        "that every run merges into.",
    ),
    Setting(
        "output.schema_contract",
        "choice",
        "add-columns",
        choices=SCHEMA_CONTRACTS,
        flags=("--schema-contract",),
        help="Delta: which portal field changes the table follows (default add-columns: new "
        "fields become columns, a changed type stops the run; evolve applies it; freeze: none).",
    ),
    Setting(
        "output.detect_deletes",
        "bool",
        False,
        flags=("--detect-deletes",),
        flag_sets=True,
        help="Delta: after the run, list every ID on the portal and mark the rows of deals it "
        "deleted (_deleted_at), as deal-export reconcile does.",
    ),
    Setting(
        "output.hard_delete",
        "bool",
        False,
        flags=("--hard-delete",),
        flag_sets=True,
        help="With --detect-deletes: remove the rows of deleted deals instead of marking them.",
    ),
    # --------------------------------------------------------------------------------- ids
    Setting(
        "ids.source",
        "str",
        flags=("--ids",),
        metavar="PATH|RANGES",
        help="ID file (text, .csv, .parquet), '-' for stdin, "
        "or ranges like 1-5000 with --ids-format range.",
    ),
    Setting(
        "ids.column",
        "str",
        flags=("--ids-column",),
        metavar="NAME",
        help="Column holding the IDs in a CSV or Parquet file (default ID; text and ranges have "
        "no columns, so it is ignored for them).",
    ),
    Setting(
        "ids.format",
        "choice",
        "auto",
        choices=ID_FORMATS,
        flags=("--ids-format",),
        help="How to read --ids (default auto: by the file's name and content).",
    ),
    Setting(
        "ids.modified_since",
        "timestamp",
        flags=("--modified-since",),
        help="Export deals modified since this ISO time with zone, or a date (midnight UTC).",
    ),
    Setting(
        "ids.since_last_run",
        "bool",
        False,
        flags=("--since-last-run",),
        flag_sets=True,
        help="Export deals modified since the previous successful run into --out.",
    ),
    Setting(
        "ids.overlap_s",
        "float",
        300.0,
        minimum=0,
        flags=("--overlap",),
        help="Seconds to reach back before the time, for edits made during the last run.",
    ),
    Setting(
        "ids.start_from",
        "timestamp",
        flags=("--start-from",),
        help="With --since-last-run: where the first run starts, while --out holds no "
        "watermark yet (ISO time with zone, or a date: midnight UTC). Ignored once a run has "
        "completed.",
    ),
)

BY_KEY: Final[Mapping[str, Setting]] = {s.key: s for s in SETTINGS}
BY_ENV: Final[Mapping[str, Setting]] = {s.env_name: s for s in SETTINGS}
#: Every table a TOML file may hold: each dotted prefix of a key ("portal", "portal.oauth").
SECTIONS: Final[tuple[str, ...]] = tuple(
    dict.fromkeys(
        ".".join(s.key.split(".")[:n]) for s in SETTINGS for n in range(1, s.key.count(".") + 1)
    )
)
#: The option that sets each setting, so an error names what the user typed.
FLAGS: Final[Mapping[str, str]] = {s.key: s.flags[0] for s in SETTINGS if s.flags}


def setting(key: str) -> Setting:
    return BY_KEY[key]


def default(key: str, kind: type[T]) -> T:
    """The declared default of `key`, typed for a dataclass field (`rate: float = default(...)`)."""
    value = BY_KEY[key].default
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind):
        raise TypeError(f"{key}: declared default {value!r} is not {kind.__name__}")
    return value


# ------------------------------------------------------------------------------------- checks


def check_choice(spec: Setting, value: str, where: str, shown: str) -> None:
    if value not in spec.choices:
        raise UsageError(f"{where} must be one of {', '.join(spec.choices)}{shown}")


def check_range(spec: Setting, number: float, where: str, shown: str) -> None:
    """Raise unless `number` lies in the declared range: `<where> must be >= 0, got -1`."""
    if spec.minimum is not None:
        low = spec.minimum
        if number < low or (spec.above_min and number == low):
            op = ">" if spec.above_min else ">="
            raise UsageError(f"{where} must be {op} {_fmt(low)}{shown}")
    if spec.maximum is not None:
        high = spec.maximum
        if number > high or (spec.below_max and number == high):
            op = "<" if spec.below_max else "<="
            raise UsageError(f"{where} must be {op} {_fmt(high)}{shown}")


def shown_value(spec: Setting, raw: object) -> str:
    """`, got <raw>` for an error, or nothing for a secret."""
    return "" if spec.secret else f", got {raw!r}"


def check_fields(section: str, obj: object) -> None:
    """Check each field of the dataclass `obj` that `section.<field>` declares: ranges and
    choices, with the loader's error texts. None means "not set" and passes."""
    assert is_dataclass(obj)
    for f in fields(obj):
        spec = BY_KEY.get(f"{section}.{f.name}" if section else f.name)
        if spec is not None:
            check_value(spec, getattr(obj, f.name))


def check_value(spec: Setting, value: object, where: str | None = None) -> None:
    """Range or choice of an already typed value (bools and None are not numbers here)."""
    where = where or spec.key
    shown = shown_value(spec, value)
    if value is None or isinstance(value, bool):
        return
    if spec.kind == "choice" and isinstance(value, str):
        check_choice(spec, value, where, shown)
    elif isinstance(value, int | float):
        check_range(spec, value, where, shown)


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def secret_keys() -> Iterable[str]:
    """Dotted keys of the settings whose values are credentials."""
    return (s.key for s in SETTINGS if s.secret)


__all__ = [
    "BY_ENV",
    "BY_KEY",
    "COMPRESSIONS",
    "ENV_PREFIX",
    "EXISTING_DATA_BEHAVIORS",
    "FLAGS",
    "ID_FORMATS",
    "LOG_FORMATS",
    "PARTITION_TRANSFORMS",
    "PLANS",
    "SECTIONS",
    "SETTINGS",
    "Kind",
    "Setting",
    "check_choice",
    "check_fields",
    "check_range",
    "check_value",
    "default",
    "secret_keys",
    "setting",
    "shown_value",
]
