"""The simulator's create and restore endpoints: deals appear and come back between nights."""

from __future__ import annotations

import aiohttp

from tests.conftest import SimulatorFactory
from tests.simulator.conftest import get, post_json


async def test_create_is_deterministic_and_listed(simulator: SimulatorFactory) -> None:
    a = await simulator(deals=80, seed=13)
    b = await simulator(deals=80, seed=13)
    async with aiohttp.ClientSession() as http:
        status, body = await post_json(http, a.base_url + "/_simulator/create", {"count": 3})
        assert status == 200
        created = body["created"]
        assert created == [a.portal.max_id - 2, a.portal.max_id - 1, a.portal.max_id]
        assert b.create(3) == created
        for deal_id in created:
            status, wire = await get(http, f"{a.base_url}/_simulator/deal/{deal_id}")
            assert status == 200
            assert wire == b.portal.deal_wire(deal_id)  # same seed, same calls: same deal
            assert a.portal.date_modify(deal_id) >= a.portal.date_create(deal_id) - 1
        status, listed = await get(
            http,
            a.webhook_url + "crm.deal.list",
            **{"select[]": "ID", "filter[>ID]": str(created[0] - 1), "start": "-1"},
        )
        assert status == 200
        assert [int(row["ID"]) for row in listed["result"]] == created
        async with http.post(a.base_url + "/_simulator/create", json={"count": "x"}) as resp:
            assert resp.status == 400


async def test_restore_brings_a_deleted_deal_back(simulator: SimulatorFactory) -> None:
    sim = await simulator(deals=60, seed=3, deleted_fraction=0.05)
    old = sim.portal.deleted_ids[0]  # deleted before the portal was first seen
    live = sim.portal.visible_ids[0]
    async with aiohttp.ClientSession() as http:
        await post_json(http, sim.base_url + "/_simulator/delete", {"ids": [live]})
        url = sim.webhook_url + "crm.deal.get"
        status, body = await get(http, url, ID=str(live))
        assert (status, body["error_description"]) == (400, "Not found")
        status, body = await post_json(
            http,
            sim.base_url + "/_simulator/restore",
            {"ids": [live, old, sim.portal.visible_ids[1]]},
        )
        assert (status, body) == (200, {"restored": [live, old]})
        for deal_id in (live, old):
            status, body = await get(http, url, ID=str(deal_id))
            assert (status, body["result"]["ID"]) == (200, str(deal_id))
    assert {live, old} <= set(sim.portal.visible_ids)
    assert sim.portal.existing_ids == sorted(sim.portal.existing_ids)
