"""`crm.deal.list`: filters, select, order and paging (REST docs `crm-deal-list.md`,
`settings/performance/huge-data.md`)."""

from __future__ import annotations

import datetime as dt

import aiohttp

from pipeline.simulator import RunningSimulator
from tests.conftest import SimulatorFactory
from tests.simulator.conftest import post_form, post_json


async def test_paging_with_next_and_total(
    sim: RunningSimulator, http: aiohttp.ClientSession
) -> None:
    visible = sim.portal.visible_ids
    seen: list[int] = []
    start = 0
    for _ in range(20):  # bounded
        status, body = await post_json(
            http, sim.webhook_url + "crm.deal.list", {"select": ["ID"], "start": start}
        )
        assert status == 200
        assert body["total"] == len(visible)
        assert len(body["result"]) <= 50
        seen += [int(row["ID"]) for row in body["result"]]
        if "next" not in body:
            break
        start = body["next"]
    assert seen == visible  # default order: ID ascending; hidden deals are not listed


async def test_start_minus_one_skips_count(
    sim: RunningSimulator, http: aiohttp.ClientSession
) -> None:
    after = sim.portal.visible_ids[10]
    status, body = await post_json(
        http,
        sim.webhook_url + "crm.deal.list",
        {"filter": {">ID": after}, "order": {"ID": "ASC"}, "select": ["ID"], "start": -1},
    )
    assert status == 200
    # No count query: `"total": 0` and no `next` (the docs' example answer without the count).
    assert body["total"] == 0
    assert "next" not in body
    assert [int(r["ID"]) for r in body["result"]] == [
        i for i in sim.portal.visible_ids if i > after
    ][:50]


async def test_at_id_filter_and_form_encoding(
    sim: RunningSimulator, http: aiohttp.ClientSession
) -> None:
    wanted = [*sim.portal.visible_ids[3:6], sim.portal.hidden_ids[0], sim.portal.deleted_ids[0]]
    form = "&".join(f"filter[@ID][]={i}" for i in wanted) + "&select[]=ID&order[ID]=DESC"
    status, body = await post_form(http, sim.webhook_url + "crm.deal.list", form)
    assert status == 200
    assert [int(r["ID"]) for r in body["result"]] == sorted(wanted[:3], reverse=True)


async def test_select_star_and_uf_star(sim: RunningSimulator, http: aiohttp.ClientSession) -> None:
    fields = sim.portal.fields()
    multiple = {n for n, d in fields.items() if d["isMultiple"]}
    ufs = {n for n in fields if n.startswith("UF_")}
    deal_id = sim.portal.visible_ids[0]
    flt = {"@ID": [deal_id]}
    _, body = await post_json(
        http, sim.webhook_url + "crm.deal.list", {"filter": flt, "select": ["*"]}
    )
    row = body["result"][0]
    assert not set(row) & ufs
    assert not set(row) & multiple
    assert row["TITLE"] == sim.portal.deal_wire(deal_id)["TITLE"]  # type: ignore[index]
    _, body = await post_json(
        http, sim.webhook_url + "crm.deal.list", {"filter": flt, "select": ["*", "UF_*"]}
    )
    row = body["result"][0]
    assert set(row) & ufs == ufs - multiple  # `UF_*` leaves out multiple user fields
    named = sorted(ufs & multiple)[0]
    _, body = await post_json(
        http, sim.webhook_url + "crm.deal.list", {"filter": flt, "select": ["ID", named]}
    )
    assert set(body["result"][0]) == {"ID", named}


async def test_empty_user_fields_are_null_in_list(
    sim: RunningSimulator, http: aiohttp.ClientSession
) -> None:
    ids = sim.portal.visible_ids[:50]
    _, body = await post_json(
        http, sim.webhook_url + "crm.deal.list", {"filter": {"@ID": ids}, "select": ["UF_*"]}
    )
    types = {n: d["type"] for n, d in sim.portal.fields().items()}
    saw_null = False
    for row in body["result"]:
        wire = sim.portal.deal_wire(int(row["ID"]))
        assert wire is not None
        for name, value in row.items():
            if name.startswith("UF_") and wire.get(name, "") == "":
                # CRestUtil::ConvertDate/ConvertDateTime make any empty date "" in list too.
                assert value == ("" if types[name] in ("date", "datetime") else None)
                saw_null = saw_null or value is None
    assert saw_null


async def test_date_modify_filters_after_touch(
    sim: RunningSimulator, http: aiohttp.ClientSession
) -> None:
    touched = sim.portal.visible_ids[7:10]
    at = dt.datetime(2026, 3, 1, 10, 0, tzinfo=dt.UTC).timestamp()
    sim.touch(touched, at=at)
    for op, bound in ((">", "2026-03-01T12:59:59+03:00"), (">=", "2026-03-01T13:00:00+03:00")):
        _, body = await post_json(
            http,
            sim.webhook_url + "crm.deal.list",
            {"filter": {f"{op}DATE_MODIFY": bound}, "order": {"DATE_MODIFY": "ASC", "ID": "ASC"}},
        )
        assert [int(r["ID"]) for r in body["result"]] == touched
    _, body = await post_json(
        http,
        sim.webhook_url + "crm.deal.list",
        {"filter": {">DATE_MODIFY": "2026-03-01T13:00:00+03:00"}},
    )
    assert body["result"] == []
    assert body["total"] == 0


async def test_keyset_paging_on_a_big_portal_is_cheap(
    simulator: SimulatorFactory, http: aiohttp.ClientSession
) -> None:
    """`>ID` + `start=-1` stops at the first page, so a 200k-deal portal answers at once."""
    sim = await simulator(deals=200_000, seed=4)
    last = 0
    pages = 0
    for _ in range(5):  # bounded: five pages
        status, body = await post_json(
            http,
            sim.webhook_url + "crm.deal.list",
            {"filter": {">ID": last}, "order": {"ID": "ASC"}, "select": ["ID"], "start": -1},
        )
        assert status == 200
        ids = [int(r["ID"]) for r in body["result"]]
        assert ids == [i for i in sim.portal.visible_ids if i > last][:50]
        last = ids[-1]
        pages += 1
    assert pages == 5
