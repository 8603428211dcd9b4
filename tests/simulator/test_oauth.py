"""OAuth calls, expiry and refresh-token rotation (REST docs `settings/oauth/index.md`,
`settings/oauth/auto-renewal.md`)."""

from __future__ import annotations

from typing import Any

import aiohttp
import orjson

from pipeline.simulator import RunningSimulator
from pipeline.simulator.generate import with_file_auth
from tests.conftest import SimulatorFactory
from tests.simulator.conftest import get, post_json


async def _refresh(
    http: aiohttp.ClientSession,
    sim: RunningSimulator,
    refresh_token: str,
    secret: str | None = None,
) -> tuple[int, dict[str, object]]:
    oauth = sim.config.oauth
    params = {
        "grant_type": "refresh_token",
        "client_id": oauth.client_id,
        "client_secret": secret or oauth.client_secret,
        "refresh_token": refresh_token,
    }
    return await get(http, sim.token_url, **params)


def _oauth_wire(sim: RunningSimulator, deal_id: int, token: str) -> Any:
    """The deal as an OAuth caller gets it: the caller's token in file download URLs."""
    return orjson.loads(with_file_auth(sim.portal.deal_json(deal_id), token))


async def test_oauth_call_expiry_and_rotation(
    sim: RunningSimulator, http: aiohttp.ClientSession
) -> None:
    deal_id = sim.portal.visible_ids[0]
    endpoint = sim.oauth_endpoint
    first_access, first_refresh = sim.access_token, sim.refresh_token
    status, body = await get(http, endpoint + "crm.deal.get", id=deal_id, auth=first_access)
    assert (status, body["result"]) == (200, _oauth_wire(sim, deal_id, first_access))
    # auth in a JSON body, through batch
    status, body = await post_json(
        http, endpoint + "batch", {"auth": first_access, "cmd": [f"crm.deal.get?id={deal_id}"]}
    )
    assert status == 200
    assert body["result"]["result"] == [_oauth_wire(sim, deal_id, first_access)]

    sim.expire_access_token()
    assert await get(http, endpoint + "crm.deal.get", id=deal_id, auth=first_access) == (
        401,
        {"error": "expired_token", "error_description": "The access token provided has expired."},
    )

    status, token = await _refresh(http, sim, first_refresh)
    assert status == 200
    assert {"access_token", "refresh_token", "expires", "expires_in", "client_endpoint",
            "server_endpoint", "member_id", "scope", "status", "user_id"} <= set(token)  # fmt: skip
    assert token["expires_in"] == 3600
    assert token["client_endpoint"] == endpoint
    assert token["refresh_token"] != first_refresh
    status, body = await get(
        http, endpoint + "crm.deal.get", id=deal_id, auth=token["access_token"]
    )
    assert status == 200

    # The used refresh token is gone: rotation.
    status, err = await _refresh(http, sim, first_refresh)
    assert (status, err["error"]) == (400, "invalid_grant")
    status, again = await _refresh(http, sim, str(token["refresh_token"]))
    assert status == 200
    assert again["refresh_token"] != token["refresh_token"]
    assert sim.stats()["oauth_refreshes"] == 2


async def test_oauth_errors(sim: RunningSimulator, http: aiohttp.ClientSession) -> None:
    status, body = await get(http, sim.oauth_endpoint + "crm.deal.fields", auth="bogus")
    assert (status, body["error"]) == (401, "NO_AUTH_FOUND")
    status, body = await get(http, sim.oauth_endpoint + "crm.deal.fields")
    assert (status, body["error"]) == (401, "NO_AUTH_FOUND")
    status, body = await _refresh(http, sim, sim.refresh_token, secret="wrong")
    assert (status, body["error"]) == (401, "invalid_client")
    status, body = await get(http, sim.token_url, grant_type="password")
    assert (status, body["error"]) == (400, "invalid_request")


async def test_access_token_expires_with_simulated_time(
    simulator: SimulatorFactory, http: aiohttp.ClientSession
) -> None:
    sim = await simulator(deals=10, seed=1, time_scale=36000.0)  # one hour = 0.1 s
    status, _ = await get(http, sim.oauth_endpoint + "crm.deal.fields", auth=sim.access_token)
    assert status == 200
    await sim.clock.sleep(3601)
    status, body = await get(http, sim.oauth_endpoint + "crm.deal.fields", auth=sim.access_token)
    assert (status, body["error"]) == (401, "expired_token")
