"""The simulator's leads over HTTP: `crm.lead.get/list/fields` (plain and in `batch`), their own
ID space and operating budget, and the control routes addressing leads."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

from pipeline.simulator import RunningSimulator
from pipeline.simulator.fields import LEAD_STANDARD_FIELD_NAMES, MULTIFIELDS
from tests.conftest import SimulatorFactory
from tests.simulator.conftest import post_json


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def leads(simulator: SimulatorFactory) -> RunningSimulator:
    return await simulator(deals=60, leads=120, seed=5, hidden_fraction=0.1)


async def test_fields_list_the_lead_field_table(
    leads: RunningSimulator, http: aiohttp.ClientSession
) -> None:
    status, body = await post_json(http, leads.webhook_url + "crm.lead.fields", {})
    assert status == 200
    fields = body["result"]
    assert tuple(fields)[: len(LEAD_STANDARD_FIELD_NAMES)] == LEAD_STANDARD_FIELD_NAMES
    assert fields["PHONE"]["type"] == "crm_multifield"
    assert fields["PHONE"]["isMultiple"] is True
    assert fields["STATUS_ID"]["statusType"] == "STATUS"
    assert any(name.startswith("UF_CRM_") for name in fields)


async def test_get_answers_like_the_deal_get(
    leads: RunningSimulator, http: aiohttp.ClientSession
) -> None:
    portal = leads.leads
    assert portal.kind == "lead"
    assert portal.existing_ids != leads.portal.existing_ids, "leads need their own ID space"
    visible, hidden, deleted = portal.visible_ids[0], portal.hidden_ids[0], portal.deleted_ids[0]
    url = leads.webhook_url + "crm.lead.get"
    status, body = await post_json(http, url, {"ID": visible})
    assert status == 200
    lead = body["result"]
    assert lead == portal.deal_wire(visible)
    assert lead["ID"] == str(visible)
    assert isinstance(lead["OPPORTUNITY"], str)
    for name in MULTIFIELDS:  # absent when empty, else entries of the documented shape
        for entry in lead.get(name, []):
            assert set(entry) == {"ID", "VALUE_TYPE", "VALUE", "TYPE_ID"}
            assert entry["TYPE_ID"] == name
    assert lead["HAS_PHONE"] == ("Y" if lead.get("PHONE") else "N")
    assert (await post_json(http, url, {"ID": hidden}))[1]["error_description"] == "Access denied."
    assert (await post_json(http, url, {"ID": deleted}))[1]["error_description"] == "Not found"


async def test_multifields_vary_across_leads(leads: RunningSimulator) -> None:
    wires = [leads.leads.deal_wire(i) for i in leads.leads.visible_ids]
    with_phone = [w for w in wires if "PHONE" in w]
    assert 0 < len(with_phone) < len(wires)
    assert any(len(w["PHONE"]) > 1 for w in with_phone)
    assert any("EMAIL" in w for w in wires)
    assert any("IM" in w for w in wires)


async def test_batch_and_list_of_leads(
    leads: RunningSimulator, http: aiohttp.ClientSession
) -> None:
    portal = leads.leads
    ids = portal.visible_ids[:3] + portal.hidden_ids[:1]
    cmd = {f"d{i}": f"crm.lead.get?ID={i}" for i in ids}
    status, body = await post_json(http, leads.webhook_url + "batch", {"halt": 0, "cmd": cmd})
    assert status == 200
    result = body["result"]
    assert sorted(result["result"]) == sorted(f"d{i}" for i in ids[:3])
    assert list(result["result_error"]) == [f"d{ids[3]}"]
    status, body = await post_json(
        http,
        leads.webhook_url + "crm.lead.list",
        {"select": ["ID", "PHONE"], "filter": {">ID": 0}, "order": {"ID": "ASC"}, "start": -1},
    )
    assert status == 200
    rows = body["result"]
    assert [int(r["ID"]) for r in rows] == portal.visible_ids[:50]  # hidden leads drop out
    assert all(set(r) == {"ID", "PHONE"} for r in rows)


async def test_each_lead_method_has_its_own_operating_budget(
    simulator: SimulatorFactory, http: aiohttp.ClientSession
) -> None:
    sim = await simulator(deals=20, leads=20, seed=2, operating_budget_s=0.05, processing_ms=30)
    lead, deal = sim.leads.visible_ids[0], sim.portal.visible_ids[0]
    url = sim.webhook_url
    for _ in range(3):  # 90 ms > 50 ms: the third call is past the budget
        await post_json(http, url + "crm.lead.get", {"ID": lead})
    status, body = await post_json(http, url + "crm.lead.get", {"ID": lead})
    assert (status, body["error"]) == (429, "OPERATION_TIME_LIMIT")
    status, body = await post_json(http, url + "crm.deal.get", {"ID": deal})
    assert status == 200, "the deal get method must not share the lead's budget"
    assert body["time"]["operating"] == pytest.approx(0.03)


async def test_touch_and_delete_address_leads(
    leads: RunningSimulator, http: aiohttp.ClientSession
) -> None:
    first, second = leads.leads.visible_ids[:2]
    deal_before = leads.portal.date_modify(first)
    at = 1_800_000_000
    body = {"ids": [first], "at": at, "entity": "lead"}
    async with http.post(leads.base_url + "/_simulator/touch", json=body) as resp:
        assert resp.status == 200
    assert leads.leads.date_modify(first) == at
    assert leads.portal.date_modify(first) == deal_before, "a lead touch moved a deal"
    async with http.post(
        leads.base_url + "/_simulator/delete", json={"ids": [second], "entity": "lead"}
    ) as resp:
        assert resp.status == 200
    assert leads.leads.status(second) == "deleted"
    async with http.get(f"{leads.base_url}/_simulator/lead/{first}") as resp:
        assert resp.status == 200
        assert (await resp.json())["ID"] == str(first)
    async with http.post(
        leads.base_url + "/_simulator/touch", json={"ids": [first], "entity": "contact"}
    ) as resp:
        assert resp.status == 400
