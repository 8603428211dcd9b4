"""The entity descriptor: the one place that names an entity, and the lead schema it types.

Pure tests (no sockets): the seam itself (no other module names a deal method), the lookup,
the deal descriptor keeping the legacy constants, and lead fields typed from the portal's own
metadata, communication multifields included.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pytest

from pipeline.entity import DEAL, ENTITY_NAMES, LEAD, entity_named
from pipeline.fetch.batch import DEAL_GET, build_batch, parse_batch
from pipeline.normalise import DealSchema, EntitySchema, normalise_deals
from pipeline.normalise.convert import MULTIFIELD_TYPE
from pipeline.normalise.schema import OMITTED, STANDARD_ORDER
from pipeline.simulator.fields import USER_FIELDS, build_lead_fields

PACKAGE = Path(__file__).resolve().parents[2] / "pipeline"


def _outside_the_seam() -> list[Path]:
    return [
        path
        for path in sorted(PACKAGE.rglob("*.py"))
        if path.name != "entity.py" or path.parent != PACKAGE
        if "simulator" not in path.relative_to(PACKAGE).parts
    ]


def test_no_module_outside_the_descriptor_names_a_deal_method() -> None:
    files = _outside_the_seam()
    assert len(files) > 40, "the walk found too few modules to prove anything"
    offenders = [
        f"{path.relative_to(PACKAGE.parent)}:{number}"
        for path in files
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if "crm.deal." in line
    ]
    assert offenders == []


def test_the_descriptor_itself_is_where_the_methods_are_named() -> None:
    text = (PACKAGE / "entity.py").read_text(encoding="utf-8")
    for method in ("crm.deal.get", "crm.deal.list", "crm.deal.fields", "crm.lead.get"):
        assert f'"{method}"' in text


def test_lookup_by_name() -> None:
    assert ENTITY_NAMES == ("deal", "lead")
    assert entity_named("lead") is LEAD
    assert entity_named(" Deal ") is DEAL
    with pytest.raises(ValueError, match=r"unknown entity 'contact'.*deal, lead"):
        entity_named("contact")


def test_the_deal_descriptor_keeps_the_names_importers_use() -> None:
    assert DealSchema is EntitySchema
    assert DEAL_GET == DEAL.get_method == "crm.deal.get"
    assert DEAL.standard_order == STANDARD_ORDER
    assert DEAL.omitted == OMITTED
    assert (DEAL.list_method, DEAL.fields_method) == ("crm.deal.list", "crm.deal.fields")
    assert DEAL.partition_column == LEAD.partition_column == "DATE_CREATE"
    assert DEAL.tag_fingerprint("abc") == "abc"
    assert LEAD.tag_fingerprint("abc") == "lead:abc"


def test_a_lead_batch_asks_crm_lead_get_and_checks_the_id() -> None:
    body = build_batch([7, 9], LEAD)
    assert body == {"halt": 0, "cmd": {"d7": "crm.lead.get?ID=7", "d9": "crm.lead.get?ID=9"}}
    reply = parse_batch({"result": {"d7": {"ID": "7"}, "d9": {"ID": "8"}}}, [7, 9], LEAD)
    assert reply.deals == {7: {"ID": "7"}}
    assert reply.errors[9].code == "BAD_PAYLOAD"


def _lead_schema() -> EntitySchema:
    return EntitySchema.from_fields(build_lead_fields(USER_FIELDS), LEAD)


def test_lead_columns_follow_the_lead_field_table() -> None:
    schema = _lead_schema()
    names = schema.column_names
    assert names[:6] == ("ID", "TITLE", "HONORIFIC", "NAME", "SECOND_NAME", "LAST_NAME")
    assert "CONTACT_IDS" not in names  # listed by crm.lead.fields, never sent by crm.lead.get
    assert schema.snapshot()["omitted"] == dict(LEAD.omitted)
    standard = [n for n in names if not n.startswith("UF_")]
    assert standard[-5:] == ["PHONE", "EMAIL", "WEB", "IM", "LINK"]
    assert names.index("UF_CRM_1721244482250") > names.index("LINK")


def test_lead_fields_are_typed_from_their_metadata() -> None:
    arrow = _lead_schema().arrow_schema
    assert arrow.field("ID").type == pa.int64()
    assert pa.types.is_decimal(arrow.field("OPPORTUNITY").type)  # money: exact, not double
    assert arrow.field("STATUS_ID").type == pa.string()
    assert arrow.field("HAS_PHONE").type == pa.bool_()
    assert arrow.field("ASSIGNED_BY_ID").type == pa.int64()
    assert arrow.field("DATE_CREATE").type == pa.timestamp("us", "UTC")
    assert arrow.field("BIRTHDATE").type == pa.date32()
    for name in ("PHONE", "EMAIL", "WEB", "IM", "LINK"):
        assert arrow.field(name).type == pa.list_(pa.field("element", MULTIFIELD_TYPE))


def test_multifields_become_typed_entries_and_bad_ones_are_record_errors() -> None:
    schema = _lead_schema()
    phone = {"ID": "11658", "VALUE_TYPE": "OTHER", "VALUE": "+5454777777", "TYPE_ID": "PHONE"}
    im = {"ID": "11660", "VALUE_TYPE": "OPENLINE", "VALUE": "imol|livechat|1|67|21"}
    im["TYPE_ID"] = "IM"
    payloads = [
        # The REST docs `crm-lead-get.md` example: PHONE and IM present, EMAIL absent (empty).
        {"ID": "123", "OPPORTUNITY": "0.00", "HAS_PHONE": "N", "PHONE": [phone], "IM": [im]},
        {"ID": "124", "PHONE": [{"ID": "x1", "VALUE": "1"}], "EMAIL": "not an entry list"},
    ]
    table, errors = normalise_deals(payloads, schema, ids=[123, 124])
    rows = table.select(["ID", "OPPORTUNITY", "HAS_PHONE", "PHONE", "EMAIL", "IM"]).to_pylist()
    assert rows[0] == {
        "ID": 123,
        "OPPORTUNITY": Decimal("0"),
        "HAS_PHONE": False,
        "PHONE": [{"ID": 11658, "VALUE_TYPE": "OTHER", "VALUE": "+5454777777", "TYPE_ID": "PHONE"}],
        "EMAIL": None,
        "IM": [{"ID": 11660, "VALUE_TYPE": "OPENLINE", "VALUE": "imol|livechat|1|67|21",
                "TYPE_ID": "IM"}],
    }  # fmt: skip
    assert rows[1]["PHONE"] == [None]
    assert rows[1]["EMAIL"] == [None]
    assert sorted((e.id, e.field) for e in errors) == [(124, "EMAIL"), (124, "PHONE")]
    assert all(e.reason.startswith("item 0: ") for e in errors)
