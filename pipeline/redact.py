"""Masking of secrets in anything we show: URLs, messages, configuration dumps.

A webhook URL carries its secret as the path segment after the user id
(`/rest/<user_id>/<secret>/`); OAuth tokens and client secrets travel as query or body values.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

MASK = "***"

_WEBHOOK_PATH = re.compile(r"(/rest/\d+/)([^/?#\s]+)")
_SECRET_PARAMS = re.compile(
    r"((?:auth|access_token|refresh_token|client_secret|password)=)([^&\s\"']+)",
    re.IGNORECASE,
)


def mask_url(url: str) -> str:
    """Return `url` with the webhook secret and any token-bearing query values masked."""
    masked = _WEBHOOK_PATH.sub(lambda m: m.group(1) + MASK, url)
    return _SECRET_PARAMS.sub(lambda m: m.group(1) + MASK, masked)


def mask_text(text: str, secrets: Iterable[str]) -> str:
    """Mask every occurrence of each known secret (and webhook-shaped URL) in free text."""
    out = mask_url(text)
    for secret in secrets:
        if secret and len(secret) >= 4:
            out = out.replace(secret, MASK)
    return out


__all__ = ["MASK", "mask_text", "mask_url"]
