"""`crm.deal.get` and the URL/auth surface over real HTTP.

Sources: REST docs `crm-deal-get.md`, `local-integrations/local-webhooks.md`,
`settings/oauth/index.md`; crm module `restservice.php`, `CCrmDealRestProxy::innerGet`."""

from __future__ import annotations

import aiohttp
import pytest

from pipeline.simulator import RunningSimulator
from tests.conftest import SimulatorFactory
from tests.simulator.conftest import get, post_form, post_json

INVALID = {"error": "", "error_description": "ID is not defined or invalid."}
NOT_FOUND = {"error": "", "error_description": "Not found"}


async def test_get_by_query_json_and_form(
    sim: RunningSimulator, http: aiohttp.ClientSession
) -> None:
    deal_id = sim.portal.visible_ids[5]
    wire = sim.portal.deal_wire(deal_id)
    status, body = await get(http, sim.webhook_url + "crm.deal.get", id=deal_id)
    assert (status, body["result"]) == (200, wire)
    status, body = await post_json(http, sim.webhook_url + "crm.deal.get.json", {"ID": deal_id})
    assert (status, body["result"]) == (200, wire)
    status, body = await post_form(http, sim.webhook_url + "crm.deal.get", f"id={deal_id}")
    assert (status, body["result"]) == (200, wire)
    # Method names are case-insensitive; the time block is present.
    status, body = await get(http, sim.webhook_url + "CRM.Deal.Get", ID=deal_id)
    assert status == 200
    assert {"start", "finish", "duration", "date_start", "date_finish"} <= set(body["time"])


async def test_upper_id_wins_over_lower(sim: RunningSimulator, http: aiohttp.ClientSession) -> None:
    a, b = sim.portal.visible_ids[:2]
    _, body = await post_json(http, sim.webhook_url + "crm.deal.get", {"ID": a, "id": b})
    assert body["result"]["ID"] == str(a)


@pytest.mark.parametrize(
    ("raw", "expected_suffix"),
    [("{id}abc", None), ("{id}.7", None), ("abc", "invalid"), ("0", "invalid"), ("-3", "invalid")],
)
async def test_php_int_cast_of_id(
    sim: RunningSimulator, http: aiohttp.ClientSession, raw: str, expected_suffix: str | None
) -> None:
    deal_id = sim.portal.visible_ids[2]
    status, body = await get(http, sim.webhook_url + "crm.deal.get", id=raw.format(id=deal_id))
    if expected_suffix is None:
        assert status == 200
        assert body["result"]["ID"] == str(deal_id)
    else:
        assert (status, body) == (400, INVALID)


async def test_missing_id_parameter(sim: RunningSimulator, http: aiohttp.ClientSession) -> None:
    assert await get(http, sim.webhook_url + "crm.deal.get") == (400, INVALID)


async def test_not_found_deleted_and_hidden(
    sim: RunningSimulator, http: aiohttp.ClientSession
) -> None:
    deleted = sim.portal.deleted_ids[0]
    never = sim.portal.max_id + 10
    hidden = sim.portal.hidden_ids[0]
    assert await get(http, sim.webhook_url + "crm.deal.get", id=deleted) == (400, NOT_FOUND)
    assert await get(http, sim.webhook_url + "crm.deal.get", id=never) == (400, NOT_FOUND)
    assert await get(http, sim.webhook_url + "crm.deal.get", id=hidden) == (
        400,
        {"error": "", "error_description": "Access denied."},
    )
    assert sim.portal.deal_wire(hidden) is None


async def test_user_without_deal_permission(
    simulator: SimulatorFactory, http: aiohttp.ClientSession
) -> None:
    sim = await simulator(deals=50, seed=2, can_read_deals=False)
    missing = sim.portal.max_id + 1
    existing = sim.portal.visible_ids[0]
    # Missing deals: "Access denied" without the period (CCrmDealRestProxy::innerGet).
    assert await get(http, sim.webhook_url + "crm.deal.get", id=missing) == (
        400,
        {"error": "", "error_description": "Access denied"},
    )
    assert await get(http, sim.webhook_url + "crm.deal.get", id=existing) == (
        400,
        {"error": "", "error_description": "Access denied."},
    )


async def test_auth_and_routing_errors(sim: RunningSimulator, http: aiohttp.ClientSession) -> None:
    no_auth = {"error": "NO_AUTH_FOUND", "error_description": "Wrong authorization data"}
    wrong_secret = f"{sim.base_url}/rest/1/not-the-secret/crm.deal.get"
    assert await get(http, wrong_secret, id=1) == (401, no_auth)
    wrong_user = f"{sim.base_url}/rest/2/{sim.secret}/crm.deal.get"
    assert await get(http, wrong_user, id=1) == (401, no_auth)
    status, body = await get(http, sim.webhook_url + "crm.deal.nothing")
    assert (status, body["error"]) == (404, "ERROR_METHOD_NOT_FOUND")
    sim.revoke_webhook()
    assert await get(http, sim.webhook_url + "crm.deal.fields") == (401, no_auth)
    sim.restore_webhook()
    status, _ = await get(http, sim.webhook_url + "crm.deal.fields")
    assert status == 200


async def test_secret_is_not_echoed_in_errors(
    sim: RunningSimulator, http: aiohttp.ClientSession
) -> None:
    async with http.get(sim.webhook_url + "crm.nope") as resp:
        assert sim.secret not in await resp.text()
