"""The one way secrets are masked in anything we show or write: messages, log records, URLs,
configuration dumps, the manifest.

`redact(value, secrets)` masks, wherever they occur:
* a webhook secret, the path segment after the user id (`/rest/<user_id>/<secret>/`, REST docs
  `local-integrations/local-webhooks.md`);
* token-bearing query or body values (`auth=`, `access_token=`, `client_secret=`, ...: OAuth
  passes `auth=<access_token>`) and `user:password@` in a URI;
* each known secret string (the caller's `secrets`: webhook URL, tokens, client secret);
* in a mapping, the value of every key that names a credential (`client_secret`,
  `access_token`, `password`, ...), or the whole entry with `drop_secret_keys`.

`mask_text` and `mask_url` are the same function on one string.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any, Final

MASK: Final = "***"

_WEBHOOK_PATH: Final = re.compile(r"(/rest/\d+/)([^/?#\s]+)")
# Names of credentials, as the last word of a query parameter or mapping key.
_SECRET_WORDS: Final = (
    r"token|secret|password|passwd|secret_key|access_key|private_key|signature|credentials?"
    r"|api_?key"
)
# OAuth sends the access token as `auth=` (REST docs `settings/how-to-call-rest-api/batch.md`).
_SECRET_PARAMS: Final = re.compile(
    rf"((?<![\w.-])(?:[\w.-]*[_.-])?(?:auth|{_SECRET_WORDS})=)([^&\s\"']+)", re.IGNORECASE
)
_USERINFO: Final = re.compile(r"(//)[^/@\s]+@")
_SECRET_KEY: Final = re.compile(
    rf"^(?:webhook_url|(?:.*[_.-])?(?:{_SECRET_WORDS}))$", re.IGNORECASE
)
_MIN_SECRET: Final = 4  # shorter strings would mask ordinary words


def is_secret_key(name: str) -> bool:
    """Whether a mapping key names a credential (`token_file`, a path, does not)."""
    return bool(_SECRET_KEY.match(name))


def redact(value: Any, secrets: Iterable[str] = (), *, drop_secret_keys: bool = False) -> Any:
    """`value` with every secret masked: strings, and recursively mappings and sequences (as
    lists); other values are returned as they are."""
    known = sorted({s for s in secrets if s and len(s) >= _MIN_SECRET}, key=len, reverse=True)
    return _redact(value, known, drop_secret_keys)


def mask_text(text: str, secrets: Iterable[str]) -> str:
    """`redact` of one string: URL-shaped secrets and each known secret masked."""
    masked: str = redact(text, secrets)
    return masked


def mask_url(url: str) -> str:
    """`url` with the webhook secret, credentials and token-bearing query values masked."""
    return mask_text(url, ())


def _redact(value: Any, known: list[str], drop: bool) -> Any:
    if isinstance(value, str):
        return _mask_string(value, known)
    if isinstance(value, Mapping):
        out: dict[Any, Any] = {}
        for key, item in value.items():
            if isinstance(key, str) and is_secret_key(key):
                if not drop:
                    out[key] = None if item is None else MASK
                continue
            out[key] = _redact(item, known, drop)
        return out
    if isinstance(value, list | tuple):
        return [_redact(item, known, drop) for item in value]
    return value


def _mask_string(text: str, known: list[str]) -> str:
    # URL shapes first, so a known full webhook URL still shows its host once masked.
    # Each pattern only where its anchor occurs: this runs on every request's URL.
    out = text
    if "/rest/" in out:
        out = _WEBHOOK_PATH.sub(lambda m: m.group(1) + MASK, out)
    if "=" in out:
        out = _SECRET_PARAMS.sub(lambda m: m.group(1) + MASK, out)
    if "@" in out:
        out = _USERINFO.sub(lambda m: m.group(1) + MASK + "@", out)
    for secret in known:
        out = out.replace(secret, MASK)
    return out


__all__ = ["MASK", "is_secret_key", "mask_text", "mask_url", "redact"]
