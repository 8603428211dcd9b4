"""`crm.deal.list` as the list strategy uses it (issue 13), over real HTTP: select semantics,
the list forms of the same deal against `crm.deal.get`, silent absence, `@ID` + `order` +
`start=-1`, poison in a page, and the operating cost in a batch of 50 list calls.

Sources: REST docs `crm-deal-list.md` (select masks), `crm-lead-list.md` (example answer: null
user fields, JSON booleans, `"BIRTHDATE": ""`), `settings/performance/huge-data.md` (`start=-1`
answers `"total": 0`), `limits.md` (each method its own operating budget); main
`CDBResult::Fetch` (multiple columns unserialised only when set), rest `rest_util.php`
(`ConvertDate` gives `''` for empty input), crm `restservice.php` (`externalizeFields`,
`tryExternalizeFileField`).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import aiohttp
import pytest

from pipeline.simulator import RunningSimulator
from pipeline.simulator.fields import ALL_USER_FIELD_KINDS
from tests.conftest import SimulatorFactory
from tests.simulator.conftest import post_form, post_json

WRONG = {"error": "WRONG_ENCODING", "error_description": "Wrong request encoding"}
LIMIT = "OPERATION_TIME_LIMIT"


def _list_query(ids: list[int], select: list[str], indexed: bool = False) -> str:
    """A list command's query in PHP bracket syntax, each part URL-encoded as
    `http_build_query` does (`filter[@ID][0]=..` when `indexed`, else `filter[@ID][]=..`)."""
    keys = [f"filter[@ID][{n}]" if indexed else "filter[@ID][]" for n in range(len(ids))]
    parts = [f"{quote(key)}={i}" for key, i in zip(keys, ids, strict=True)]
    parts += [f"{quote('select[]')}={quote(s)}" for s in select]
    parts += [f"{quote('order[ID]')}=ASC", "start=-1"]
    return "&".join(parts)


async def _get_all(http: aiohttp.ClientSession, sim: RunningSimulator, ids: list[int],
                   url: str, extra: dict[str, Any] | None = None) -> dict[int, Any]:  # fmt: skip
    """`crm.deal.get` of each ID, 50 per batch: {ID: result}."""
    out: dict[int, Any] = {}
    for k in range(0, len(ids), 50):
        chunk = ids[k : k + 50]
        body = {"halt": 0, "cmd": {f"d{i}": f"crm.deal.get?id={i}" for i in chunk}, **(extra or {})}
        status, answer = await post_json(http, url + "batch", body)
        assert status == 200
        out.update({int(key[1:]): v for key, v in answer["result"]["result"].items()})
    return out


async def _list_all(http: aiohttp.ClientSession, url: str, ids: list[int], select: list[str],
                    extra: dict[str, Any] | None = None) -> dict[int, Any]:  # fmt: skip
    out: dict[int, Any] = {}
    for k in range(0, len(ids), 50):
        body = {"filter": {"@ID": ids[k : k + 50]}, "select": select, "start": -1, **(extra or {})}
        status, answer = await post_json(http, url + "crm.deal.list", body)
        assert status == 200
        out.update({int(row["ID"]): row for row in answer["result"]})
    return out


# -- select ----------------------------------------------------------------------------------


async def test_select_masks_leave_out_multiple_fields_named_ones_come(
    simulator: SimulatorFactory, http: aiohttp.ClientSession
) -> None:
    sim = await simulator(deals=60, seed=3, user_fields=ALL_USER_FIELD_KINDS)
    fields = sim.portal.fields()
    multiple = {n for n, d in fields.items() if d["isMultiple"]}
    ufs = {n for n in fields if n.startswith("UF_")}
    standard = set(fields) - ufs
    multi_ufs = sorted(ufs & multiple)
    assert len(multi_ufs) >= 10
    assert "CONTACT_IDS" in multiple
    flt = {"@ID": sim.portal.visible_ids[:3]}
    url = sim.webhook_url + "crm.deal.list"

    async def keys(body: dict[str, Any]) -> set[str]:
        status, answer = await post_json(http, url, body)
        assert status == 200
        assert len(answer["result"]) == 3
        shapes = {frozenset(row) for row in answer["result"]}
        assert len(shapes) == 1  # every row carries the same keys, empty ones included
        return set(shapes.pop())

    assert await keys({"filter": flt, "select": ["*"]}) == standard - multiple
    both = await keys({"filter": flt, "select": ["*", "UF_*"]})
    assert both == (standard | ufs) - multiple
    # No select is `*` + `UF_*`; upper-case parameter names are read too (crm-deal-list.md
    # example; CCrmRestHelper::resolveArrayParam).
    assert await keys({"filter": flt}) == both
    assert await keys({"FILTER": flt, "SELECT": ["*", "UF_*"]}) == both
    named = ["*", "UF_*", *multi_ufs, "CONTACT_IDS", "UF_CRM_NO_SUCH_FIELD", "NOPE"]
    assert await keys({"filter": flt, "select": named}) == (standard | ufs) - {"CONTACT_IDS"}
    assert await keys({"filter": flt, "select": ["TITLE", multi_ufs[0]]}) == {
        "ID",
        "TITLE",
        multi_ufs[0],
    }
    status, answer = await post_json(http, url, {"filter": "not an array"})
    assert (status, answer) == (
        400,
        {"error": "", "error_description": "Parameter 'filter' must be array."},
    )


# -- the same deals through get and list -------------------------------------------------------


def _expected_list_value(get_value: Any, present: bool, uf_type: str, multiple: bool,
                         mode: str) -> Any:  # fmt: skip
    """What the sources say list shows for a user field whose get value is `get_value`."""
    if not present:
        return None  # an empty single file UF: absent in get, key present with null in list
    if uf_type in ("date", "datetime"):
        return "" if get_value is False else get_value  # ConvertDate(NULL) is ''
    if multiple:
        if get_value is False or get_value == "":
            return None  # a NULL column (or no UF row) stays NULL in CDBResult::Fetch
        if get_value == []:
            # A stored empty array unserialises to []; a NULL file column is what makes get's
            # [] in the default mix, and list leaves it NULL.
            return [] if (uf_type != "file" or mode == "empty_list") else None
        return get_value
    if get_value == "":
        return None
    if uf_type == "boolean":
        return {"1": True, "0": False}[get_value]
    return get_value


@pytest.mark.parametrize("mode", ["mix", "empty_list", "false"])
async def test_list_forms_against_get_for_every_user_field_type(
    simulator: SimulatorFactory, http: aiohttp.ClientSession, mode: str
) -> None:
    sim = await simulator(deals=140, seed=11, user_fields=ALL_USER_FIELD_KINDS, empty_multiple=mode)
    fields = sim.portal.fields()
    ufs = {n: d for n, d in fields.items() if n.startswith("UF_")}
    ids = sim.portal.visible_ids[:120]
    select = ["*", "UF_*", *sorted(n for n, d in ufs.items() if d["isMultiple"])]
    got = await _get_all(http, sim, ids, sim.webhook_url)
    listed = await _list_all(http, sim.webhook_url, ids, select)
    assert sorted(got) == sorted(listed) == ids
    seen: set[tuple[str, str]] = set()
    for deal_id in ids:
        get_row, list_row = got[deal_id], listed[deal_id]
        for name, value in get_row.items():
            if name not in ufs:
                assert list_row[name] == value, (deal_id, name)  # standard fields: same form
        for name, desc in ufs.items():
            present = name in get_row
            value = get_row.get(name)
            expected = _expected_list_value(value, present, desc["type"], desc["isMultiple"], mode)
            assert name in list_row, (deal_id, name)
            assert list_row[name] == expected, (deal_id, name, value, list_row[name])
            form = "absent" if not present else repr(value) if not value else "value"
            if desc["type"] == "boolean":
                form = repr(value)
            seen.add((desc["type"] + ("[]" if desc["isMultiple"] else ""), form))
    # The portal really showed the cases the forms differ in.
    assert {("boolean", "'1'"), ("boolean", "'0'"), ("boolean", "''")} <= seen
    assert {("file", "absent"), ("string", "''"), ("money", "''"), ("date", "''")} <= seen
    assert ("datetime", "''") in seen
    empty_multi = {"mix": "False", "empty_list": "[]", "false": "False"}[mode]
    assert ("string[]", empty_multi) in seen
    assert ("file[]", "[]" if mode != "false" else "False") in seen
    assert ("date[]", "''" if mode == "mix" else empty_multi) in seen
    assert ("file", "value") in seen
    assert ("file[]", "value") in seen
    assert ("date[]", "value") in seen
    assert ("datetime", "value") in seen


async def test_file_urls_carry_the_callers_token_in_list_as_in_get(
    simulator: SimulatorFactory, http: aiohttp.ClientSession
) -> None:
    sim = await simulator(deals=40, seed=5)
    files = [n for n, d in sim.portal.fields().items() if d["type"] == "file"]
    ids = sim.portal.visible_ids[:30]
    auth = {"auth": sim.access_token}
    got = await _get_all(http, sim, ids, sim.oauth_endpoint, auth)
    listed = await _list_all(http, sim.oauth_endpoint, ids, ["ID", *files], auth)
    compared = 0
    for deal_id in ids:
        for name in files:
            if got[deal_id].get(name):
                assert listed[deal_id][name] == got[deal_id][name]
                assert sim.access_token in str(listed[deal_id][name])
                compared += 1
    assert compared


# -- absence, @ID, order, start=-1 ------------------------------------------------------------


async def test_deleted_hidden_and_missing_deals_are_silently_absent(
    simulator: SimulatorFactory, http: aiohttp.ClientSession
) -> None:
    sim = await simulator(deals=200, seed=8, hidden_fraction=0.1)
    visible = sim.portal.visible_ids[:10]
    hidden = sim.portal.hidden_ids[:3]
    deleted = sim.portal.deleted_ids[:3]
    never = [sim.portal.max_id + 5, sim.portal.max_id + 900]
    sim.portal.delete(visible[:2])  # deleted while the portal runs
    wanted = visible + hidden + deleted + never
    for start in (-1, 0):
        status, body = await post_json(
            http,
            sim.webhook_url + "crm.deal.list",
            {"filter": {"@ID": wanted}, "select": ["*", "UF_*"], "start": start},
        )
        assert status == 200
        assert "result_error" not in body
        assert "error" not in body
        assert [int(r["ID"]) for r in body["result"]] == visible[2:]
        assert body["total"] == (0 if start < 0 else len(visible) - 2)


async def test_at_id_beyond_50_with_order_and_start_minus_one(
    simulator: SimulatorFactory, http: aiohttp.ClientSession
) -> None:
    sim = await simulator(deals=400, seed=9)
    visible = sim.portal.visible_ids
    wanted = visible[:130] + sim.portal.deleted_ids[:5]
    url = sim.webhook_url + "crm.deal.list"

    async def page(order: str, start: int) -> dict[str, Any]:
        form = (
            "&".join(f"filter[@ID][]={i}" for i in wanted)
            + f"&select[]=ID&select[]=TITLE&order[ID]={order}&start={start}"
        )
        status, body = await post_form(http, url, form)
        assert status == 200
        assert isinstance(body, dict)
        return body

    first = await page("DESC", -1)
    assert [int(r["ID"]) for r in first["result"]] == sorted(visible[:130], reverse=True)[:50]
    assert first["total"] == 0
    assert "next" not in first
    asc = await page("ASC", -1)
    assert [int(r["ID"]) for r in asc["result"]] == visible[:50]
    assert set(asc["result"][0]) == {"ID", "TITLE"}
    seen: list[int] = []
    start = 0
    for _ in range(5):  # bounded: three pages expected
        body = await page("ASC", start)
        assert body["total"] == 130
        seen += [int(r["ID"]) for r in body["result"]]
        if "next" not in body:
            break
        start = body["next"]
    assert seen == visible[:130]


# -- poison ----------------------------------------------------------------------------------


async def test_poison_deal_spoils_the_list_page_that_holds_its_data(
    simulator: SimulatorFactory, http: aiohttp.ClientSession
) -> None:
    probe = await simulator(deals=200, seed=6, hidden_fraction=0.0)
    ids = probe.portal.visible_ids[:120]
    bad = ids[10]
    sim = await simulator(deals=200, seed=6, hidden_fraction=0.0, poison_ids=frozenset({bad}))
    url = sim.webhook_url + "crm.deal.list"
    full = {"filter": {"@ID": ids[:50]}, "select": ["*", "UF_*"], "start": -1}
    assert await post_json(http, url, full) == (200, WRONG)
    # Inside a batch the whole batch answer fails, as with a poison get.
    cmd = {"a": "crm.deal.list?" + _list_query(ids[:50], ["*"]),
           "b": "crm.deal.list?" + _list_query(ids[50:100], ["*"])}  # fmt: skip
    assert await post_json(http, sim.webhook_url + "batch", {"halt": 0, "cmd": cmd}) == (
        200,
        WRONG,
    )
    # Pages without the deal, an ID-only page with it, and a page it falls beyond are fine.
    cmd.pop("a")
    status, body = await post_json(http, sim.webhook_url + "batch", {"halt": 0, "cmd": cmd})
    assert status == 200
    assert len(body["result"]["result"]["b"]) == 50
    ids_only = {"filter": {"@ID": ids[:50]}, "select": ["ID"], "start": -1}
    status, body = await post_json(http, url, ids_only)
    assert status == 200
    assert bad in [int(r["ID"]) for r in body["result"]]
    beyond = {"filter": {"@ID": [*ids[60:120], bad]}, "order": {"ID": "DESC"}, "start": -1}
    status, body = await post_json(http, url, beyond)
    assert status == 200
    assert bad not in [int(r["ID"]) for r in body["result"]]


# -- cost ------------------------------------------------------------------------------------


async def test_batch_of_50_list_calls_is_charged_to_the_list_budget(
    simulator: SimulatorFactory, http: aiohttp.ClientSession
) -> None:
    sim = await simulator(deals=2700, seed=12, hidden_fraction=0.0, deleted_fraction=0.0,
                          operating_budget_s=480.0)  # fmt: skip
    ids = sim.portal.visible_ids[:2500]
    pages = [ids[k * 50 : k * 50 + 50] for k in range(50)]
    # Half the commands index the array (`[0]`), half append (`[]`): clients send both.
    cmd = {
        f"l{k}": "crm.deal.list?" + _list_query(page, ["*", "UF_*"], k % 2 == 1)
        for k, page in enumerate(pages)
    }
    status, body = await post_json(http, sim.webhook_url + "batch", {"halt": 0, "cmd": cmd})
    assert status == 200
    res = body["result"]
    assert res["result_error"] == []
    assert [int(r["ID"]) for k in range(50) for r in res["result"][f"l{k}"]] == ids
    assert res["result_total"] == {f"l{k}": 0 for k in range(50)}
    assert res["result_next"] == []
    # 20 ms per call + 2 ms per row: 0.12 s for each page of 50 full rows.
    operating = [res["result_time"][f"l{k}"]["operating"] for k in range(50)]
    assert operating == pytest.approx([0.12 * (k + 1) for k in range(50)])
    assert res["result_time"]["l0"]["processing"] == pytest.approx(0.12)
    assert body["time"]["processing"] == pytest.approx(6.0)
    # crm.deal.get has a budget of its own, untouched by the list calls.
    status, got = await post_json(http, sim.webhook_url + "crm.deal.get", {"id": ids[0]})
    assert status == 200
    assert got["time"]["operating"] == pytest.approx(0.02)
    # An ID-only discovery page costs the base alone, as before.
    status, page = await post_json(
        http, sim.webhook_url + "crm.deal.list", {"select": ["ID"], "start": -1}
    )
    assert status == 200
    assert page["time"]["operating"] == pytest.approx(6.02)
    stats = sim.stats()
    assert (stats["deal_lists"], stats["deals_served"]) == (51, 2551)


async def test_over_budget_list_calls_are_blocked_while_get_goes_on(
    simulator: SimulatorFactory, http: aiohttp.ClientSession
) -> None:
    sim = await simulator(deals=300, seed=13, hidden_fraction=0.0, operating_budget_s=1.0,
                          list_processing_ms=50.0, list_row_processing_ms=5.0)  # fmt: skip
    ids = sim.portal.visible_ids[:250]
    cmd = {f"l{k}": "crm.deal.list?" + _list_query(ids[k * 50 : k * 50 + 50], ["*"])
           for k in range(5)}  # fmt: skip
    status, body = await post_json(http, sim.webhook_url + "batch", {"halt": 0, "cmd": cmd})
    assert status == 200
    res = body["result"]
    # 0.3 s per page: the fourth call crosses 1 s and still runs, the fifth is refused.
    assert sorted(res["result"]) == ["l0", "l1", "l2", "l3"]
    assert res["result_error"]["l4"]["error"] == LIMIT
    assert res["result_time"]["l3"]["operating"] == pytest.approx(1.2)
    status, got = await post_json(http, sim.webhook_url + "crm.deal.get", {"id": ids[0]})
    assert status == 200
    assert got["time"]["operating"] == pytest.approx(0.02)
