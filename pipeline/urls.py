"""The one set of URL rules: which portal, OAuth and webhook URLs we talk to, and how a URL is
shown in a message.

* Scheme: `https://` to any host, plain `http://` only to a loopback host (a local simulator or
  tunnel). Bitrix24 cloud portals serve REST over HTTPS only, and a webhook URL carries its
  secret in the path, so plain HTTP elsewhere would send it across the network in clear.
* A webhook is `https://<portal>/rest/<user_id>/<secret>/` (REST docs
  `local-integrations/local-webhooks.md`): no user:password@, no query, nothing after the secret.
* A URL in a message has its secret masked, or its whole path hidden when we cannot tell where
  the secret is.

Pure: no I/O.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Final
from urllib.parse import SplitResult, urlsplit

from pipeline.errors import UsageError
from pipeline.redact import MASK, mask_url

_WEBHOOK_PATH: Final = re.compile(r"/rest/(\d+)/([^/\s?#]+)(/.*)?")
_SHAPE: Final = "expected https://<portal>/rest/<user_id>/<secret>/"
#: Whitespace and control characters: no part of a webhook URL holds them.
_BLANKS: Final = re.compile(r"[\s\x00-\x1f\x7f]")


def is_loopback_host(host: str) -> bool:
    """127.0.0.0/8, ::1 and `localhost`: the only hosts plain HTTP may go to."""
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def scheme_allowed(scheme: str, host: str) -> bool:
    """https to a host, or http to a loopback host."""
    if not host:
        return False
    return scheme == "https" or (scheme == "http" and is_loopback_host(host))


def check_url(url: str) -> None:
    """Raise UsageError unless `url` is https://, or http:// to a loopback host: every request
    and redirect target is checked so."""
    parts = _split(url, f"refusing {show_url(url)!r}: not a valid URL")
    if scheme_allowed(parts.scheme, parts.hostname or ""):
        return
    raise UsageError(
        f"refusing {show_url(url)!r}: Bitrix24 accepts only https:// "
        "(plain http:// is allowed to 127.0.0.1/localhost only, for local simulators)"
    )


def validate_https(url: str, name: str) -> str:
    """`url` stripped, for a configured endpoint (OAuth endpoint, token URL); errors name `name`."""
    parts = _split(url.strip(), f"{name} is not a valid URL: {show_url(url)}")
    host = parts.hostname or ""
    if not host or parts.scheme not in ("https", "http"):
        raise UsageError(f"{name} must be an https URL: {show_url(url)}")
    if not scheme_allowed(parts.scheme, host):
        raise UsageError(f"{name} must use https for a non-local host: {show_url(url)}")
    return url.strip()


def validate_webhook_url(url: str, *, origin: str = "webhook URL") -> str:
    """Return `url` normalised to end in `/`, or raise UsageError showing it masked.

    Accepted: `https://<host>/rest/<user_id>/<secret>/` (trailing slash optional); plain `http`
    only for loopback hosts.
    """
    # A byte-order mark that an editor put in front of a webhook file's text is no part of it.
    url = url.strip().removeprefix("\ufeff").strip()
    if _BLANKS.search(url):
        # URL parsers drop tabs and line breaks (WHATWG URL; Python's urlsplit, bpo-43882), so
        # such a URL still reaches the portal, but a secret cut by one is masked only up to the
        # cut wherever it is shown: refused, shown with the blanks taken out.
        raise UsageError(
            f"{origin} contains a space, tab or line break (a URL wrapped or pasted in pieces?): "
            f"{show_url(_BLANKS.sub('', url))}"
        )
    parts = _split(url, f"{origin} is not a valid URL ({_SHAPE}): {show_url(url)}")
    host = parts.hostname or ""
    if parts.scheme not in ("https", "http") or not host:
        raise UsageError(f"{origin} is not an https URL ({_SHAPE}): {show_url(url)}")
    if not scheme_allowed(parts.scheme, host):
        raise UsageError(
            f"{origin} uses plain http for a non-local host; Bitrix24 webhooks need https: "
            f"{show_url(url)}"
        )
    if parts.username is not None or parts.password is not None:
        raise UsageError(f"{origin} must not contain user:password@: {show_url(url)}")
    if parts.query or parts.fragment:
        raise UsageError(f"{origin} must not have a query or fragment ({_SHAPE}): {show_url(url)}")
    match = _WEBHOOK_PATH.fullmatch(parts.path)
    if not match:
        raise UsageError(f"{origin} is not a Bitrix24 webhook URL ({_SHAPE}): {show_url(url)}")
    if match.group(3) not in (None, "/"):
        raise UsageError(
            f"{origin} has something after the secret (a method name?); use the base URL ending "
            f"in the secret and a slash: {show_url(url)}"
        )
    return url if url.endswith("/") else url + "/"


def webhook_secret(url: str) -> str | None:
    """The secret path segment of a webhook URL, if it has one."""
    try:
        path = urlsplit(url.strip()).path
    except ValueError:
        return None
    match = _WEBHOOK_PATH.match(path)
    return match.group(2) if match else None


def show_url(url: str) -> str:
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


def _split(url: str, error: str) -> SplitResult:
    try:
        parts = urlsplit(url)
        _ = parts.port  # a bad port only raises here
    except ValueError:
        raise UsageError(error) from None
    return parts


__all__ = [
    "check_url",
    "is_loopback_host",
    "scheme_allowed",
    "show_url",
    "validate_https",
    "validate_webhook_url",
    "webhook_secret",
]
