"""Credentials: where a method's URL is and how a request is signed; OAuth token refresh.

Webhook: `<webhook_url><method>`, the secret is part of the path (docs
`local-integrations/local-webhooks.md`).
OAuth: `<endpoint><method>` with `auth=<access_token>` in the body. On 401 `expired_token` the
client calls `refresh(used_token)`: one refresh serves every request that failed with the same
token (single flight); the others find the token already rotated and simply retry. The new pair
is handed to `on_tokens_rotated(access, refresh)` (or awaited as a `TokenSink`'s `rotated`, which
also gets the expiry and saves off the event loop) so the caller can persist the refresh token
(the old one stops working once the new one is issued). A refresh the OAuth server could not
serve just now (5xx, 429) is a `RefreshUnavailable` with code OAUTH_UNAVAILABLE.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, Protocol

import orjson

from pipeline.config import Auth, OAuthAuth, WebhookAuth
from pipeline.errors import FatalPortalError, TransientError, UsageError
from pipeline.fetch.classify import OAUTH_UNAVAILABLE, Action, classify, fatal_hint
from pipeline.fetch.wire import HttpTransport
from pipeline.redact import mask_url
from pipeline.urls import check_url, validate_webhook_url, webhook_secret


class RefreshUnavailable(TransientError):
    """The OAuth server could not refresh the token just now (5xx, 429). Its own code: the
    failure is the token server's, never a command's, so it must not split a batch."""

    def __init__(self, message: str, http_status: int) -> None:
        super().__init__(message, code=OAUTH_UNAVAILABLE, http_status=http_status)


class TokenSink:
    """A receiver of rotated token pairs that also wants the new access token's expiry.

    Pass an instance where an `on_tokens_rotated(access, refresh)` callable is accepted; the
    signer then calls `save(access, refresh, expires)` instead (`expires`: Unix time from the
    OAuth answer, None when it has none).
    """

    def save(self, access: str, refresh: str, expires: int | None) -> None:
        raise NotImplementedError

    async def rotated(self, access: str, refresh: str, expires: int | None) -> None:
        """What the signer awaits inside its refresh lock. Saving touches the disk (fsync), so
        it runs on a worker thread: every other request of the run waits for this lock."""
        await asyncio.to_thread(self.save, access, refresh, expires)

    def settle(self) -> str | None:
        """At the end of a run (blocking I/O allowed): None when every rotated pair is kept,
        else one line saying why not, for the run to end with."""
        return None

    def __call__(self, access: str, refresh: str) -> None:
        self.save(access, refresh, None)


TokensRotated = Callable[[str, str], None] | TokenSink

log = logging.getLogger(__name__)


class Signer(Protocol):
    """What the client needs from credentials."""

    def url_for(self, method: str) -> str: ...

    def sign(self, payload: dict[str, Any]) -> tuple[dict[str, Any], str]:
        """The payload to send plus the credential version used (for single-flight refresh)."""
        ...

    @property
    def secrets(self) -> tuple[str, ...]: ...

    @property
    def display(self) -> str:
        """The portal address with secrets masked, for messages."""
        ...

    async def refresh(self, transport: HttpTransport, used: str) -> None: ...


def _with_slash(url: str) -> str:
    return url if url.endswith("/") else url + "/"


class WebhookSigner:
    """An inbound webhook: the URL carries the credentials."""

    def __init__(self, auth: WebhookAuth) -> None:
        self._base = validate_webhook_url(auth.url)
        self._secret = webhook_secret(self._base) or self._base

    def url_for(self, method: str) -> str:
        return self._base + method

    def sign(self, payload: dict[str, Any]) -> tuple[dict[str, Any], str]:
        return payload, ""

    @property
    def secrets(self) -> tuple[str, ...]:
        return (self._secret,)

    @property
    def display(self) -> str:
        return mask_url(self._base)

    async def refresh(self, transport: HttpTransport, used: str) -> None:
        raise FatalPortalError(
            f"portal {self.display} answered expired_token to a webhook call: "
            "webhooks do not expire tokens; check the webhook URL",
            code="expired_token",
            http_status=401,
        )


class OAuthSigner:
    """An OAuth application with a rotating access/refresh token pair."""

    def __init__(self, auth: OAuthAuth, on_tokens_rotated: TokensRotated | None = None) -> None:
        check_url(auth.endpoint)
        check_url(auth.token_url)
        self._endpoint = _with_slash(auth.endpoint)
        self._token_url = auth.token_url
        self._client_id = auth.client_id
        self._client_secret = auth.client_secret
        self.access_token = auth.access_token
        self.refresh_token = auth.refresh_token
        self._on_rotated = on_tokens_rotated
        self._lock = asyncio.Lock()
        self._old: list[str] = []
        self.refreshes = 0

    def url_for(self, method: str) -> str:
        return self._endpoint + method

    def sign(self, payload: dict[str, Any]) -> tuple[dict[str, Any], str]:
        token = self.access_token
        return {**payload, "auth": token}, token

    @property
    def secrets(self) -> tuple[str, ...]:
        return (
            self.access_token,
            self.refresh_token,
            self._client_secret,
            *self._old,
        )

    @property
    def display(self) -> str:
        return mask_url(self._endpoint)

    async def refresh(self, transport: HttpTransport, used: str) -> None:
        """Refresh the pair unless another request already did since `used` was sent."""
        async with self._lock:
            if self.access_token != used:
                return
            resp = await transport.get(
                self._token_url,
                {
                    "grant_type": "refresh_token",
                    "client_id": self._client_id,
                    "client_secret": self._client_secret,
                    "refresh_token": self.refresh_token,
                },
            )
            try:
                body = orjson.loads(resp.body)
            except orjson.JSONDecodeError:
                body = None
            if not isinstance(body, dict):
                if resp.status >= 500 or resp.status == 429:
                    raise RefreshUnavailable(
                        f"OAuth server answered HTTP {resp.status} without JSON", resp.status
                    )
                raise FatalPortalError(
                    f"OAuth token refresh failed: HTTP {resp.status} without JSON from "
                    f"{mask_url(self._token_url)}; check oauth token_url",
                    code="OAUTH_REFRESH",
                    http_status=resp.status,
                )
            error = body.get("error")
            access, refresh = body.get("access_token"), body.get("refresh_token")
            if error or not isinstance(access, str) or not isinstance(refresh, str):
                code = str(error or "OAUTH_REFRESH")
                if resp.status >= 500 and classify(resp.status, code) is Action.TRANSIENT:
                    raise RefreshUnavailable(
                        f"OAuth token refresh failed with HTTP {resp.status} ({code})",
                        resp.status,
                    )
                raise FatalPortalError(
                    f"OAuth token refresh failed ({code}): {fatal_hint(code)}",
                    code=code,
                    http_status=resp.status,
                )
            self._old.extend((self.access_token, self.refresh_token))
            del self._old[:-8]
            self.access_token, self.refresh_token = access, refresh
            transport.add_secret(access)
            transport.add_secret(refresh)
            endpoint = body.get("client_endpoint")
            if isinstance(endpoint, str) and endpoint:
                try:
                    check_url(endpoint)
                    self._endpoint = _with_slash(endpoint)
                except UsageError:
                    pass  # keep the configured endpoint rather than downgrade to plain HTTP
            self.refreshes += 1
            # Before anything logs again: the caller masks the new pair and saves it, as
            # settings/oauth/auto-renewal.md asks (the used refresh token may no longer work).
            await self._hand_over(access, refresh, body.get("expires"))
            log.info("OAuth access token expired: refreshed; the new pair goes to the caller")

    async def _hand_over(self, access: str, refresh: str, expires: object) -> None:
        sink = self._on_rotated
        if isinstance(sink, TokenSink):
            known = expires if isinstance(expires, int) and not isinstance(expires, bool) else None
            await sink.rotated(access, refresh, known)
        elif sink is not None:
            sink(access, refresh)


def make_signer(auth: Auth, on_tokens_rotated: TokensRotated | None = None) -> Signer:
    """The signer for a configured credential."""
    if isinstance(auth, WebhookAuth):
        return WebhookSigner(auth)
    return OAuthSigner(auth, on_tokens_rotated)


__all__ = [
    "OAuthSigner",
    "RefreshUnavailable",
    "Signer",
    "TokenSink",
    "TokensRotated",
    "WebhookSigner",
    "make_signer",
]
