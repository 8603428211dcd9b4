"""normalise_deals: rows, record errors, `_extra`, and whole chunks vs single values."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from pipeline.normalise import EXTRA_COLUMN, DealSchema, normalise_deals
from pipeline.outcomes import RecordError

from .test_types import (
    ABSENT,
    BOOL_CASES,
    DATE_CASES,
    INTEGER_CASES,
    run_one,
)

FIELDS: dict[str, Any] = {
    "ID": {"type": "integer", "isMultiple": False, "title": "ID"},
    "TITLE": {"type": "string", "isMultiple": False, "title": "Название"},
    "OPPORTUNITY": {"type": "double", "isMultiple": False, "title": "Сумма"},
    "UF_CRM_1": {"type": "date", "isMultiple": False, "title": "Дата"},
}


def test_one_row_per_deal_in_input_order_even_when_values_fail() -> None:
    schema = DealSchema.from_fields(FIELDS)
    deals = [
        {"ID": "3", "TITLE": "Сделка 🚀", "OPPORTUNITY": "10.50", "UF_CRM_1": "2024-08-30"},
        {"ID": "1", "TITLE": "x", "OPPORTUNITY": "ten", "UF_CRM_1": "never"},
        {"ID": "2"},
    ]
    table, errors = normalise_deals(deals, schema)
    assert table.num_rows == 3
    assert table.column("ID").to_pylist() == [3, 1, 2]
    assert table.column("TITLE").to_pylist() == ["Сделка 🚀", "x", None]
    assert errors == [
        RecordError(1, "OPPORTUNITY", "ten", errors[0].reason),
        RecordError(1, "UF_CRM_1", "never", errors[1].reason),
    ]
    assert "decimal" in errors[0].reason
    assert "date" in errors[1].reason


def test_ids_argument_names_the_deal_in_errors() -> None:
    schema = DealSchema.from_fields(FIELDS)
    deals = [{"ID": "garbage", "OPPORTUNITY": "x"}, {"OPPORTUNITY": "y"}]
    _, errors = normalise_deals(deals, schema, ids=[77, 78])
    assert [(e.id, e.field) for e in errors] == [
        (77, "ID"),
        (77, "OPPORTUNITY"),
        (78, "OPPORTUNITY"),
    ]
    # Without ids an unreadable payload ID is reported as 0.
    _, errors = normalise_deals(deals, schema)
    assert {e.id for e in errors} == {0}
    with pytest.raises(ValueError, match="ids"):
        normalise_deals(deals, schema, ids=[1])


def test_unknown_keys_are_kept_in_extra_as_json() -> None:
    schema = DealSchema.from_fields(FIELDS)
    deals = [
        {"ID": "1", "UF_CRM_NEW": "создано во время выгрузки 🚀", "CONTACT_IDS": ["4", "5"]},
        {"ID": "2", "TITLE": "no extras"},
        {"ID": "3", "UF_CRM_OBJ": {"a": [1, None]}},
    ]
    table, errors = normalise_deals(deals, schema)
    assert errors == []
    extra = table.column(EXTRA_COLUMN).to_pylist()
    assert orjson.loads(extra[0]) == {
        "UF_CRM_NEW": "создано во время выгрузки 🚀",
        "CONTACT_IDS": ["4", "5"],
    }
    assert extra[1] is None
    assert orjson.loads(extra[2]) == {"UF_CRM_OBJ": {"a": [1, None]}}


def test_an_unknown_key_in_place_of_a_column_is_kept_in_extra() -> None:
    """Payloads with as many keys as there are columns, one of them unknown and a column
    missing: `_extra` keeps the unknown key however the wire values are read; so it does in
    a part where every payload holds every column and one has a key more."""
    fields = {**FIELDS, "UF_CRM_2": {"type": "string", "isMultiple": True, "title": "Теги"}}
    schema = DealSchema.from_fields(fields)
    full = {"TITLE": "t", "OPPORTUNITY": "1.5", "UF_CRM_1": "2024-08-30", "UF_CRM_2": ["a"]}
    deals: list[dict[str, Any]] = [{"ID": str(i), **full} for i in range(1, 5)]
    deals[1] = {k: v for k, v in deals[1].items() if k != "UF_CRM_2"} | {"UF_CRM_NEW": 7}
    deals[2] = {k: v for k, v in deals[2].items() if k != "TITLE"} | {"UF_CRM_OLD": "x"}
    assert len({len(deal) for deal in deals}) == 1
    table, errors = normalise_deals(deals, schema)
    assert errors == []
    extra = table.column(EXTRA_COLUMN).to_pylist()
    assert [None if e is None else orjson.loads(e) for e in extra] == [
        None,
        {"UF_CRM_NEW": 7},
        {"UF_CRM_OLD": "x"},
        None,
    ]
    assert table.column("UF_CRM_2").to_pylist() == [["a"], None, ["a"], ["a"]]
    assert table.column("TITLE").to_pylist() == ["t", "t", None, "t"]

    every = [{"ID": str(i), **full} for i in range(1, 4)]
    every[2]["UF_CRM_MORE"] = 1
    table, _ = normalise_deals(every, schema)
    assert table.column(EXTRA_COLUMN).to_pylist() == [None, None, '{"UF_CRM_MORE":1}']


def test_empty_chunk() -> None:
    schema = DealSchema.from_fields(FIELDS)
    table, errors = normalise_deals([], schema)
    assert table.num_rows == 0
    assert table.schema == schema.arrow_schema
    assert errors == []


@pytest.mark.parametrize(
    ("bitrix_type", "cases"),
    [("integer", INTEGER_CASES), ("char", BOOL_CASES), ("date", DATE_CASES)],
)
def test_a_chunk_converts_exactly_like_single_values(bitrix_type: str, cases: list[Any]) -> None:
    """Good and bad values mixed in one chunk (the vectorised path with block fallback) give the
    same values and the same errors as each value on its own."""
    fields = {"ID": FIELDS["ID"], "UF_CRM_1": {"type": bitrix_type, "isMultiple": False}}
    schema = DealSchema.from_fields(fields)
    # Repeat so the chunk spans several fallback blocks.
    wires = [wire for wire, _ in cases] * 40
    deals = [
        {"ID": str(n + 1)} | ({} if wire is ABSENT else {"UF_CRM_1": wire})
        for n, wire in enumerate(wires)
    ]
    table, errors = normalise_deals(deals, schema)
    singles = [run_one(bitrix_type, wire) for wire in wires]
    assert table.column("UF_CRM_1").to_pylist() == [value for value, _ in singles]
    expected_errors = [
        (n + 1, e.raw_value, e.reason) for n, (_, errs) in enumerate(singles) for e in errs
    ]
    assert [(e.id, e.raw_value, e.reason) for e in errors] == expected_errors


def test_one_bad_value_in_a_large_clean_chunk() -> None:
    schema = DealSchema.from_fields(FIELDS)
    deals = [
        {"ID": str(n), "OPPORTUNITY": f"{n}.25", "UF_CRM_1": "2024-08-29T19:00:00-05:00"}
        for n in range(1, 3001)
    ]
    deals[1700]["OPPORTUNITY"] = "1.0000001"
    deals[2999]["UF_CRM_1"] = "2024-02-30T00:00:00+00:00"
    table, errors = normalise_deals(deals, schema)
    assert [(e.id, e.field) for e in errors] == [(1701, "OPPORTUNITY"), (3000, "UF_CRM_1")]
    amounts = table.column("OPPORTUNITY").to_pylist()
    assert amounts[1700] is None
    assert str(amounts[1699]) == "1700.250000"
    assert table.column("UF_CRM_1").null_count == 1
