"""Build the frozen run configuration from a TOML file, the environment and command-line overrides.

Precedence, highest first: command line > environment > config file > defaults. Each source is
checked on its own terms before anything is merged, so an error always names where the bad key or
value came from ("configs/x.toml: unknown key [fetch].batchsize (did you mean batch_size?)").

    TOML                         environment                        override key
    log_format                   DEAL_EXPORT_LOG_FORMAT             log_format
    [portal] webhook_url         BITRIX24_WEBHOOK_URL               portal.webhook_url
    [portal] webhook_url_file    BITRIX24_WEBHOOK_URL_FILE          portal.webhook_url_file
    [portal.oauth] endpoint      BITRIX24_OAUTH_ENDPOINT            portal.oauth.endpoint
    ... client_id, client_secret[_file], access_token[_file], refresh_token[_file], token_url
    [portal.oauth] token_file    BITRIX24_OAUTH_TOKEN_FILE          portal.oauth.token_file
    [limits] plan, rate, ...     DEAL_EXPORT_LIMITS_PLAN, ...       limits.plan, ...
    [transport] / [fetch] / [output] / [ids] likewise (DEAL_EXPORT_<SECTION>_<KEY>)

Rules the table cannot show:
* Secrets (webhook URL, OAuth tokens, client secret) come from the environment, a `*_file`, or the
  config file; they are never needed on the command line and never echoed in an error.
* `token_file` (JSON with access_token and refresh_token) replaces both token settings, and it
  is the one place a rotated pair is written back to (`pipeline.token_file`).
* A value and its `*_file` twin are alternatives: setting both in one source is an error, and a
  higher source setting either replaces both from lower ones. Likewise a source that configures a
  webhook drops OAuth settings of lower sources and vice versa.
* `[ids]` selection (`source`, `modified_since`, `since_last_run`) is one choice, replaced whole.
  `start_from` is where a `since_last_run` starts while the output holds no watermark yet.
* Timestamps are ISO 8601 with an offset; a bare date is midnight UTC.
* TLS: `[transport] ca_bundle` (a PEM file) and `verify_tls` (DEAL_EXPORT_TRANSPORT_CA_BUNDLE,
  DEAL_EXPORT_TRANSPORT_VERIFY_TLS; --ca-bundle, --no-verify-tls).
* Errors name a setting as its source spells it: the option typed (`--headroom`, given
  `flags`), the file and key, or the environment variable.
* Empty environment variables count as unset. Unknown `DEAL_EXPORT_*` variables are errors (a typo
  must not silently fall back to a default); other variables are ignored.
* `DEAL_EXPORT_CONFIG` names the config file when `config_path` is not given.
* Relative paths (`*_file`, `ca_bundle`, `output.root`, `ids.source`) are relative to the working
  directory, not to the config file.
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import json
import math
import re
import tomllib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Literal, cast
from urllib.parse import urlsplit

from pipeline.config import (
    PLAN_LIMITS,
    Auth,
    FetchConfig,
    LimitsConfig,
    OAuthAuth,
    OutputConfig,
    RunConfig,
    TransportConfig,
    WebhookAuth,
)
from pipeline.errors import UsageError
from pipeline.redact import MASK, mask_url

Kind = Literal["str", "int", "float", "bool", "choice", "budget", "timestamp"]

PLANS: Final = ("standard", "enterprise", "custom")
COMPRESSIONS: Final = ("zstd", "snappy", "gzip", "lz4", "brotli", "none")
CONFIG_ENV: Final = "DEAL_EXPORT_CONFIG"
_ENV_PREFIX: Final = "DEAL_EXPORT_"
_COMMAND_LINE: Final = "command line"


@dataclass(frozen=True, slots=True)
class _Key:
    kind: Kind
    choices: tuple[str, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    below_max: bool = False  # maximum is exclusive
    above_min: bool = False  # minimum is exclusive
    secret: bool = False
    env: str = ""  # overrides the DEAL_EXPORT_<SECTION>_<KEY> name


_SCHEMA: Final[dict[str, _Key]] = {
    "log_format": _Key("choice", choices=("text", "json")),
    "portal.webhook_url": _Key("str", secret=True, env="BITRIX24_WEBHOOK_URL"),
    "portal.webhook_url_file": _Key("str", env="BITRIX24_WEBHOOK_URL_FILE"),
    "portal.oauth.endpoint": _Key("str", env="BITRIX24_OAUTH_ENDPOINT"),
    "portal.oauth.client_id": _Key("str", env="BITRIX24_OAUTH_CLIENT_ID"),
    "portal.oauth.client_secret": _Key("str", secret=True, env="BITRIX24_OAUTH_CLIENT_SECRET"),
    "portal.oauth.client_secret_file": _Key("str", env="BITRIX24_OAUTH_CLIENT_SECRET_FILE"),
    "portal.oauth.access_token": _Key("str", secret=True, env="BITRIX24_OAUTH_ACCESS_TOKEN"),
    "portal.oauth.access_token_file": _Key("str", env="BITRIX24_OAUTH_ACCESS_TOKEN_FILE"),
    "portal.oauth.refresh_token": _Key("str", secret=True, env="BITRIX24_OAUTH_REFRESH_TOKEN"),
    "portal.oauth.refresh_token_file": _Key("str", env="BITRIX24_OAUTH_REFRESH_TOKEN_FILE"),
    "portal.oauth.token_file": _Key("str", env="BITRIX24_OAUTH_TOKEN_FILE"),
    "portal.oauth.token_url": _Key("str", env="BITRIX24_OAUTH_TOKEN_URL"),
    "limits.plan": _Key("choice", choices=PLANS),
    "limits.rate": _Key("float", minimum=0),
    "limits.burst": _Key("int", minimum=1),
    "limits.headroom": _Key("float", minimum=0, maximum=1, below_max=True),
    "limits.operating_budget_s": _Key("budget", minimum=0, above_min=True),
    "limits.operating_window_s": _Key("float", minimum=0, above_min=True),
    "limits.operating_headroom": _Key("float", minimum=0, maximum=1, below_max=True),
    "transport.connect_timeout_s": _Key("float", minimum=0, above_min=True),
    "transport.request_timeout_s": _Key("float", minimum=0, above_min=True),
    "transport.ca_bundle": _Key("str"),
    "transport.verify_tls": _Key("bool"),
    "fetch.batch_size": _Key("int", minimum=1, maximum=50),
    "fetch.concurrency": _Key("int", minimum=1, maximum=256),
    "fetch.max_attempts": _Key("int", minimum=1),
    "fetch.backoff_base_s": _Key("float", minimum=0),
    "fetch.backoff_max_s": _Key("float", minimum=0),
    "output.root": _Key("str"),
    "output.partition_by": _Key("str"),
    "output.partition_transform": _Key("choice", choices=("none", "value", "year", "month", "day")),
    "output.existing_data_behavior": _Key(
        "choice", choices=("error", "overwrite", "resume", "new_run")
    ),
    "output.chunk_size": _Key("int", minimum=1),
    "output.max_rows_per_group": _Key("int", minimum=1),
    "output.compression": _Key("choice", choices=COMPRESSIONS),
    "ids.source": _Key("str"),
    "ids.column": _Key("str"),
    "ids.format": _Key("choice", choices=("auto", "text", "csv", "parquet", "range")),
    "ids.modified_since": _Key("timestamp"),
    "ids.since_last_run": _Key("bool"),
    "ids.overlap_s": _Key("float", minimum=0),
    "ids.start_from": _Key("timestamp"),
}

_SECTIONS: Final = ("portal", "portal.oauth", "limits", "transport", "fetch", "output", "ids")


def _env_name(key: str) -> str:
    spec = _SCHEMA[key]
    return spec.env or _ENV_PREFIX + key.replace(".", "_").upper()


_ENV_TO_KEY: Final[dict[str, str]] = {_env_name(k): k for k in _SCHEMA}

# Alternatives: a source that sets any member replaces every member set by lower sources.
_ALTERNATIVES: Final[tuple[tuple[str, ...], ...]] = (
    ("portal.webhook_url", "portal.webhook_url_file"),
    ("portal.oauth.client_secret", "portal.oauth.client_secret_file"),
    # The token file holds both tokens, so it is an alternative to each of them.
    ("portal.oauth.access_token", "portal.oauth.access_token_file", "portal.oauth.token_file"),
    ("portal.oauth.refresh_token", "portal.oauth.refresh_token_file", "portal.oauth.token_file"),
    ("ids.source", "ids.modified_since", "ids.since_last_run"),
)
_WEBHOOK_KEYS: Final = ("portal.webhook_url", "portal.webhook_url_file")
_OAUTH_KEYS: Final = tuple(k for k in _SCHEMA if k.startswith("portal.oauth."))


@dataclass(frozen=True, slots=True)
class IdsConfig:
    """Which IDs to export, when the config (not only the command line) says so.

    At most one of `source` (a path, `-` for stdin, or ranges with `format = "range"`),
    `modified_since` (tz-aware) and `since_last_run` is set. `overlap_s` widens incremental
    discovery backwards so deals modified during the previous run are not missed.
    """

    source: str | None = None
    column: str | None = None
    format: str = "auto"
    modified_since: datetime | None = None
    since_last_run: bool = False
    overlap_s: float = 300.0
    #: Where the first `since_last_run` starts when the root holds no watermark yet.
    start_from: datetime | None = None


@dataclass(frozen=True, slots=True)
class LoadedConfig:
    """Everything the loader knows; `run_config()` insists on what a run needs (auth, output)."""

    auth: Auth | None
    output: OutputConfig | None
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    transport: TransportConfig = field(default_factory=TransportConfig)
    fetch: FetchConfig = field(default_factory=FetchConfig)
    log_format: Literal["text", "json"] = "text"
    ids: IdsConfig = field(default_factory=IdsConfig)
    plan: str = "standard"
    config_path: str | None = None
    #: How the user gave each setting that was set ("--partition-by", "x.toml: [output].y").
    names: Mapping[str, str] = field(default_factory=dict)

    def name_of(self, key: str) -> str:
        """The setting `key` as the user gave it, for an error found after loading."""
        return self.names.get(key, key)

    def run_config(self) -> RunConfig:
        """The `RunConfig` for `deal-export run`, or a UsageError naming what is missing."""
        if self.auth is None:
            raise UsageError(
                "no portal credentials: set BITRIX24_WEBHOOK_URL (or BITRIX24_WEBHOOK_URL_FILE, "
                "or [portal].webhook_url_file in the config file, or --webhook)"
            )
        if self.output is None:
            raise UsageError("no output directory: pass --out or set [output].root in the config")
        return RunConfig(
            auth=self.auth,
            output=self.output,
            limits=self.limits,
            transport=self.transport,
            fetch=self.fetch,
            log_format=self.log_format,
        )


@dataclass(frozen=True, slots=True)
class _Value:
    value: object
    origin: str  # "configs/x.toml", "environment variable X", "command line"
    label: str  # how the key is named to the user in that origin


# ----------------------------------------------------------------------------------- entry points


def load_run_config(
    *,
    config_path: str | None,
    env: Mapping[str, str],
    overrides: Mapping[str, object],
) -> RunConfig:
    """`load_config(...).run_config()`: the config of a run, which needs auth and an output root."""
    return load_config(config_path=config_path, env=env, overrides=overrides).run_config()


def load_config(
    *,
    config_path: str | None = None,
    env: Mapping[str, str],
    overrides: Mapping[str, object] | None = None,
    flags: Mapping[str, str] | None = None,
) -> LoadedConfig:
    """Merge defaults < config file < environment < `overrides` into validated config objects.

    `overrides` use dotted keys (`"fetch.concurrency"`, `"portal.webhook_url"`, `"log_format"`);
    a `None` value means "not given" so click options can be passed straight through. `flags`
    names the command-line option of an override key (`"limits.headroom": "--headroom"`), so an
    error names what the user typed. Raises `UsageError` naming the key and its source for
    anything unknown or invalid.
    """
    if config_path is None and env.get(CONFIG_ENV):
        config_path = env[CONFIG_ENV]
    layers = []
    if config_path is not None:
        layers.append(_file_layer(config_path))
    layers.append(_env_layer(env))
    layers.append(_override_layer(overrides or {}, flags or {}))
    merged = _merge(layers)
    values = {key: _coerce(key, item) for key, item in merged.items()}
    loaded = _build(values, merged, config_path)
    names = {key: _where(item, key) for key, item in merged.items()}
    return dataclasses.replace(loaded, names=names)


def validate_webhook_url(url: str, *, origin: str = "webhook URL") -> str:
    """Return `url` normalised to end in `/`, or raise UsageError showing it masked.

    Accepted: `https://<host>/rest/<user_id>/<secret>/` (trailing slash optional); plain `http`
    only for loopback hosts (a local simulator or tunnel), since the portal requires HTTPS and the
    secret would otherwise cross the network in clear.
    """
    url = url.strip()
    shape = "expected https://<portal>/rest/<user_id>/<secret>/"
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        _ = parts.port
    except ValueError:
        raise UsageError(f"{origin} is not a valid URL ({shape}): {_show_url(url)}") from None
    if parts.scheme not in ("https", "http") or not host:
        raise UsageError(f"{origin} is not an https URL ({shape}): {_show_url(url)}")
    if parts.scheme == "http" and not _is_loopback(host):
        raise UsageError(
            f"{origin} uses plain http for a non-local host; Bitrix24 webhooks need https: "
            f"{_show_url(url)}"
        )
    if parts.username is not None or parts.password is not None:
        raise UsageError(f"{origin} must not contain user:password@: {_show_url(url)}")
    if parts.query or parts.fragment:
        raise UsageError(f"{origin} must not have a query or fragment ({shape}): {_show_url(url)}")
    match = re.fullmatch(r"/rest/(\d+)/([^/\s]+)(/.*)?", parts.path)
    if not match:
        raise UsageError(f"{origin} is not a Bitrix24 webhook URL ({shape}): {_show_url(url)}")
    if match.group(3) not in (None, "/"):
        raise UsageError(
            f"{origin} has something after the secret (a method name?); use the base URL ending "
            f"in the secret and a slash: {_show_url(url)}"
        )
    return url if url.endswith("/") else url + "/"


def effective_config_dict(config: RunConfig | LoadedConfig) -> dict[str, Any]:
    """A JSON-ready dump of the effective configuration with every secret masked."""
    out: dict[str, Any] = {
        "auth": _auth_dict(config.auth),
        "output": asdict(config.output) if config.output is not None else None,
        "limits": asdict(config.limits),
        "transport": asdict(config.transport),
        "fetch": asdict(config.fetch),
        "log_format": config.log_format,
    }
    if isinstance(config, LoadedConfig):
        out["limits"] = {"plan": config.plan, **out["limits"]}
        ids = asdict(config.ids)
        if config.ids.modified_since is not None:
            ids["modified_since"] = config.ids.modified_since.isoformat()
        out["ids"] = ids
    return out


def secrets_of(config: RunConfig | LoadedConfig) -> list[str]:
    """Every secret string in `config`, for log and error masking (`pipeline.redact.mask_text`)."""
    auth = config.auth
    if isinstance(auth, WebhookAuth):
        match = re.search(r"/rest/\d+/([^/?#\s]+)", auth.url)
        return [auth.url, *([match.group(1)] if match else [])]
    if isinstance(auth, OAuthAuth):
        return [auth.access_token, auth.refresh_token, auth.client_secret]
    return []


# ------------------------------------------------------------------------------------ the layers


def _file_layer(path: str) -> dict[str, _Value]:
    p = Path(path)
    if p.is_dir():
        raise UsageError(f"config file {path} is a directory")
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"config file not found: {path}") from None
    except UnicodeDecodeError:
        raise UsageError(f"{path}: not a UTF-8 text file") from None
    except OSError as exc:
        raise UsageError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{path}: invalid TOML: {exc}") from None
    layer: dict[str, _Value] = {}
    _flatten(data, "", path, layer)
    return layer


def _flatten(table: Mapping[str, Any], prefix: str, path: str, out: dict[str, _Value]) -> None:
    section = prefix.rstrip(".")
    for name, value in table.items():
        key = prefix + name
        if isinstance(value, dict):
            if key in _SECTIONS:
                _flatten(value, key + ".", path, out)
                continue
            if key not in _SCHEMA:
                where = f"[{key}]" if not section else f"[{section}].{name}"
                candidates = [f"[{s}]" for s in _SECTIONS if s.startswith(prefix)]
                raise UsageError(
                    f"{path}: unknown section {where}{_did_you_mean(f'[{key}]', candidates)}"
                )
        label = f"[{section}].{name}" if section else name
        if key not in _SCHEMA:
            if key in _SECTIONS:
                raise UsageError(f"{path}: {key} must be a table ([{key}]), not a value")
            siblings = [k[len(prefix) :] for k in _SCHEMA if k.startswith(prefix)]
            siblings = [s for s in siblings if "." not in s]
            raise UsageError(f"{path}: unknown key {label}{_did_you_mean(name, siblings)}")
        out[key] = _Value(value, path, label)


def _env_layer(env: Mapping[str, str]) -> dict[str, _Value]:
    layer: dict[str, _Value] = {}
    for name, value in env.items():
        key = _ENV_TO_KEY.get(name)
        if key is None:
            if name.startswith(_ENV_PREFIX) and name != CONFIG_ENV:
                known = [*_ENV_TO_KEY, CONFIG_ENV]
                raise UsageError(f"unknown environment variable {name}{_did_you_mean(name, known)}")
            continue
        if value == "":
            continue
        layer[key] = _Value(value, f"environment variable {name}", name)
    return layer


def _override_layer(overrides: Mapping[str, object], flags: Mapping[str, str]) -> dict[str, _Value]:
    layer: dict[str, _Value] = {}
    for key, value in overrides.items():
        if key not in _SCHEMA:
            raise UsageError(f"unknown setting {key!r}{_did_you_mean(key, list(_SCHEMA))}")
        if value is None:
            continue
        layer[key] = _Value(value, _COMMAND_LINE, flags.get(key, key))
    return layer


def _merge(layers: list[dict[str, _Value]]) -> dict[str, _Value]:
    merged: dict[str, _Value] = {}
    for layer in layers:
        for group in _ALTERNATIVES:
            present = [k for k in group if k in layer and layer[k].value not in (False, "")]
            if len(present) > 1:
                first = layer[present[0]]
                names = " and ".join(layer[k].label for k in present)
                raise UsageError(f"{first.origin}: set only one of {names}")
            if present:
                for k in group:
                    merged.pop(k, None)
        webhook = [k for k in _WEBHOOK_KEYS if k in layer]
        oauth = [k for k in _OAUTH_KEYS if k in layer]
        if webhook and oauth:
            raise UsageError(
                f"{layer[webhook[0]].origin}: configure either a webhook "
                f"({layer[webhook[0]].label}) or OAuth ({layer[oauth[0]].label}), not both"
            )
        for k in _OAUTH_KEYS if webhook else _WEBHOOK_KEYS if oauth else ():
            merged.pop(k, None)
        merged.update(layer)
    return merged


# ------------------------------------------------------------------------------ value coercion


def _coerce(key: str, item: _Value) -> object:
    spec = _SCHEMA[key]
    raw = item.value
    where = _where(item, key)
    shown = "" if spec.secret else f", got {raw!r}"
    kind = spec.kind
    if kind in ("str", "timestamp", "choice"):
        if not isinstance(raw, str):
            raise UsageError(f"{where} must be a string{shown}")
        if kind == "choice":
            value = raw.strip().lower()
            if value not in spec.choices:
                raise UsageError(f"{where} must be one of {', '.join(spec.choices)}{shown}")
            return value
        if kind == "timestamp":
            return parse_timestamp(raw, where)
        return raw
    if kind == "bool":
        return _to_bool(raw, where, shown)
    if kind == "budget" and (
        raw is False or (isinstance(raw, str) and raw.strip().lower() in ("off", "none", "false"))
    ):
        return None
    typed = not (item.origin.startswith("environment") or item.origin == _COMMAND_LINE)
    number = _to_number(raw, int if kind == "int" else float, where, shown, typed=typed)
    _check_range(number, spec, where, shown)
    return number


def _where(item: _Value, key: str) -> str:
    """How to name a setting in an error: file and key, environment variable, or option."""
    if item.origin.startswith("environment"):
        return f"{item.origin}: {key}"
    if item.origin == _COMMAND_LINE and item.label != key:
        return item.label  # the option typed (or the API argument passed) says it all
    return f"{item.origin}: {item.label}"


def _to_bool(raw: object, where: str, shown: str) -> bool:
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, str):
        text = raw.strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off"):
            return False
    raise UsageError(f"{where} must be true or false{shown}")


def _to_number(
    raw: object, kind: type[int] | type[float], where: str, shown: str, *, typed: bool
) -> float:
    """`raw` as `kind`; strings are parsed unless they come from a typed source (TOML)."""
    what = "an integer" if kind is int else "a number"
    if isinstance(raw, bool):
        raise UsageError(f"{where} must be {what}{shown}")
    if isinstance(raw, str) and not typed:
        text = raw.strip()
        pattern = r"[+-]?\d+" if kind is int else r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?"
        if not re.fullmatch(pattern, text):
            raise UsageError(f"{where} must be {what}{shown}")
        raw = kind(text)
    if kind is int and not isinstance(raw, int):
        raise UsageError(f"{where} must be {what}{shown}")
    if not isinstance(raw, int | float) or math.isnan(raw) or math.isinf(raw):
        raise UsageError(f"{where} must be {what}{shown}")
    return kind(raw)


def _check_range(number: float, spec: _Key, where: str, shown: str) -> None:
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


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


_BARE_DATE: Final = re.compile(r"\d{4}-\d{2}-\d{2}")


def parse_timestamp(raw: str, where: str) -> datetime:
    """An ISO 8601 time with offset; a bare date (`2025-06-01`) is midnight UTC of that day.

    A time without an offset is refused (portal time zones differ) with a suggestion that this
    very function accepts.
    """
    text = raw.strip()
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00") if text.endswith("Z") else text)
    except ValueError:
        raise UsageError(
            f"{where} must be an ISO 8601 timestamp with offset, e.g. 2026-01-31T00:00:00+03:00, "
            f"or a date (midnight UTC), got {raw!r}"
        ) from None
    if value.tzinfo is not None:
        return value
    if _BARE_DATE.fullmatch(text):
        return value.replace(tzinfo=UTC)
    suggestion = value.replace(tzinfo=UTC).isoformat()
    raise UsageError(
        f"{where} needs an explicit UTC offset (portal time zones differ), e.g. "
        f"{suggestion}, got {raw!r}"
    )


# -------------------------------------------------------------------------------------- building


def _build(
    values: dict[str, object], merged: dict[str, _Value], config_path: str | None
) -> LoadedConfig:
    def section(prefix: str) -> dict[str, Any]:
        return {k[len(prefix) + 1 :]: v for k, v in values.items() if k.startswith(prefix + ".")}

    limits_values = section("limits")
    plan = cast(str, limits_values.pop("plan", "standard"))
    if plan == "custom":
        missing = [k for k in ("rate", "burst") if k not in limits_values]
        if missing:
            raise UsageError(
                "limits.plan = custom needs " + " and ".join(f"limits.{k}" for k in missing)
            )
        limits = LimitsConfig(**limits_values)
    else:
        assert plan in PLAN_LIMITS
        limits = LimitsConfig.for_plan(plan, **limits_values)

    transport_values = section("transport")
    bundle = transport_values.get("ca_bundle")
    if bundle is not None and not Path(cast(str, bundle)).is_file():
        raise UsageError(
            f"{merged['transport.ca_bundle'].origin}: transport.ca_bundle {bundle!r} is not a file"
        )
    output_values = section("output")
    if str(output_values.get("partition_by", "x")).strip().lower() in ("", "none"):
        output_values["partition_by"] = None
    # Output settings without a root wait for --out; run_config() says what is missing.
    output = OutputConfig(**output_values) if "root" in output_values else None

    ids = IdsConfig(**section("ids"))

    return LoadedConfig(
        auth=_build_auth(values, merged),
        output=output,
        limits=limits,
        transport=TransportConfig(**transport_values),
        fetch=FetchConfig(**section("fetch")),
        log_format=cast(Literal["text", "json"], values.get("log_format", "text")),
        ids=ids,
        plan=plan,
        config_path=config_path,
    )


def _build_auth(values: dict[str, object], merged: dict[str, _Value]) -> Auth | None:
    url = _secret(values, merged, "portal.webhook_url")
    if url is not None:
        key = "portal.webhook_url" if "portal.webhook_url" in merged else "portal.webhook_url_file"
        return WebhookAuth(validate_webhook_url(url, origin=_where(merged[key], key)))
    if not any(k in values for k in _OAUTH_KEYS):
        return None
    found = {
        name: _secret(values, merged, f"portal.oauth.{name}")
        for name in ("endpoint", "client_id", "client_secret", "access_token", "refresh_token")
    }
    token_file = cast(str | None, values.get("portal.oauth.token_file"))
    if token_file is not None:
        item = merged["portal.oauth.token_file"]
        found["access_token"], found["refresh_token"] = _read_token_file(
            token_file, _where(item, "portal.oauth.token_file")
        )
    missing = [name for name, v in found.items() if not v]
    if missing:
        hints = ", ".join(f"portal.oauth.{m} ({_env_name('portal.oauth.' + m)})" for m in missing)
        raise UsageError(f"OAuth is configured but incomplete; missing {hints}")
    endpoint = _validate_https(cast(str, found["endpoint"]), "portal.oauth.endpoint")
    token_url = cast(str | None, values.get("portal.oauth.token_url"))
    extra: dict[str, str] = {} if token_file is None else {"token_file": token_file}
    if token_url is not None:
        extra["token_url"] = _validate_https(token_url, "portal.oauth.token_url")
    return OAuthAuth(
        endpoint=endpoint if endpoint.endswith("/") else endpoint + "/",
        access_token=cast(str, found["access_token"]),
        refresh_token=cast(str, found["refresh_token"]),
        client_id=cast(str, found["client_id"]),
        client_secret=cast(str, found["client_secret"]),
        **extra,
    )


def _secret(values: dict[str, object], merged: dict[str, _Value], key: str) -> str | None:
    """The value of `key`, or the stripped content of the file named by `key + '_file'`."""
    if key in values:
        return cast(str, values[key]).strip()
    file_key = key + "_file"
    if file_key not in values:
        return None
    path = cast(str, values[file_key])
    item = merged[file_key]
    try:
        text = Path(path).expanduser().read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise UsageError(f"{item.origin}: {item.label}: file not found: {path}") from None
    except IsADirectoryError:
        raise UsageError(f"{item.origin}: {item.label}: {path} is a directory") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{item.origin}: {item.label}: cannot read {path}: {exc}") from None
    if not text:
        raise UsageError(f"{item.origin}: {item.label}: {path} is empty")
    return text


def _read_token_file(path: str, where: str) -> tuple[str, str]:
    """(access_token, refresh_token) from a token file (`pipeline.token_file` keeps it up to
    date). Errors name the file and the key, never a value."""
    p = Path(path).expanduser()
    try:
        raw = p.read_bytes()
    except FileNotFoundError:
        raise UsageError(f"{where}: token file not found: {path}") from None
    except IsADirectoryError:
        raise UsageError(f"{where}: {path} is a directory, not a token file") from None
    except OSError as exc:
        raise UsageError(f"{where}: cannot read token file {path}: {exc.strerror}") from None
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        data = None
    if not isinstance(data, dict):
        raise UsageError(
            f"{where}: {path} is not a JSON object with access_token and refresh_token"
        )
    pair: list[str] = []
    for name in ("access_token", "refresh_token"):
        value = data.get(name)
        if not isinstance(value, str) or not value.strip():
            raise UsageError(f"{where}: {path} has no {name} (a non-empty string)")
        pair.append(value.strip())
    return pair[0], pair[1]


def _validate_https(url: str, key: str) -> str:
    try:
        parts = urlsplit(url.strip())
        host = parts.hostname or ""
    except ValueError:
        raise UsageError(f"{key} is not a valid URL: {_show_url(url)}") from None
    if not host or parts.scheme not in ("https", "http"):
        raise UsageError(f"{key} must be an https URL: {_show_url(url)}")
    if parts.scheme == "http" and not _is_loopback(host):
        raise UsageError(f"{key} must use https for a non-local host: {_show_url(url)}")
    return url.strip()


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _show_url(url: str) -> str:
    """`url` safe to print: the secret masked, or the whole path hidden if we cannot find it."""
    masked = mask_url(url)
    try:
        parts = urlsplit(masked)
        netloc = parts.hostname or ""
        if parts.port:
            netloc += f":{parts.port}"
    except ValueError:
        return MASK
    if masked != url and not (parts.username or parts.password):
        return masked
    path = "/" + MASK if parts.path not in ("", "/") or parts.query else parts.path
    return f"{parts.scheme}://{netloc}{path}" if parts.scheme else MASK


def _auth_dict(auth: Auth | None) -> dict[str, Any] | None:
    if isinstance(auth, WebhookAuth):
        return {"type": "webhook", "url": mask_url(auth.url)}
    if isinstance(auth, OAuthAuth):
        return {
            "type": "oauth",
            "endpoint": mask_url(auth.endpoint),
            "client_id": auth.client_id,
            "client_secret": MASK,
            "access_token": MASK,
            "refresh_token": MASK,
            "token_file": auth.token_file,
            "token_url": mask_url(auth.token_url),
        }
    return None


def _did_you_mean(name: str, candidates: list[str]) -> str:
    close = difflib.get_close_matches(name, candidates, n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


__all__ = [
    "CONFIG_ENV",
    "IdsConfig",
    "LoadedConfig",
    "effective_config_dict",
    "load_config",
    "load_run_config",
    "parse_timestamp",
    "secrets_of",
    "validate_webhook_url",
]
