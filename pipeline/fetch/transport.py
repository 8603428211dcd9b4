"""The network seam: the only client-side module that imports aiohttp.

One `ClientSession` per run (connection reuse), explicit timeouts, TLS verified by default (an
on-premise CA bundle may be given), plain HTTP refused except to loopback hosts. Redirects are
followed here, by hand: aiohttp (like most clients) turns a POST into a GET on 302, losing the
body, which is exactly the Bitrix24 domain-move trap (docs `change-domen.md`); we re-POST the same
body to the new location and remember the move for later requests.

Every aiohttp/OS failure is translated here, once, into our own errors:

    connection refused/reset, timeouts, truncated body   -> TransientError
    TLS certificate not trusted                          -> FatalPortalError (fix the CA bundle)
    non-HTTPS or non-loopback plain HTTP URL             -> UsageError

Messages carry masked URLs only (`pipeline.redact`).
"""

from __future__ import annotations

import ssl
from collections.abc import Iterable, Mapping
from types import TracebackType
from urllib.parse import urljoin, urlsplit, urlunsplit

import aiohttp

from pipeline.config import TransportConfig
from pipeline.errors import FatalPortalError, TransientError, UsageError
from pipeline.fetch.wire import HttpResponse
from pipeline.redact import mask_text
from pipeline.urls import check_url, is_loopback_host

_REDIRECTS = frozenset({301, 302, 303, 307, 308})
MAX_REDIRECTS = 5


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "", "", ""))


class Transport:
    """The aiohttp `HttpTransport` (`pipeline.fetch.wire`), bound to one run. Use as
    `async with Transport(cfg) as t:`.

    `secrets` are masked out of every message this class produces.
    """

    def __init__(
        self,
        config: TransportConfig | None = None,
        *,
        secrets: Iterable[str] = (),
        pool_size: int = 16,
    ) -> None:
        self._config = config or TransportConfig()
        self._secrets = tuple(secrets)
        self._pool_size = pool_size
        self._session: aiohttp.ClientSession | None = None
        self._tls_context: ssl.SSLContext | None = None
        #: Origins the portal told us moved (old origin -> new origin).
        self._moved: dict[str, str] = {}
        self.redirects_followed = 0

    def add_secret(self, secret: str) -> None:
        """Mask `secret` in messages from now on (rotated OAuth tokens)."""
        self._secrets = (*self._secrets, secret)

    def mask(self, text: str) -> str:
        return mask_text(text, self._secrets)

    def _tls(self) -> ssl.SSLContext:
        """The verifying context of every https request, built once: loading the CA store costs
        ~40 ms of CPU, which a plain-http run (a loopback simulator) never needs to pay."""
        if self._tls_context is None:
            cfg = self._config
            ctx = ssl.create_default_context()
            if cfg.ca_bundle:
                try:
                    ctx.load_verify_locations(cafile=cfg.ca_bundle)
                except (OSError, ssl.SSLError) as exc:
                    raise UsageError(
                        f"cannot load the CA bundle {cfg.ca_bundle!r} (--ca-bundle, [transport] "
                        f"ca_bundle): {exc.strerror or exc}"
                    ) from None
            ctx.set_alpn_protocols(("http/1.1",))
            self._tls_context = ctx
        return self._tls_context

    def _ssl_for(self, url: str) -> ssl.SSLContext | bool:
        """What aiohttp's `ssl=` gets for `url`: our context for https (or no verification when
        the operator turned it off), and the default for plain http, which ignores it."""
        if url[:6].lower() != "https:":
            return True
        return self._tls() if self._config.verify_tls else False

    async def __aenter__(self) -> Transport:
        self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def open(self) -> None:
        """Create the session (idempotent); needs a running event loop."""
        if self._session is not None:
            return
        cfg = self._config
        if cfg.ca_bundle and cfg.verify_tls:
            self._tls()  # a bad --ca-bundle is a usage error now, before any request
        connector = aiohttp.TCPConnector(limit=self._pool_size, enable_cleanup_closed=False)
        timeout = aiohttp.ClientTimeout(
            total=cfg.request_timeout_s,
            connect=cfg.connect_timeout_s,
            sock_connect=cfg.connect_timeout_s,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=timeout,
            raise_for_status=False,
            auto_decompress=True,
            headers={"Accept": "application/json"},
        )

    async def aclose(self) -> None:
        """Close the session and every pooled connection."""
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    @property
    def closed(self) -> bool:
        return self._session is None

    def _rewrite(self, url: str) -> str:
        if not self._moved:
            return url
        origin = _origin(url)
        new = self._moved.get(origin)
        return new + url[len(origin) :] if new else url

    async def post(self, url: str, body: bytes) -> HttpResponse:
        """POST a JSON body, following redirects by re-POSTing the same body."""
        return await self._request("POST", url, body=body)

    async def get(self, url: str, params: Mapping[str, str]) -> HttpResponse:
        """GET with query parameters (OAuth token refresh)."""
        return await self._request("GET", url, params=params)

    async def _request(
        self,
        method: str,
        url: str,
        *,
        body: bytes | None = None,
        params: Mapping[str, str] | None = None,
    ) -> HttpResponse:
        if self._session is None:
            raise RuntimeError("Transport used outside `async with`")
        url = self._rewrite(url)
        for _ in range(MAX_REDIRECTS + 1):
            check_url(url)
            status, ctype, data, location = await self._once(method, url, body, params)
            if status in _REDIRECTS and location:
                target = urljoin(url, location)
                check_url(target)
                old, new = _origin(url), _origin(target)
                if old != new and urlsplit(target).path == urlsplit(url).path:
                    # A domain move: later calls go straight to the new portal address.
                    self._moved[old] = new
                self.redirects_followed += 1
                url = target
                continue
            return HttpResponse(status=status, content_type=ctype, body=data, url=url)
        raise TransientError(
            f"more than {MAX_REDIRECTS} redirects from {self.mask(url)}", code="TOO_MANY_REDIRECTS"
        )

    async def _once(
        self,
        method: str,
        url: str,
        body: bytes | None,
        params: Mapping[str, str] | None,
    ) -> tuple[int, str, bytes, str | None]:
        assert self._session is not None
        headers = {"Content-Type": "application/json"} if body is not None else None
        where = self.mask(url)
        try:
            async with self._session.request(
                method,
                url,
                data=body,
                params=params,
                headers=headers,
                allow_redirects=False,
                ssl=self._ssl_for(url),
            ) as resp:
                data = await resp.read()
                ctype = resp.headers.get("Content-Type", "")
                return resp.status, ctype, data, resp.headers.get("Location")
        except aiohttp.ClientConnectorCertificateError as exc:
            raise FatalPortalError(
                f"TLS certificate of {where} is not trusted ({exc.certificate_error}): "
                "for an on-premise portal pass its CA file with --ca-bundle (or [transport] "
                "ca_bundle)",
                code="TLS_CERTIFICATE",
            ) from None
        except aiohttp.ClientPayloadError as exc:
            raise TransientError(
                f"truncated answer from {where}: {self.mask(str(exc))}", code="TRUNCATED"
            ) from None
        except (aiohttp.ServerDisconnectedError, ConnectionResetError) as exc:
            raise TransientError(
                f"connection reset by {where}: {self.mask(type(exc).__name__)}", code="RESET"
            ) from None
        except TimeoutError:
            raise TransientError(f"timeout talking to {where}", code="TIMEOUT") from None
        except aiohttp.ClientError as exc:
            raise TransientError(
                f"HTTP failure talking to {where}: {self.mask(f'{type(exc).__name__}: {exc}')}",
                code="NETWORK",
            ) from None
        except OSError as exc:
            raise TransientError(
                f"network error talking to {where}: {self.mask(str(exc))}", code="NETWORK"
            ) from None


__all__ = ["MAX_REDIRECTS", "HttpResponse", "Transport", "check_url", "is_loopback_host"]
