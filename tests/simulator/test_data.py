"""Deal data and the field descriptors in the documented wire format (REST docs
`crm-deal-get.md`, `crm-deal-fields.md`)."""

from __future__ import annotations

import datetime as dt
import itertools
import re
from typing import Any

import aiohttp
import pytest

from pipeline.simulator import RunningSimulator, SimulatorConfig
from pipeline.simulator.fields import ALL_USER_FIELD_KINDS, STANDARD_FIELD_NAMES
from pipeline.simulator.portal import Portal
from pipeline.simulator.server import Simulator
from tests.conftest import SimulatorFactory
from tests.simulator.conftest import get, post_json

UF_TYPES = {
    "string", "integer", "double", "boolean", "enumeration", "datetime", "date", "money", "url",
    "address", "file", "employee", "crm_status", "iblock_section", "iblock_element", "crm",
}  # fmt: skip
ISO = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d\Z")


def _portal(deals: int = 400, seed: int = 7, tz: str = "+03:00") -> Portal:
    return Simulator(SimulatorConfig(deals=deals, seed=seed, server_tz=tz)).portal


def _deals(portal: Portal) -> list[dict[str, Any]]:
    return [d for i in portal.visible_ids if (d := portal.deal_wire(i)) is not None]


async def test_fields_descriptor(sim: RunningSimulator, http: aiohttp.ClientSession) -> None:
    status, body = await get(http, sim.webhook_url + "crm.deal.fields")
    assert status == 200
    fields = body["result"]
    names = list(fields)
    assert names[: len(STANDARD_FIELD_NAMES)] == list(STANDARD_FIELD_NAMES)
    for desc in fields.values():
        assert {"type", "isRequired", "isReadOnly", "isImmutable", "isMultiple", "isDynamic",
                "title"} <= set(desc)  # fmt: skip
    assert fields["STAGE_ID"]["statusType"] == "DEAL_STAGE"
    assert fields["CONTACT_IDS"]["isMultiple"] is True
    assert fields["CONTACT_ID"]["isDeprecated"] is True
    assert fields["CATEGORY_ID"]["isImmutable"] is True
    assert fields["ID"]["isReadOnly"] is True
    parents = [n for n in names if n.startswith("PARENT_ID_")]
    assert parents
    assert fields[parents[0]]["type"] == "crm_entity"
    assert "parentEntityTypeId" in fields[parents[0]]["settings"]
    ufs = {n: d for n, d in fields.items() if n.startswith("UF_CRM_")}
    assert len(ufs) >= 15
    assert all(d["isDynamic"] for d in ufs.values())
    assert {d["type"] for d in ufs.values()} == UF_TYPES
    assert any(d["isMultiple"] for d in ufs.values())
    enum = next(d for d in ufs.values() if d["type"] == "enumeration")
    assert all(set(item) == {"ID", "VALUE"} for item in enum["items"])
    assert all("listLabel" in d and "settings" in d for d in ufs.values())


def test_user_field_selection() -> None:
    portal = Simulator(SimulatorConfig(deals=5, user_fields=("money", "file"))).portal
    assert sorted(d["type"] for n, d in portal.fields().items() if n.startswith("UF_")) == [
        "file",
        "money",
    ]
    with pytest.raises(ValueError, match="unknown user field"):
        Simulator(SimulatorConfig(deals=5, user_fields=("nope",)))


def test_wire_formats() -> None:
    portal = _portal()
    fields = portal.fields()
    deals = _deals(portal)
    assert len(deals) > 300
    ufs = {n: d for n, d in fields.items() if n.startswith("UF_CRM_")}
    seen_null_standard = seen_empty_uf = seen_absent_file = seen_empty_multi_file = False
    for deal in deals:
        assert "CONTACT_IDS" not in deal
        assert isinstance(deal["ID"], str)
        assert deal["ID"].isdigit()
        assert re.fullmatch(r"-?\d+\.\d\d", deal["OPPORTUNITY"])
        for char in ("OPENED", "CLOSED", "IS_NEW", "IS_RECURRING", "IS_MANUAL_OPPORTUNITY"):
            assert deal[char] in ("Y", "N")
        for name in ("DATE_CREATE", "DATE_MODIFY", "MOVED_TIME", "BEGINDATE"):
            assert ISO.match(deal[name]), (name, deal[name])
        assert deal["CLOSEDATE"] == "" or ISO.match(deal["CLOSEDATE"])
        seen_null_standard |= deal["LEAD_ID"] is None
        for name, desc in ufs.items():
            value = deal.get(name, "<absent>")
            if desc["type"] == "file" and not desc["isMultiple"]:
                seen_absent_file |= value == "<absent>"
                assert value == "<absent>" or set(value) == {"id", "showUrl", "downloadUrl"}
                continue
            assert value != "<absent>", name
            if desc["isMultiple"]:
                # Empty multiples are false, "" or [] (a real portal's forms); dates only "",
                # files only [] (the crm module's converters).
                if desc["type"] == "file":
                    assert isinstance(value, list)
                elif desc["type"] in ("date", "datetime"):
                    assert isinstance(value, list) or value == ""
                else:
                    assert isinstance(value, list) or value is False or value == ""
                seen_empty_multi_file |= desc["type"] == "file" and value == []
            else:
                assert value is not None  # empty single UFs are "" in crm.deal.get
                seen_empty_uf |= value == ""
    assert seen_null_standard
    assert seen_empty_uf
    assert seen_absent_file
    assert seen_empty_multi_file


def test_value_variety() -> None:
    """Cyrillic, emoji, BBCode, money, bindings, enumeration IDs all occur."""
    portal = _portal()
    text = " ".join(str(v) for d in _deals(portal) for v in d.values())
    assert re.search("[А-Яа-яЁё]", text)
    assert re.search("[\U0001f300-\U0001faff]", text)
    assert "[B]" in text
    assert re.search(r"\b\d+(\.\d+)?\|(RUB|USD|EUR|KZT|BYN)\b", text)
    for prefix in ("D_", "CO_", "T80_"):
        assert re.search(rf"\b{prefix}\d+", text), prefix
    enum_name = next(n for n, d in portal.fields().items() if d["type"] == "enumeration")
    item_ids = {i["ID"] for i in portal.fields()[enum_name]["items"]}
    values = {d[enum_name] for d in _deals(portal)} - {""}
    assert values <= item_ids


def test_ids_have_gaps_and_categories() -> None:
    portal = _portal(deals=2000)
    existing = portal.existing_ids
    assert len(existing) == 2000
    assert existing == sorted(existing)
    assert any(b - a > 1 for a, b in itertools.pairwise(existing))
    assert portal.deleted_ids
    assert portal.hidden_ids
    assert set(portal.hidden_ids) <= set(existing)
    assert not set(portal.deleted_ids) & set(existing)
    assert set(portal.visible_ids) == set(existing) - set(portal.hidden_ids)


def test_deterministic_by_seed() -> None:
    a, b, c = _portal(seed=11), _portal(seed=11), _portal(seed=12)
    assert a.existing_ids == b.existing_ids
    assert _deals(a) == _deals(b)
    assert _deals(a) != _deals(c)


def test_a_million_deal_portal_serves_its_last_deal() -> None:
    # Deals are built on request, not up front; how fast a large portal starts is measured by
    # the benchmarks (bench/bench_simulator.py), not asserted here on the wall clock.
    portal = _portal(deals=1_000_000)
    assert len(portal.existing_ids) > 900_000
    last = portal.existing_ids[-1]
    assert portal.status(last) in ("visible", "hidden")
    assert portal.deal_data(last) is not None


def _utc_day(text: str) -> dt.date:
    """The calendar date encoded by a date field: nearest UTC midnight (inferred from rest
    module `rest_util.php`, `CRestUtil::ConvertDate`)."""
    instant = dt.datetime.fromisoformat(text).astimezone(dt.UTC)
    return (instant + dt.timedelta(hours=12)).date()


def test_date_fields_use_server_offset_quirk() -> None:
    plus = _portal(tz="+02:00")
    minus = _portal(tz="-05:00")
    deal_id = plus.visible_ids[0]
    p, m = plus.deal_wire(deal_id), minus.deal_wire(deal_id)
    assert p is not None
    assert m is not None
    # Same calendar date: +02:00 shows 02:00 of that day, -05:00 shows 19:00 of the day before.
    assert p["BEGINDATE"].endswith("T02:00:00+02:00")
    assert m["BEGINDATE"].endswith("T19:00:00-05:00")
    assert _utc_day(p["BEGINDATE"]) == _utc_day(m["BEGINDATE"])
    assert m["BEGINDATE"][:10] != p["BEGINDATE"][:10]  # naive [:10] is wrong on -05:00
    assert m["DATE_CREATE"].endswith("-05:00")


def test_dst_zone_mixes_offsets() -> None:
    portal = _portal(tz="Europe/Berlin")
    deals = _deals(portal)
    offsets = {d["DATE_CREATE"][-6:] for d in deals}
    assert offsets == {"+01:00", "+02:00"}
    # Dates are rendered with the *current* offset, so deals on the other side of the DST
    # change land an hour off midnight UTC; rounding to the nearest UTC midnight still
    # recovers the calendar date (here: the UTC date of creation).
    hours = set()
    for deal in deals:
        instant = dt.datetime.fromisoformat(deal["BEGINDATE"]).astimezone(dt.UTC)
        hours.add(instant.hour)
        created = dt.datetime.fromisoformat(deal["DATE_CREATE"]).astimezone(dt.UTC).date()
        assert _utc_day(deal["BEGINDATE"]) == created
    assert len(hours) == 2
    assert hours <= {23, 0, 1}


async def test_touch_advances_date_modify(
    simulator: SimulatorFactory, http: aiohttp.ClientSession
) -> None:
    sim = await simulator(deals=50, seed=3)
    deal_id = sim.portal.visible_ids[0]
    at = dt.datetime(2026, 1, 15, 12, 0, tzinfo=dt.UTC).timestamp()
    sim.touch([deal_id], at=at)
    _, body = await get(http, sim.webhook_url + "crm.deal.get", id=deal_id)
    assert body["result"]["DATE_MODIFY"] == "2026-01-15T15:00:00+03:00"
    sim.portal.delete([deal_id])
    status, _ = await get(http, sim.webhook_url + "crm.deal.get", id=deal_id)
    assert status == 400
    assert deal_id in sim.portal.deleted_ids


# -- empty multiple user fields ------------------------------------------------------------------

FORMS = {"false": False, "empty_string": "", "empty_list": []}


def _form(value: Any) -> str | None:
    """The name of an empty form, or None for a value."""
    if value is False:
        return "false"
    if value == "":
        return "empty_string"
    if value == []:
        return "empty_list"
    return None


def _empty_forms(portal: Portal) -> dict[str, dict[str, set[int]]]:
    """UF type -> empty form -> IDs of deals sending it, over every multiple UF."""
    multiple = {n: d["type"] for n, d in portal.fields().items() if d["isMultiple"]}
    multiple.pop("CONTACT_IDS")
    seen: dict[str, dict[str, set[int]]] = {t: {} for t in multiple.values()}
    for deal in _deals(portal):
        for name, bitrix_type in multiple.items():
            form = _form(deal[name])
            if form is not None:
                seen[bitrix_type].setdefault(form, set()).add(int(deal["ID"]))
    return seen


def _every_kind(empty_multiple: str = "mix", seed: int = 7) -> Portal:
    config = SimulatorConfig(
        deals=400, seed=seed, user_fields=ALL_USER_FIELD_KINDS, empty_multiple=empty_multiple
    )
    return Simulator(config).portal


def test_mix_sends_all_three_forms_and_the_type_specific_ones() -> None:
    seen = _empty_forms(_every_kind())
    assert set(seen) >= {"string", "integer", "double", "money", "enumeration", "employee",
                         "date", "datetime", "file", "crm", "url", "address", "crm_status",
                         "iblock_section", "iblock_element", "hlblock"}  # fmt: skip
    for bitrix_type, forms in seen.items():
        if bitrix_type in ("date", "datetime"):
            assert set(forms) == {"empty_string"}, bitrix_type  # CRestUtil::ConvertDate(false)
        elif bitrix_type == "file":
            assert set(forms) == {"empty_list"}, bitrix_type  # tryExternalizeFileField
        else:
            assert set(forms) == set(FORMS), (bitrix_type, set(forms))
    # Mostly false, as a NULL column is the common way for a field to be empty.
    counts = {form: 0 for form in FORMS}
    for bitrix_type, forms in seen.items():
        if bitrix_type not in ("date", "datetime", "file"):
            for form, ids in forms.items():
                counts[form] += len(ids)
    assert counts["false"] > counts["empty_string"] + counts["empty_list"]


def test_empty_forms_are_deterministic_per_deal_and_field() -> None:
    a, b = _every_kind(), _every_kind()
    assert _deals(a) == _deals(b)
    assert _deals(a) != _deals(_every_kind(seed=8))
    # Drawn per deal and per field, not per deal template: one field shows several forms,
    # and one deal shows different forms in different fields.
    multiple = [n for n, d in a.fields().items() if d["isMultiple"] and d["type"] == "integer"]
    deals = _deals(a)
    assert len({_form(d[multiple[0]]) for d in deals} - {None}) == 3
    text_like = [
        n for n, d in a.fields().items()
        if d["isMultiple"] and n != "CONTACT_IDS" and d["type"] not in ("date", "datetime", "file")
    ]  # fmt: skip
    assert any(len({_form(d[n]) for n in text_like} - {None}) > 1 for d in deals)


@pytest.mark.parametrize("form", sorted(FORMS))
def test_one_form_for_every_multiple_type(form: str) -> None:
    seen = _empty_forms(_every_kind(form))
    assert len(seen) >= 16
    for bitrix_type, forms in seen.items():
        assert set(forms) == {form}, (bitrix_type, set(forms))


def test_empty_multiple_option_is_validated() -> None:
    with pytest.raises(ValueError, match="empty_multiple"):
        SimulatorConfig(empty_multiple="null")  # type: ignore[arg-type]


# -- file URLs carry the caller's token ---------------------------------------------------------


def _file_values(deal: dict[str, Any], fields: dict[str, Any]) -> list[dict[str, Any]]:
    files: list[dict[str, Any]] = []
    for name, desc in fields.items():
        if desc["type"] == "file" and name in deal:
            value = deal[name]
            files.extend(value if isinstance(value, list) else [value])
    return files


async def test_file_urls_carry_the_callers_token(
    simulator: SimulatorFactory, http: aiohttp.ClientSession
) -> None:
    """As crm `restservice.php` `externalizeFile`: showUrl has no auth; downloadUrl starts its
    query with `auth=` + the request's own auth (empty for a webhook)."""
    sim = await simulator(deals=120, seed=5)
    fields = sim.portal.fields()
    with_files = [
        i for i in sim.portal.visible_ids if _file_values(sim.portal.deal_wire(i), fields)
    ]
    assert len(with_files) >= 3
    ids = with_files[:3]
    token = sim.access_token
    cmd = {f"d{i}": f"crm.deal.get?id={i}" for i in ids}

    _, hook = await post_json(http, sim.webhook_url + "batch", {"halt": 0, "cmd": cmd})
    _, app = await post_json(
        http, sim.oauth_endpoint + "batch", {"halt": 0, "cmd": cmd, "auth": token}
    )
    _, single = await get(http, sim.oauth_endpoint + "crm.deal.get", id=ids[0], auth=token)
    for deal_id in ids:
        truth = sim.portal.deal_wire(deal_id)
        assert hook["result"]["result"][f"d{deal_id}"] == truth  # webhook: as stored
        oauth_deal = app["result"]["result"][f"d{deal_id}"]
        for plain, oauth in zip(_file_values(truth, fields), _file_values(oauth_deal, fields),
                                strict=True):  # fmt: skip
            assert "auth" not in plain["showUrl"]
            assert "/show_file.php?auth=&ownerId=" in plain["downloadUrl"]
            assert oauth["showUrl"] == plain["showUrl"]
            assert oauth["downloadUrl"] == plain["downloadUrl"].replace(
                "?auth=&", f"?auth={token}&"
            )
    assert _file_values(single["result"], fields) == _file_values(
        app["result"]["result"][f"d{ids[0]}"], fields
    )


def test_comment_bytes_makes_wide_deals_and_changes_nothing_else() -> None:
    plain = Simulator(SimulatorConfig(deals=300, seed=4)).portal
    wide = Simulator(SimulatorConfig(deals=300, seed=4, comment_bytes=20_000)).portal
    assert plain.visible_ids == wide.visible_ids
    commented = 0
    for deal_id in plain.visible_ids:
        short, long = plain.deal_wire(deal_id), wide.deal_wire(deal_id)
        assert short is not None
        assert long is not None
        assert {k: v for k, v in short.items() if k != "COMMENTS"} == {
            k: v for k, v in long.items() if k != "COMMENTS"
        }
        if short["COMMENTS"] is None:
            assert long["COMMENTS"] is None
            continue
        commented += 1
        assert long["COMMENTS"].startswith(short["COMMENTS"])
        assert 20_000 <= len(long["COMMENTS"].encode()) < 20_200
    assert commented > 100


def test_comment_bytes_must_not_be_negative() -> None:
    with pytest.raises(ValueError, match="comment_bytes"):
        SimulatorConfig(comment_bytes=-1)


@pytest.mark.parametrize("zone", ["Mars/Olympus", "../etc", "+3:00", ""])
def test_server_tz_must_be_an_offset_or_a_known_zone(zone: str) -> None:
    with pytest.raises(ValueError, match="neither an offset like"):
        SimulatorConfig(server_tz=zone)


@pytest.mark.parametrize("batch_billing", ["per-call", ""])
def test_batch_billing_option_is_validated(batch_billing: str) -> None:
    with pytest.raises(ValueError, match="batch_billing"):
        SimulatorConfig(batch_billing=batch_billing)  # type: ignore[arg-type]
