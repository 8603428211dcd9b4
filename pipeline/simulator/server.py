"""HTTP face of the simulator: routes, authentication, rate limit, faults, and the runner.

Request path for `/rest/...`: number the request -> pick its fault -> (error faults answer here)
-> parse params (query + JSON/form body, PHP bracket syntax) -> authenticate (webhook secret or
OAuth `auth` token) -> leaky bucket -> method -> damage the answer if the fault says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import AsyncIterator
from typing import Any

import orjson
from aiohttp import web

from pipeline.clock import ScaledClock
from pipeline.simulator.config import FaultConfig, FaultKind, SimulatorConfig
from pipeline.simulator.faults import Poison, html_page, pick_fault, truncate_mid_body
from pipeline.simulator.fields import select_user_fields
from pipeline.simulator.limits import LeakyBucket, OperatingMeter
from pipeline.simulator.methods import (
    METHOD_NOT_FOUND,
    SERVER_FAULT,
    WRONG_ENCODING,
    Api,
    method_name,
)
from pipeline.simulator.oauth import OAuthError, TokenStore
from pipeline.simulator.php import PhpKey, from_json, parse_pairs, parse_str
from pipeline.simulator.portal import Portal
from pipeline.simulator.stats import Stats
from pipeline.simulator.timefmt import ServerZone

_JSON = "application/json; charset=utf-8"
NO_AUTH = {"error": "NO_AUTH_FOUND", "error_description": "Wrong authorization data"}
EXPIRED = {"error": "expired_token", "error_description": "The access token provided has expired."}
RATE_LIMITED = {"error": "QUERY_LIMIT_EXCEEDED", "error_description": "Too many requests"}
INTERNAL = {"error": "INTERNAL_SERVER_ERROR", "error_description": "Internal server error"}
#: A 429 without a known code (e.g. from a proxy or a newer limiter).
NO_CODE_429 = {"error": "", "error_description": "Too many requests"}


class Simulator:
    """One simulated portal: state, limits and the aiohttp application serving it."""

    def __init__(self, config: SimulatorConfig, clock: ScaledClock | None = None) -> None:
        self.config = config
        if clock is not None and clock.scale != config.time_scale:
            raise ValueError("the shared clock's scale must equal config.time_scale")
        self.clock = clock or ScaledClock(config.time_scale)
        zone = ServerZone(config.server_tz, self.clock.now())
        self.portal = Portal(
            deals=config.deals,
            seed=config.seed,
            zone=zone,
            user_fields=select_user_fields(config.user_fields),
            hidden_fraction=config.hidden_fraction,
            deleted_fraction=config.deleted_fraction,
            cache_size=config.cache_size,
            empty_multiple=config.empty_multiple,
            comment_bytes=config.comment_bytes,
        )
        self.leads = Portal(
            deals=config.leads,
            seed=config.seed,
            zone=zone,
            user_fields=select_user_fields(config.user_fields),
            hidden_fraction=config.hidden_fraction,
            deleted_fraction=config.deleted_fraction,
            cache_size=config.cache_size,
            empty_multiple=config.empty_multiple,
            kind="lead",
        )
        self.counters = Stats()
        self.bucket = LeakyBucket(config.rate, config.burst)
        self.meter = OperatingMeter(config.operating_budget_s)
        self.api = Api(config, self.portal, self.clock, self.meter, self.counters)
        self.api.serve_leads(self.leads)
        self.set_poison(config.poison_ids)
        self.tokens = TokenStore(config.oauth, config.seed, self.clock.now())
        self.faults = config.faults
        self.secret = config.secret
        self.webhook_revoked = False
        self._request_no = 0

    # -- runtime control for tests ----------------------------------------------------------

    def set_faults(self, faults: FaultConfig) -> None:
        """Replace the fault configuration; request numbering continues."""
        self.faults = faults

    def set_poison(self, ids: list[int] | range | frozenset[int]) -> None:
        """From now on these deals are poison (see `SimulatorConfig.poison_ids`); the
        configured `poison_fraction` still applies."""
        config = self.config
        self.api.poisoned = Poison(ids, config.poison_fraction, config.seed)

    def revoke_webhook(self) -> None:
        """From now on webhook calls answer 401 NO_AUTH_FOUND, as after the webhook is deleted."""
        self.webhook_revoked = True

    def restore_webhook(self) -> None:
        self.webhook_revoked = False

    def expire_access_token(self) -> None:
        """Expire every OAuth access token issued so far (the next call gets `expired_token`)."""
        self.tokens.expire_access_tokens(self.clock.now())

    def touch(self, ids: list[int] | range, at: float | None = None, entity: str = "deal") -> None:
        """Advance DATE_MODIFY of deals (or leads) to `at` (default: the simulator's now)."""
        self.records(entity).touch(ids, self.clock.now() if at is None else at)

    def records(self, entity: str) -> Portal:
        """The portal of one entity's records: `deal` or `lead`."""
        if entity == "deal":
            return self.portal
        if entity == "lead":
            return self.leads
        raise ValueError(f"unknown entity {entity!r}: expected deal or lead")

    def create(self, count: int, at: float | None = None) -> list[int]:
        """Create `count` deals with the next IDs (see `Portal.create`); returns their IDs."""
        return self.portal.create(count, self.clock.now() if at is None else at)

    def restore(self, ids: list[int] | range, at: float | None = None) -> list[int]:
        """Restore deleted deals under their IDs (see `Portal.restore`)."""
        return self.portal.restore(ids, self.clock.now() if at is None else at)

    def stats(self) -> dict[str, Any]:
        return self.counters.snapshot(self.meter.charged_s)

    # -- HTTP -------------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(client_max_size=32 * 1024 * 1024)
        app.router.add_route("*", "/rest/{tail:.*}", self._rest)
        app.router.add_route("*", "/oauth/token/", self._oauth_token)
        app.router.add_route("*", "/oauth/token", self._oauth_token)
        app.router.add_get("/_simulator/stats", self._stats)
        app.router.add_get("/_simulator/clock", self._clock)
        app.router.add_post("/_simulator/touch", self._touch)
        app.router.add_post("/_simulator/delete", self._delete)
        app.router.add_post("/_simulator/create", self._create)
        app.router.add_post("/_simulator/restore", self._restore)
        app.router.add_get("/_simulator/deal/{id}", self._deal)
        app.router.add_get("/_simulator/lead/{id}", self._lead)
        return app

    async def _stats(self, request: web.Request) -> web.Response:
        return _json(200, self.stats())

    async def _change_request(self, request: web.Request) -> tuple[list[int], float | None, Portal]:
        try:
            body = orjson.loads(await request.read())
            ids = [int(i) for i in body["ids"]]
            at = body.get("at")
            records = self.records(str(body.get("entity", "deal")))
            return ids, None if at is None else float(at), records
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
            raise web.HTTPBadRequest(
                text='expected {"ids": [int, ...], "at": unix_ts?, "entity": "deal"|"lead"?}'
            ) from None

    async def _touch(self, request: web.Request) -> web.Response:
        """`{"ids": [...], "at": ts?, "entity": "lead"?}`: advance DATE_MODIFY, for processes
        that cannot call `touch` directly (the CLI simulator)."""
        ids, at, records = await self._change_request(request)
        records.touch(ids, self.clock.now() if at is None else at)
        return _json(200, {"touched": len(ids)})

    async def _delete(self, request: web.Request) -> web.Response:
        ids, _, records = await self._change_request(request)
        records.delete(ids)
        return _json(200, {"deleted": len(ids)})

    async def _create(self, request: web.Request) -> web.Response:
        """`{"count": n, "at": ts?}`: n new deals with the next IDs, created at `at` (default
        now); answers their IDs."""
        try:
            body = orjson.loads(await request.read())
            count = int(body["count"])
            at = body.get("at")
            when = self.clock.now() if at is None else float(at)
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
            raise web.HTTPBadRequest(text='expected {"count": int, "at": unix_ts?}') from None
        if not 0 <= count <= 1_000_000:
            raise web.HTTPBadRequest(text="count must be 0..1000000")
        return _json(200, {"created": self.create(count, when)})

    async def _restore(self, request: web.Request) -> web.Response:
        """`{"ids": [...], "at": ts?}`: deleted deals come back under their IDs."""
        ids, at, records = await self._change_request(request)
        return _json(
            200, {"restored": records.restore(ids, self.clock.now() if at is None else at)}
        )

    async def _clock(self, request: web.Request) -> web.Response:
        return _json(200, {"now": self.clock.now(), "scale": self.clock.scale})

    async def _deal(self, request: web.Request) -> web.Response:
        """The exact wire deal (the bytes `crm.deal.get` would put in `result`); hidden deals
        too, marked by the `X-Deal-Status` header; 404 for deleted or missing IDs."""
        return _record(self.portal, request)

    async def _lead(self, request: web.Request) -> web.Response:
        """The exact wire lead (what `crm.lead.get` would put in `result`), as `_deal`."""
        return _record(self.leads, request)

    async def _oauth_token(self, request: web.Request) -> web.Response:
        params = dict(request.query)
        if request.method == "POST" and request.can_read_body:
            params.update({k: str(v) for k, v in (await request.post()).items()})
        try:
            body = self.tokens.refresh(params, self.clock.now())
        except OAuthError as exc:
            self.counters.response("oauth.token", exc.status)
            return _json(exc.status, {"error": exc.error, "error_description": exc.description})
        self.counters.response("oauth.token", 200)
        self.counters.oauth_refreshes += 1
        base = f"{request.scheme}://{request.host}"
        body["domain"] = request.host
        body["client_endpoint"] = f"{base}/rest/"
        body["server_endpoint"] = f"{base}/oauth/rest/"
        return _json(200, body)

    async def _rest(self, request: web.Request) -> web.StreamResponse:
        self._request_no += 1
        n = self._request_no
        self.counters.requests += 1
        parts = request.match_info["tail"].split("/")
        webhook = len(parts) == 3
        method = method_name(parts[-1]) if len(parts) in (1, 3) else ""
        fault = pick_fault(self.faults, self.config.seed, n, method)
        if fault is not None:
            self.counters.faults[fault] += 1
            early = self._early_fault(fault, request)
            if early is not None:
                self.counters.response(method, early.status)
                return early
        params = await _params(request)
        status, body = self._dispatch(parts, webhook, method, params)
        if fault == "slow":
            await asyncio.sleep(self.faults.slow_s / self.config.time_scale)
        if fault == "no_time" and status == 200 and isinstance(body, dict):
            body.pop("time", None)
        self.counters.response(method, status)
        payload = orjson.dumps(body)
        if fault == "truncated":
            return await self._truncated(request, status, payload, n)
        return web.Response(status=status, body=payload, headers={"Content-Type": _JSON})

    def _dispatch(self, parts: list[str], webhook: bool, method: str,
                  params: dict[PhpKey, Any]) -> tuple[int, Any]:  # fmt: skip
        if webhook:
            user_id, secret = parts[0], parts[1]
            if self.webhook_revoked or secret != self.secret or user_id != str(self.config.user_id):
                return 401, NO_AUTH
            caller = f"webhook:{user_id}"
        elif len(parts) == 1 and method:
            token = params.get("auth")
            state = self.tokens.check(token, self.clock.now()) if isinstance(token, str) else None
            if state == "expired":
                return 401, EXPIRED
            if state != "ok":
                return 401, NO_AUTH
            caller = f"app:{self.config.oauth.client_id}"
        else:
            return 404, METHOD_NOT_FOUND.body()
        if not self.bucket.admit(self.clock.monotonic()):
            self.counters.rate_limited += 1
            return 503, RATE_LIMITED
        self.api.unencodable = False
        status, body = self.api.call(method, params, caller)
        if self.api.unencodable:
            # The work (and its operating charge) happened; only the answer failed, whole.
            if self.config.poison_answer == "error_500":
                return 500, dict(SERVER_FAULT)
            return 200, dict(WRONG_ENCODING)
        return status, body

    def _early_fault(self, fault: FaultKind, request: web.Request) -> web.StreamResponse | None:
        if fault == "error_500":
            return _json(500, INTERNAL)
        if fault == "error_429":
            return _json(429, NO_CODE_429)
        if fault in ("html_502", "html_503", "html_504"):
            status = int(fault[-3:])
            return web.Response(status=status, text=html_page(status), content_type="text/html")
        if fault == "reset":
            _reset(request)
            raise _Aborted
        return None

    async def _truncated(self, request: web.Request, status: int, payload: bytes,
                         n: int) -> web.StreamResponse:  # fmt: skip
        cut = payload[: max(1, len(payload) // 2)]
        if not truncate_mid_body(self.faults, self.config.seed, n):
            return web.Response(status=status, body=cut, headers={"Content-Type": _JSON})
        response = web.StreamResponse(status=status, headers={"Content-Type": _JSON})
        response.content_length = len(payload)
        await response.prepare(request)
        await response.write(cut)
        _reset(request)
        raise _Aborted


def _record(records: Portal, request: web.Request) -> web.Response:
    try:
        record_id = int(request.match_info["id"])
    except ValueError:
        return _json(404, {"status": "missing"})
    status = records.status(record_id)
    if status not in ("visible", "hidden"):
        return _json(404, {"status": status})
    return web.Response(
        body=records.deal_json(record_id),
        headers={"Content-Type": _JSON, "X-Deal-Status": status},
    )


class _Aborted(Exception):
    """The handler dropped the connection on purpose; nothing more is sent."""


def _reset(request: web.Request) -> None:
    """Abort the TCP connection with RST (SO_LINGER 0), like a proxy dropping it."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


@web.middleware
async def _swallow_aborts(request: web.Request, handler: Any) -> web.StreamResponse:
    try:
        response: web.StreamResponse = await handler(request)
    except _Aborted:
        # aiohttp needs a response object; the transport is gone, so nothing is written.
        return web.Response(status=499)
    return response


async def _params(request: web.Request) -> dict[PhpKey, Any]:
    """Query string plus body, the way PHP builds `$_REQUEST` for Bitrix: body wins."""
    params: dict[PhpKey, Any] = parse_str(request.query_string) if request.query_string else {}
    if request.method != "POST" or not request.can_read_body:
        return params
    ctype = request.content_type
    if ctype == "application/json":
        try:
            decoded = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            decoded = None  # json_decode failure leaves the body empty
        if isinstance(decoded, dict):
            params.update(from_json(decoded))
    elif ctype in ("application/x-www-form-urlencoded", "multipart/form-data"):
        form = await request.post()
        params.update(parse_pairs((k, str(v)) for k, v in form.items()))
    else:
        raw = (await request.read()).decode("utf-8", "replace")
        params.update(parse_str(raw))
    return params


def _json(status: int, body: Any) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(body), headers={"Content-Type": _JSON})


class RunningSimulator:
    """Handle on a served simulator (what `running_simulator` yields)."""

    def __init__(self, sim: Simulator, host: str, port: int) -> None:
        self.sim = sim
        self.host = host
        self.port = port
        self.base_url = f"http://{host}:{port}"

    @property
    def secret(self) -> str:
        return self.sim.secret

    @property
    def webhook_url(self) -> str:
        return f"{self.base_url}/rest/{self.sim.config.user_id}/{self.sim.secret}/"

    @property
    def oauth_endpoint(self) -> str:
        return f"{self.base_url}/rest/"

    @property
    def token_url(self) -> str:
        return f"{self.base_url}/oauth/token/"

    @property
    def portal(self) -> Portal:
        return self.sim.portal

    @property
    def leads(self) -> Portal:
        return self.sim.leads

    @property
    def config(self) -> SimulatorConfig:
        return self.sim.config

    @property
    def clock(self) -> ScaledClock:
        return self.sim.clock

    @property
    def access_token(self) -> str:
        return self.sim.tokens.access_token

    @property
    def refresh_token(self) -> str:
        return self.sim.tokens.refresh_token

    def stats(self) -> dict[str, Any]:
        return self.sim.stats()

    def set_faults(self, faults: FaultConfig) -> None:
        self.sim.set_faults(faults)

    def set_poison(self, ids: list[int] | range | frozenset[int]) -> None:
        self.sim.set_poison(ids)

    def revoke_webhook(self) -> None:
        self.sim.revoke_webhook()

    def restore_webhook(self) -> None:
        self.sim.restore_webhook()

    def expire_access_token(self) -> None:
        self.sim.expire_access_token()

    def touch(self, ids: list[int] | range, at: float | None = None, entity: str = "deal") -> None:
        self.sim.touch(ids, at, entity)

    def create(self, count: int, at: float | None = None) -> list[int]:
        return self.sim.create(count, at)

    def restore(self, ids: list[int] | range, at: float | None = None) -> list[int]:
        return self.sim.restore(ids, at)


@contextlib.asynccontextmanager
async def running_simulator(
    config: SimulatorConfig | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    clock: ScaledClock | None = None,
) -> AsyncIterator[RunningSimulator]:
    """Serve a simulated portal on `host:port` (0 = a free port) for the duration of the block.

    Two `ScaledClock(K)` objects created a moment apart disagree by (K-1) x that moment, so a
    client that compares its clock with `operating_reset_at` should use `sim.clock` or pass its
    own clock here (its scale must equal `config.time_scale`).
    """
    sim = Simulator(config or SimulatorConfig(), clock)
    app = sim.app()
    app.middlewares.append(_swallow_aborts)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True)
    await site.start()
    try:
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        real_port = sockets[0].getsockname()[1] if sockets else port
        yield RunningSimulator(sim, host, int(real_port))
    finally:
        await runner.cleanup()


__all__ = ["RunningSimulator", "Simulator", "running_simulator"]
