"""Transport edge cases the simulator does not cover, against a tiny aiohttp server of our own:
domain move (302/307) re-POSTed, TLS with an on-premise CA bundle, non-JSON answers, URL rules."""

from __future__ import annotations

import contextlib
import ssl
import subprocess
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web

from pipeline.config import FetchConfig, LimitsConfig, TransportConfig, WebhookAuth
from pipeline.errors import FatalPortalError, TransientError, UsageError
from pipeline.fetch import PortalClient, fetch_deals
from pipeline.fetch.transport import Transport, check_url, is_loopback_host

from .helpers import aiter_ids

NO_LIMITS = LimitsConfig(rate=0, operating_budget_s=None)
TIME = {"start": 1.0, "finish": 1.1, "duration": 0.1, "processing": 0.1}
SECRET = "t0ps3cr3tw3bh00k"


def ok(result: Any) -> web.Response:
    return web.json_response({"result": result, "time": TIME})


@contextlib.asynccontextmanager
async def serve(
    handler: Callable[[web.Request], Any], ssl_context: ssl.SSLContext | None = None
) -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    scheme = "https" if ssl_context else "http"
    try:
        yield f"{scheme}://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@pytest.fixture
def seen() -> list[tuple[str, str, bytes]]:
    return []


@pytest.mark.parametrize("status", [301, 302, 307, 308])
async def test_domain_move_reposts_the_same_body(
    status: int, seen: list[tuple[str, str, bytes]]
) -> None:
    async def new_portal(request: web.Request) -> web.Response:
        seen.append((request.method, request.path, await request.read()))
        return ok({"ID": "5", "TITLE": "moved"})

    async with serve(new_portal) as new_base:

        async def old_portal(request: web.Request) -> web.Response:
            seen.append((request.method, request.path, await request.read()))
            return web.Response(status=status, headers={"Location": new_base + request.path})

        async with serve(old_portal) as old_base:
            url = f"{old_base}/rest/1/{SECRET}/"
            async with PortalClient(WebhookAuth(url), limits=NO_LIMITS) as client:
                first = await client.call("crm.deal.get", {"ID": 5})
                second = await client.call("crm.deal.get", {"ID": 5})
    assert first == second == {"ID": "5", "TITLE": "moved"}
    # old portal, new portal, then the second call went straight to the new address
    assert [(m, p) for m, p, _ in seen] == [("POST", f"/rest/1/{SECRET}/crm.deal.get")] * 3
    assert orjson.loads(seen[1][2]) == {"ID": 5}
    assert seen[1][2] == seen[0][2]
    assert client.stats.redirects == 1


async def test_html_and_truncated_answers_are_transient() -> None:
    answers = iter(
        [
            web.Response(status=502, text="<html>Bad gateway</html>", content_type="text/html"),
            web.Response(status=200, body=b'{"result": {"ID"', content_type="application/json"),
            web.Response(status=200, text="<html>maintenance</html>", content_type="text/html"),
            ok({"ID": "1"}),
        ]
    )

    async def handler(request: web.Request) -> web.Response:
        return next(answers)

    async with serve(handler) as base:
        client = PortalClient(
            WebhookAuth(f"{base}/rest/1/{SECRET}/"),
            limits=NO_LIMITS,
            fetch=FetchConfig(backoff_base_s=0.0, backoff_max_s=0.0),
        )
        async with client:
            assert await client.call("crm.deal.get", {"ID": 1}) == {"ID": "1"}
            assert client.stats.transient_errors == 3


async def test_connection_refused_is_transient() -> None:
    async def handler(request: web.Request) -> web.Response:
        return ok(None)

    async with serve(handler) as base:
        dead = base
    async with Transport() as transport:
        with pytest.raises(TransientError) as info:
            await transport.post(f"{dead}/rest/1/{SECRET}/batch", b"{}")
    assert SECRET not in str(info.value)


@pytest.mark.parametrize(
    ("status", "code"),
    [(401, "insufficient_scope"), (403, "ACCESS_DENIED"), (401, "INVALID_CREDENTIALS")],
)
async def test_fatal_answers_name_the_cause_and_mask_the_secret(status: int, code: str) -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.json_response(
            {"error": code, "error_description": f"nope for /rest/1/{SECRET}/"}, status=status
        )

    async with (
        serve(handler) as base,
        PortalClient(WebhookAuth(f"{base}/rest/1/{SECRET}/"), limits=NO_LIMITS) as c,
    ):
        with pytest.raises(FatalPortalError) as info:
            await c.call("crm.deal.fields")
    message = str(info.value)
    assert code in message
    assert SECRET not in message
    assert info.value.http_status == status


def test_url_rules() -> None:
    check_url("https://portal.bitrix24.com/rest/1/x/")
    check_url("http://127.0.0.1:8080/rest/1/x/")
    check_url("http://localhost/rest/")
    check_url("http://[::1]:80/rest/")
    with pytest.raises(UsageError, match="https") as info:
        check_url(f"http://portal.example.com/rest/1/{SECRET}/")
    assert SECRET not in str(info.value)
    with pytest.raises(UsageError):
        check_url("ftp://127.0.0.1/")
    with pytest.raises(UsageError):
        PortalClient(WebhookAuth(f"http://10.0.0.1/rest/1/{SECRET}/"))
    assert is_loopback_host("127.8.9.10")
    assert not is_loopback_host("128.0.0.1")


async def test_redirect_to_plain_http_elsewhere_is_refused() -> None:
    async def handler(request: web.Request) -> web.Response:
        raise web.HTTPFound("http://portal.example.com/rest/1/x/batch")

    async with serve(handler) as base, Transport() as transport:
        with pytest.raises(UsageError):
            await transport.post(f"{base}/rest/1/x/batch", b"{}")


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """A private CA and a server certificate for 127.0.0.1 signed by it (openssl CLI)."""
    d = tmp_path_factory.mktemp("tls")

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=d)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
        "-days", "2", "-subj", "/CN=test-ca")  # fmt: skip
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "srv.key", "-out", "srv.csr",
        "-subj", "/CN=127.0.0.1")  # fmt: skip
    (d / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
    run("x509", "-req", "-in", "srv.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "srv.pem", "-days", "2", "-extfile", "ext.cnf")  # fmt: skip
    return d / "ca.pem", d / "srv.pem", d / "srv.key"


async def test_tls_verified_with_ca_bundle_and_refused_without(
    tls_files: tuple[Path, Path, Path],
) -> None:
    ca, cert, key = tls_files
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)

    async def handler(request: web.Request) -> web.Response:
        return ok({"ID": "1"})

    async with serve(handler, server_ctx) as base:
        url = f"{base}/rest/1/{SECRET}/"
        trusted = TransportConfig(ca_bundle=str(ca))
        async with PortalClient(WebhookAuth(url), limits=NO_LIMITS, transport=trusted) as c:
            assert await c.call("crm.deal.get", {"ID": 1}) == {"ID": "1"}
        async with PortalClient(WebhookAuth(url), limits=NO_LIMITS) as c:
            with pytest.raises(FatalPortalError, match="ca_bundle") as info:
                await c.call("crm.deal.get", {"ID": 1})
            assert SECRET not in str(info.value)


async def test_missing_ca_bundle_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="ca_bundle"):
        async with Transport(TransportConfig(ca_bundle=str(tmp_path / "nope.pem"))):
            pass


async def test_https_gets_a_verifying_context_and_plain_http_none() -> None:
    transport = Transport()
    assert transport._ssl_for("http://127.0.0.1:1/rest/") is True
    ctx = transport._ssl_for("HTTPS://example.bitrix24.com/rest/")
    assert isinstance(ctx, ssl.SSLContext)
    assert ctx.verify_mode is ssl.CERT_REQUIRED
    assert ctx.check_hostname
    assert ctx.cert_store_stats() == ssl.create_default_context().cert_store_stats()
    assert transport._ssl_for("https://other.bitrix24.com/rest/") is ctx  # built once
    unverified = Transport(TransportConfig(verify_tls=False))
    assert unverified._ssl_for("https://example.bitrix24.com/rest/") is False


async def test_a_plain_http_run_builds_no_tls_context() -> None:
    async def handler(request: web.Request) -> web.Response:
        return ok({"ID": "1"})

    async with serve(handler) as base, Transport() as transport:
        resp = await transport.post(f"{base}/rest/1/{SECRET}/crm.deal.get", b"{}")
        assert resp.status == 200
        assert transport._tls_context is None


async def test_per_command_fatal_inside_batch_stops_the_fetch() -> None:
    async def handler(request: web.Request) -> web.Response:
        cmd = orjson.loads(await request.read())["cmd"]
        errors = {
            key: {"error": "insufficient_scope", "error_description": "needs crm"} for key in cmd
        }
        return web.json_response(
            {"result": {"result": [], "result_error": errors, "result_time": []}, "time": TIME}
        )

    async with (
        serve(handler) as base,
        PortalClient(WebhookAuth(f"{base}/rest/1/{SECRET}/"), limits=NO_LIMITS) as client,
    ):
        with pytest.raises(FatalPortalError) as info:
            [o async for o in fetch_deals(aiter_ids(range(1, 500)), client)]
    assert info.value.code == "insufficient_scope"
    assert "crm" in str(info.value)
    assert SECRET not in str(info.value)
