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

from pipeline.redact import mask_text

LOGGER_NAME: Final = "pipeline"
_HANDLER_MARK: Final = "_deal_export_handler"
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
                setattr(record, key, _mask_value(value, self))
        return True


def _mask_value(value: Any, secrets: SecretFilter) -> Any:
    if isinstance(value, str):
        return secrets.mask(value)
    if isinstance(value, dict):
        return {k: _mask_value(v, secrets) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_mask_value(v, secrets) for v in value]
    return value


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts (UTC, ISO 8601), level, logger, event, message, fields."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")
        payload: dict[str, Any] = {
            "ts": stamp.replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": getattr(record, "event", None) or "log",
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRS and key not in ("event", "fields"):
                payload[key] = value
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            payload.update(fields)
        if record.exc_text:
            payload["exception"] = record.exc_text
        if record.stack_info:
            payload["stack"] = record.stack_info
        return json.dumps(payload, default=str, ensure_ascii=False)


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
    "LOGGER_NAME",
    "JsonFormatter",
    "SecretFilter",
    "TextFormatter",
    "log_event",
    "secret_filter",
    "setup_logging",
]
