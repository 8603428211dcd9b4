"""Logging for runs: text or one-JSON-object-per-line, with every known secret masked.

Masking happens in a filter on our handler, so it covers the message, its arguments, extra
fields, exception tracebacks and stack info before any formatter sees them. Records are masked in
place, so handlers further up (if propagation is turned back on) see the masked text too. Secrets
learned during the run (a refreshed OAuth token) are added with `SecretFilter.add`.

    handler = setup_logging(log_format="json", secrets=secrets_of(config))
    log_event(logger, "run_started", "starting export", total=10_000)
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, Final, Literal, TextIO

from pipeline.redact import mask_text, redact

LOGGER_NAME: Final = "pipeline"
_HANDLER_MARK: Final = "_deal_export_handler"
#: The run this process works for, once known: every JSON record names it.
_run_id: str | None = None
# Attributes every LogRecord has; anything else on a record came in through `extra=`.
_STANDARD_ATTRS: Final = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys() | {"message", "asctime"}
)


class SecretFilter(logging.Filter):
    """Masks each known secret (and any webhook-shaped URL) in everything a record carries."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self._secrets: list[str] = []
        for secret in secrets:
            self.add(secret)

    def add(self, secret: str) -> None:
        """Start masking `secret` too (longest first, so a URL is masked before its parts)."""
        if secret and secret not in self._secrets:
            self._secrets.append(secret)
            self._secrets.sort(key=len, reverse=True)

    def mask(self, text: str) -> str:
        return mask_text(text, self._secrets)

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = self.mask(record.getMessage())
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.mask(record.exc_text)
            # The formatter would re-render exc_info only if exc_text were empty; keep the
            # traceback objects out of reach of any other formatter all the same.
            record.exc_info = None
        if record.stack_info:
            record.stack_info = self.mask(record.stack_info)
        for key, value in list(vars(record).items()):
            if key not in _STANDARD_ATTRS:
                setattr(record, key, redact(value, self._secrets))
        return True


def set_run_id(run_id: str | None) -> None:
    """The run every later record belongs to (None: not known yet, or no run at all)."""
    global _run_id
    _run_id = run_id


def current_run_id() -> str | None:
    return _run_id


def utc_stamp(created: float) -> str:
    """`2026-11-27T01:53:18.123Z`: the one timestamp format of every JSON line we write."""
    stamp = datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds")
    return stamp.replace("+00:00", "Z")


def json_record(
    *,
    created: float,
    level: str,
    logger: str,
    event: str,
    message: str,
    run_id: str | None = None,
    fields: dict[str, Any] | None = None,
) -> str:
    """One JSON line in the shape every JSON-mode line shares: ts, level (lower case), logger,
    run_id, event, message, then the event's own fields (which never replace those six)."""
    payload: dict[str, Any] = {
        "ts": utc_stamp(created),
        "level": level.lower(),
        "logger": logger,
        "run_id": run_id,
        "event": event,
        "message": message,
    }
    for key, value in (fields or {}).items():
        payload.setdefault(key, value)
    return json.dumps(payload, default=str, ensure_ascii=False)


class JsonFormatter(logging.Formatter):
    """One JSON object per line (see `json_record`); extra fields become top-level keys."""

    def format(self, record: logging.LogRecord) -> str:
        extra: dict[str, Any] = {}
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRS and key not in ("event", "fields", "run_id"):
                extra[key] = value
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            extra.update(fields)
        run_id = extra.pop("run_id", None) or getattr(record, "run_id", None) or _run_id
        if record.exc_text:
            extra["exception"] = record.exc_text
        if record.stack_info:
            extra["stack"] = record.stack_info
        return json_record(
            created=record.created,
            level=record.levelname,
            logger=record.name,
            event=getattr(record, "event", None) or "log",
            message=record.getMessage(),
            run_id=run_id,
            fields=extra,
        )


class TextFormatter(logging.Formatter):
    """`2026-11-27T01:53:18Z INFO message key=value ...` (UTC, like the JSON form)."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = datetime.fromtimestamp(record.created, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        text = f"{stamp} {record.levelname} {record.getMessage()}"
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict) and fields:
            text += " " + " ".join(f"{k}={v}" for k, v in fields.items())
        if record.exc_text:
            text += "\n" + record.exc_text
        return text


def setup_logging(
    *,
    log_format: Literal["text", "json"],
    secrets: Iterable[str] = (),
    stream: TextIO | Any | None = None,
    level: int = logging.INFO,
    logger_name: str = LOGGER_NAME,
) -> logging.Handler:
    """Route `logger_name` (default: the whole `pipeline` package) to `stream` (stderr).

    Idempotent: a handler installed by an earlier call is replaced. Propagation to the root
    logger is turned off so a host application's handlers do not print our lines twice.
    Returns the handler; its `SecretFilter` is `handler.filters[0]`.
    """
    logger = logging.getLogger(logger_name)
    for old in [h for h in logger.handlers if getattr(h, _HANDLER_MARK, False)]:
        logger.removeHandler(old)
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    setattr(handler, _HANDLER_MARK, True)
    handler.addFilter(SecretFilter(secrets))
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False
    return handler


def secret_filter(handler: logging.Handler) -> SecretFilter:
    """The SecretFilter of a handler made by `setup_logging` (to add secrets learned later)."""
    for f in handler.filters:
        if isinstance(f, SecretFilter):
            return f
    raise ValueError("handler has no SecretFilter")


#: What --log-level accepts, quietest last.
LEVELS: Final = ("debug", "info", "warning", "error")


def parse_level(name: str | None) -> int:
    """`"warning"` -> logging.WARNING; None -> INFO."""
    return int(getattr(logging, (name or "info").upper()))


def log_event(
    logger: logging.Logger,
    event: str,
    message: str = "",
    *,
    level: int = logging.INFO,
    **fields: object,
) -> None:
    """Log a named event with structured fields (top-level keys in JSON, key=value in text)."""
    logger.log(level, message or event, extra={"event": event, "fields": fields})


__all__ = [
    "LEVELS",
    "LOGGER_NAME",
    "JsonFormatter",
    "SecretFilter",
    "TextFormatter",
    "current_run_id",
    "json_record",
    "log_event",
    "parse_level",
    "secret_filter",
    "set_run_id",
    "setup_logging",
    "utc_stamp",
]
