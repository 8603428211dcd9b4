"""Build the frozen run configuration from a TOML file, the environment and command-line overrides.

Precedence, highest first: command line > environment > config file > defaults. Each source is
checked on its own terms before anything is merged, so an error always names where the bad key or
value came from ("configs/x.toml: unknown key [fetch].batchsize (did you mean batch_size?)").

    TOML                         environment                        override key
    log_format                   DEAL_EXPORT_LOG_FORMAT             log_format
    entity                       DEAL_EXPORT_ENTITY                 entity (deal, lead)
    [portal] webhook_url         BITRIX24_WEBHOOK_URL               portal.webhook_url
    [portal] webhook_url_file    BITRIX24_WEBHOOK_URL_FILE          portal.webhook_url_file
    [portal.oauth] endpoint      BITRIX24_OAUTH_ENDPOINT            portal.oauth.endpoint
    ... client_id, client_secret[_file], access_token[_file], refresh_token[_file], token_url
    [portal.oauth] token_file    BITRIX24_OAUTH_TOKEN_FILE          portal.oauth.token_file
    [limits] plan, rate, ...     DEAL_EXPORT_LIMITS_PLAN, ...       limits.plan, ...
    [transport] / [fetch] / [output] / [ids] likewise (DEAL_EXPORT_<SECTION>_<KEY>)

Each key's kind, range, choices, default, environment name and secrecy are declared once in
`pipeline.settings`; this module applies them to each source and merges the sources.

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
import json
import math
import re
import tomllib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Literal, cast

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
from pipeline.entity import EntityName
from pipeline.errors import UsageError
from pipeline.redact import redact
from pipeline.settings import (
    BY_ENV,
    BY_KEY,
    ENV_PREFIX,
    SECTIONS,
    Setting,
    check_choice,
    check_fields,
    check_range,
    default,
    shown_value,
)
from pipeline.urls import validate_https, validate_webhook_url, webhook_secret

CONFIG_ENV: Final = "DEAL_EXPORT_CONFIG"
_ENV_PREFIX: Final = ENV_PREFIX
_COMMAND_LINE: Final = "command line"

# Every key, its kind, range, choices, secrecy and environment name: `pipeline.settings`.
_SCHEMA: Final[Mapping[str, Setting]] = BY_KEY
_SECTIONS: Final = SECTIONS


def _env_name(key: str) -> str:
    return _SCHEMA[key].env_name


_ENV_TO_KEY: Final[dict[str, str]] = {name: spec.key for name, spec in BY_ENV.items()}

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
    format: str = default("ids.format", str)
    modified_since: datetime | None = None
    since_last_run: bool = default("ids.since_last_run", bool)
    overlap_s: float = default("ids.overlap_s", float)
    #: Where the first `since_last_run` starts when the root holds no watermark yet.
    start_from: datetime | None = None

    def __post_init__(self) -> None:
        check_fields("ids", self)


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
    entity: EntityName = "deal"
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
            entity=self.entity,
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


def effective_config_dict(config: RunConfig | LoadedConfig) -> dict[str, Any]:
    """A JSON-ready dump of the effective configuration with every secret masked."""
    out: dict[str, Any] = {
        "auth": _auth_dict(config.auth),
        "output": asdict(config.output) if config.output is not None else None,
        "limits": asdict(config.limits),
        "transport": asdict(config.transport),
        "fetch": asdict(config.fetch),
        "log_format": config.log_format,
        "entity": config.entity,
    }
    if isinstance(config, LoadedConfig):
        out["limits"] = {"plan": config.plan, **out["limits"]}
        ids = asdict(config.ids)
        if config.ids.modified_since is not None:
            ids["modified_since"] = config.ids.modified_since.isoformat()
        out["ids"] = ids
    masked: dict[str, Any] = redact(out, secrets_of(config))
    return masked


def secrets_of(config: RunConfig | LoadedConfig) -> list[str]:
    """Every secret string in `config`, for log and error masking (`pipeline.redact.mask_text`)."""
    auth = config.auth
    if isinstance(auth, WebhookAuth):
        secret = webhook_secret(auth.url)
        return [auth.url, *([secret] if secret else [])]
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
    shown = shown_value(spec, raw)
    kind = spec.kind
    if kind in ("str", "timestamp", "choice"):
        if not isinstance(raw, str):
            raise UsageError(f"{where} must be a string{shown}")
        if kind == "choice":
            value = raw.strip().lower()
            check_choice(spec, value, where, shown)
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
    check_range(spec, number, where, shown)
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
        fetch=FetchConfig(**{"strategy": default("fetch.strategy", str), **section("fetch")}),
        log_format=cast(Literal["text", "json"], values.get("log_format", "text")),
        ids=ids,
        entity=cast(EntityName, values.get("entity", "deal")),
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
    endpoint = validate_https(cast(str, found["endpoint"]), "portal.oauth.endpoint")
    token_url = cast(str | None, values.get("portal.oauth.token_url"))
    extra: dict[str, str] = {} if token_file is None else {"token_file": token_file}
    if token_url is not None:
        extra["token_url"] = validate_https(token_url, "portal.oauth.token_url")
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
    # "environment variable X" names the setting already; a file or option adds its key.
    named = item.origin if item.origin.startswith("environment") else f"{item.origin}: {item.label}"
    try:
        text = Path(path).expanduser().read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise UsageError(f"{named}: file not found: {path}") from None
    except IsADirectoryError:
        raise UsageError(f"{named}: {path} is a directory") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{named}: cannot read {path}: {exc}") from None
    if not text:
        raise UsageError(f"{named}: {path} is empty")
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


def _auth_dict(auth: Auth | None) -> dict[str, Any] | None:
    if auth is None:
        return None
    return {"type": "webhook" if isinstance(auth, WebhookAuth) else "oauth", **asdict(auth)}


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
