"""OAuth token store: access tokens that expire, refresh tokens that rotate.

Lifetimes and the refresh answer follow the official docs (b24-rest-docs `settings/oauth/index.md`,
`settings/oauth/auto-renewal.md`: access 1 hour, refresh 180 days, "save the new pair"). A refresh
invalidates the refresh token used: the docs do not say so in words, so the simulator takes the
strict reading, under which a client that does not save the new pair fails its next refresh
with `invalid_grant` (an error code listed in `settings/oauth/error-codes.md`). Access tokens
issued earlier stay valid until their own expiry (requests already in flight keep working).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pipeline.simulator.config import OAuthSettings
from pipeline.simulator.generate import mix64

TokenState = Literal["ok", "expired", "unknown"]


@dataclass(frozen=True)
class OAuthError(Exception):
    status: int
    error: str
    description: str


class TokenStore:
    def __init__(self, settings: OAuthSettings, seed: int, now: float) -> None:
        self.settings = settings
        self._seed = seed
        self._issued = 0
        self._access: dict[str, float] = {settings.access_token: now + settings.access_ttl_s}
        self._refresh: dict[str, float] = {settings.refresh_token: now + settings.refresh_ttl_s}
        self.access_token = settings.access_token
        self.refresh_token = settings.refresh_token

    def check(self, token: str, now: float) -> TokenState:
        expires = self._access.get(token)
        if expires is None:
            return "unknown"
        return "ok" if now < expires else "expired"

    def expire_access_tokens(self, now: float) -> None:
        """Make every access token issued so far expired as of `now`."""
        for token in self._access:
            self._access[token] = min(self._access[token], now)

    def _token(self, kind: int) -> str:
        self._issued += 1
        a = mix64(self._seed * 31 + self._issued * 2 + kind)
        return f"{a:016x}{mix64(a):016x}"

    def refresh(self, params: dict[str, str], now: float) -> dict[str, Any]:
        """Handle `grant_type=refresh_token`; raises OAuthError with the documented codes."""
        s = self.settings
        if params.get("grant_type") != "refresh_token":
            raise OAuthError(400, "invalid_request", "Unsupported or missing grant_type")
        if params.get("client_id") != s.client_id or params.get("client_secret") != s.client_secret:
            raise OAuthError(401, "invalid_client", "Invalid client credentials")
        token = params.get("refresh_token", "")
        expires = self._refresh.pop(token, None)
        if expires is None or now >= expires:
            raise OAuthError(400, "invalid_grant", "Invalid grant")
        self.access_token = self._token(0)
        self.refresh_token = self._token(1)
        self._access[self.access_token] = now + s.access_ttl_s
        self._refresh[self.refresh_token] = now + s.refresh_ttl_s
        # The documented answer (settings/oauth/auto-renewal.md); the server adds the endpoints.
        return {
            "access_token": self.access_token,
            "domain": "oauth.bitrix24.tech",
            "expires": int(now + s.access_ttl_s),
            "expires_in": int(s.access_ttl_s),
            "scope": s.scope,
            "status": "L",
            "member_id": s.member_id,
            "user_id": s.user_id,
            "refresh_token": self.refresh_token,
        }


__all__ = ["OAuthError", "TokenState", "TokenStore"]
