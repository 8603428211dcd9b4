"""The schema derived from crm.deal.fields: names, order, metadata, snapshot, fingerprint."""

from __future__ import annotations

import copy
from typing import Any

import orjson
import pyarrow as pa
import pytest

from pipeline.errors import FatalPortalError
from pipeline.normalise import EXTRA_COLUMN, DealSchema
from pipeline.normalise.convert import DECIMAL_TYPE, FILE_TYPE, MONEY_TYPE, TIMESTAMP_TYPE
from pipeline.normalise.mapping import BITRIX24_TYPES
from pipeline.normalise.schema import STANDARD_ORDER


def f(bitrix_type: str, title: str = "", multiple: bool = False, **extra: Any) -> dict[str, Any]:
    return {"type": bitrix_type, "isMultiple": multiple, "title": title, **extra}


# Deliberately shuffled, as a portal may answer in any order.
FIELDS: dict[str, Any] = {
    "UF_CRM_20": f("string", "UF_CRM_20", listLabel="Комментарий"),
    "PARENT_ID_1220": f("crm_entity", "Договор"),
    "OPPORTUNITY": f("double", "Сумма"),
    "UF_CRM_10": f(
        "enumeration",
        "UF_CRM_10",
        items=[{"ID": "79", "VALUE": "Элемент #1"}, {"ID": "80", "VALUE": "Другое 🚀"}],
    ),
    "ID": f("integer", "ID"),
    "PARENT_ID_153": f("crm_entity", "Проект"),
    "CONTACT_IDS": f("crm_contact", "Контакты", multiple=True),
    "STAGE_ID": f("crm_status", "Стадия сделки", statusType="DEAL_STAGE"),
    "SOME_NEW_FIELD": f("string", "Новое"),
    "BEGINDATE": f("date", "Дата начала"),
    "DATE_CREATE": f("datetime", "Дата создания"),
    "UF_CRM_30": f("money", "Бюджет"),
    "UF_CRM_31": f("file", "Фото", multiple=True),
    "TITLE": f("string", "Название"),
}


def test_column_order_is_stable_and_documented() -> None:
    schema = DealSchema.from_fields(FIELDS)
    assert schema.arrow_schema.names == [
        "ID",
        "TITLE",
        "STAGE_ID",
        "OPPORTUNITY",
        "BEGINDATE",
        "DATE_CREATE",
        "SOME_NEW_FIELD",
        "PARENT_ID_153",
        "PARENT_ID_1220",
        "UF_CRM_10",
        "UF_CRM_20",
        "UF_CRM_30",
        "UF_CRM_31",
        EXTRA_COLUMN,
    ]
    reversed_fields = dict(reversed(list(FIELDS.items())))
    assert DealSchema.from_fields(reversed_fields).arrow_schema == schema.arrow_schema


def test_contact_ids_is_omitted_and_recorded() -> None:
    schema = DealSchema.from_fields(FIELDS)
    assert "CONTACT_IDS" not in schema.arrow_schema.names
    assert "CONTACT_IDS" in schema.snapshot()["omitted"]


def test_types_and_metadata() -> None:
    schema = DealSchema.from_fields(FIELDS).arrow_schema
    assert schema.field("ID").type == pa.int64()
    assert schema.field("OPPORTUNITY").type == DECIMAL_TYPE
    assert schema.field("BEGINDATE").type == pa.date32()
    assert schema.field("DATE_CREATE").type == TIMESTAMP_TYPE
    assert schema.field("UF_CRM_10").type == pa.int64()
    assert schema.field("UF_CRM_30").type == MONEY_TYPE
    assert schema.field("UF_CRM_31").type == pa.list_(pa.field("element", FILE_TYPE))
    assert schema.field(EXTRA_COLUMN).type == pa.string()
    meta = schema.field("STAGE_ID").metadata
    assert meta[b"bitrix24.type"] == b"crm_status"
    assert meta[b"bitrix24.title"].decode() == "Стадия сделки"
    assert meta[b"bitrix24.multiple"] == b"false"
    # A user field whose title is its own code takes the human label.
    assert schema.field("UF_CRM_20").metadata[b"bitrix24.title"].decode() == "Комментарий"
    assert schema.field("UF_CRM_31").metadata[b"bitrix24.multiple"] == b"true"


def test_every_mapped_type_has_an_arrow_type() -> None:
    fields = {"ID": f("integer")}
    for n, bitrix_type in enumerate(sorted(BITRIX24_TYPES)):
        fields[f"UF_CRM_{n:03d}"] = f(bitrix_type)
        fields[f"UF_CRM_{n:03d}M"] = f(bitrix_type, multiple=True)
    schema = DealSchema.from_fields(fields).arrow_schema
    for n, bitrix_type in enumerate(sorted(BITRIX24_TYPES)):
        single = schema.field(f"UF_CRM_{n:03d}").type
        multiple = schema.field(f"UF_CRM_{n:03d}M").type
        assert multiple == pa.list_(pa.field("element", single)), bitrix_type


def test_snapshot_is_json_and_holds_raw_fields_columns_and_enum_labels() -> None:
    schema = DealSchema.from_fields(FIELDS)
    snapshot = orjson.loads(orjson.dumps(schema.snapshot()))
    assert snapshot["fields"] == FIELDS
    assert snapshot["fingerprint"] == schema.fingerprint
    assert snapshot["enumerations"] == {"UF_CRM_10": {"79": "Элемент #1", "80": "Другое 🚀"}}
    by_name = {c["name"]: c for c in snapshot["columns"]}
    assert by_name["OPPORTUNITY"]["arrow_type"] == str(DECIMAL_TYPE)
    assert by_name["UF_CRM_31"]["is_multiple"] is True
    rebuilt = DealSchema.from_snapshot(snapshot)
    assert rebuilt.fingerprint == schema.fingerprint
    assert rebuilt.arrow_schema == schema.arrow_schema


def test_fingerprint_is_stable_and_tracks_types_not_titles() -> None:
    base = DealSchema.from_fields(FIELDS).fingerprint
    assert DealSchema.from_fields(copy.deepcopy(FIELDS)).fingerprint == base
    retitled = copy.deepcopy(FIELDS)
    retitled["TITLE"]["title"] = "Title"
    assert DealSchema.from_fields(retitled).fingerprint == base
    retyped = copy.deepcopy(FIELDS)
    retyped["UF_CRM_20"]["type"] = "integer"
    assert DealSchema.from_fields(retyped).fingerprint != base
    added = {**FIELDS, "UF_CRM_99": f("string")}
    assert DealSchema.from_fields(added).fingerprint != base


@pytest.mark.parametrize("bad", [None, [], {}, "fields", 42])
def test_not_a_field_map_is_a_clear_error(bad: Any) -> None:
    with pytest.raises(FatalPortalError, match=r"crm\.deal\.fields"):
        DealSchema.from_fields(bad)


def test_malformed_entries_become_text_columns() -> None:
    schema = DealSchema.from_fields({"ID": f("integer"), "UF_CRM_1": "junk", "UF_CRM_2": {}})
    assert schema.arrow_schema.field("UF_CRM_1").type == pa.string()
    assert schema.arrow_schema.field("UF_CRM_2").metadata[b"bitrix24.type"] == b"unknown"


def test_standard_order_covers_the_reference_table() -> None:
    assert STANDARD_ORDER[0] == "ID"
    assert len(set(STANDARD_ORDER)) == len(STANDARD_ORDER)
    assert {"OPPORTUNITY", "TAX_VALUE", "BEGINDATE", "LOCATION_ID"} <= set(STANDARD_ORDER)
