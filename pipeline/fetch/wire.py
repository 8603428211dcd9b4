"""The transport seam: what `PortalClient` needs from HTTP, and a transport that answers from a
function.

`PortalClient(..., http=...)` takes any `HttpTransport`; by default it builds the aiohttp one
(`pipeline.fetch.transport.Transport`). `MockTransport(handler)` answers every request by calling
`handler(request)`, in the spirit of httpx's `MockTransport`: the whole decision logic of the
client and the engine (classification, limits, retries, splitting) runs against it without a
socket, so an answer class can be tested through the client in microseconds. The handler may
return an `HttpResponse` (or an awaitable of one) or raise a `TransientError` /
`FatalPortalError`, as the real transport does for network failures. No aiohttp here.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from pipeline.redact import mask_text


@dataclass(frozen=True, slots=True)
class HttpResponse:
    """What the rest of the fetch package sees of an HTTP answer."""

    status: int
    content_type: str
    body: bytes
    url: str


class HttpTransport(Protocol):
    """An HTTP client bound to one run; every failure is raised as a pipeline error."""

    @property
    def redirects_followed(self) -> int:
        """Redirects followed so far (the client counts them per request)."""
        ...

    def open(self) -> None:
        """Get ready to send (idempotent); called inside the running event loop."""
        ...

    async def aclose(self) -> None: ...

    async def post(self, url: str, body: bytes) -> HttpResponse:
        """POST a JSON body."""
        ...

    async def get(self, url: str, params: Mapping[str, str]) -> HttpResponse:
        """GET with query parameters (OAuth token refresh)."""
        ...

    def add_secret(self, secret: str) -> None:
        """Mask `secret` in messages from now on."""
        ...

    def mask(self, text: str) -> str:
        """`text` with every known secret masked."""
        ...


@dataclass(frozen=True, slots=True)
class HttpRequest:
    """One request as a `MockTransport` handler sees it."""

    method: str
    url: str
    body: bytes | None = None
    params: Mapping[str, str] = field(default_factory=dict)

    @property
    def api_method(self) -> str:
        """The REST method named by the URL's last path segment (`batch`, `crm.lead.get`)."""
        return self.url.rstrip("/").rsplit("/", 1)[-1]

    def json(self) -> Any:
        """The decoded JSON body (None for a GET)."""
        return None if self.body is None else orjson.loads(self.body)


Handler = Callable[[HttpRequest], HttpResponse | Awaitable[HttpResponse]]


def json_response(status: int, body: Any, *, url: str = "", content_type: str = "") -> HttpResponse:
    """An answer carrying `body` as JSON (content type `application/json` unless given)."""
    return HttpResponse(
        status=status,
        content_type=content_type or "application/json; charset=utf-8",
        body=orjson.dumps(body),
        url=url,
    )


class MockTransport:
    """An `HttpTransport` that answers from `handler`; records every request it was given."""

    def __init__(self, handler: Handler, *, secrets: Iterable[str] = ()) -> None:
        self._handler = handler
        self._secrets = tuple(secrets)
        self.requests: list[HttpRequest] = []
        self.opened = False
        self.closed = False

    @property
    def redirects_followed(self) -> int:
        return 0

    def open(self) -> None:
        self.opened = True

    async def aclose(self) -> None:
        self.closed = True

    async def post(self, url: str, body: bytes) -> HttpResponse:
        return await self._answer(HttpRequest("POST", url, body))

    async def get(self, url: str, params: Mapping[str, str]) -> HttpResponse:
        return await self._answer(HttpRequest("GET", url, None, dict(params)))

    def add_secret(self, secret: str) -> None:
        self._secrets = (*self._secrets, secret)

    def mask(self, text: str) -> str:
        return mask_text(text, self._secrets)

    async def _answer(self, request: HttpRequest) -> HttpResponse:
        self.requests.append(request)
        answer = self._handler(request)
        if isinstance(answer, HttpResponse):
            return answer
        return await answer


__all__ = [
    "Handler",
    "HttpRequest",
    "HttpResponse",
    "HttpTransport",
    "MockTransport",
    "json_response",
]
