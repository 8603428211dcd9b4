"""Every Bitrix24 type of the mapping, with the wire variants of `crm.deal.get`.

Sources: REST docs `api-reference/crm/deals/crm-deal-get.md`, `api-reference/crm/data-types.md`;
crm module `restservice.php` (`innerGet`, `externalizeFields`); rest module `rest_util.php`.

Each case is one value of one field in one deal: (type, multiple, wire value, expected Python
value read back from Arrow, whether a record error is expected). `ABSENT` means the key is missing.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pyarrow as pa
import pytest

from pipeline.normalise import DealSchema, normalise_deals

ABSENT = object()
ERR = "error"


def _fields(bitrix_type: str, multiple: bool, name: str) -> dict[str, Any]:
    return {
        "ID": {"type": "integer", "isMultiple": False, "title": "ID"},
        name: {"type": bitrix_type, "isMultiple": multiple, "title": "Поле"},
    }


def run_one(
    bitrix_type: str, wire: Any, *, multiple: bool = False, name: str = "UF_CRM_1"
) -> tuple[Any, list[Any]]:
    schema = DealSchema.from_fields(_fields(bitrix_type, multiple, name))
    deal: dict[str, Any] = {"ID": "410"}
    if wire is not ABSENT:
        deal[name] = wire
    table, errors = normalise_deals([deal], schema)
    assert table.num_rows == 1
    return table.column(name).to_pylist()[0], errors


def check(
    bitrix_type: str, wire: Any, expected: Any, *, multiple: bool = False, name: str = "UF_CRM_1"
) -> None:
    value, errors = run_one(bitrix_type, wire, multiple=multiple, name=name)
    if expected == ERR:
        assert value is None
        assert len(errors) == 1, errors
        error = errors[0]
        assert (error.id, error.field) == (410, name)
        assert error.reason
        assert error.raw_value == (wire if isinstance(wire, str) else error.raw_value)
    else:
        assert errors == [], errors
        assert value == expected
        assert type(value) is type(expected)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


INTEGER_CASES = [
    ("42", 42),
    ("-7", -7),
    ("+5", 5),
    ("0", 0),
    ("007", 7),
    ("9223372036854775807", 9223372036854775807),
    (42, 42),
    (5.0, 5),
    ("", None),
    (None, None),
    (ABSENT, None),
    ("4.2", ERR),
    ("abc", ERR),
    ("0x10", ERR),
    (" 1", ERR),
    ("١٢", ERR),  # Arabic-Indic digits are not an ID
    ("9223372036854775808", ERR),
    ("99999999999999999999", ERR),
    (True, ERR),
    (4.5, ERR),
    ({"a": 1}, ERR),
    (["1"], ERR),
]


@pytest.mark.parametrize(("wire", "expected"), INTEGER_CASES)
@pytest.mark.parametrize("bitrix_type", ["integer", "enumeration", "crm_category"])
def test_integer_like(bitrix_type: str, wire: Any, expected: Any) -> None:
    check(bitrix_type, wire, expected)


REFERENCE_TYPES = [
    "user",
    "employee",
    "crm_company",
    "crm_contact",
    "crm_lead",
    "crm_quote",
    "crm_entity",
]


@pytest.mark.parametrize(
    ("wire", "expected"),
    [("84", 84), (84, 84), ("0", None), ("00", None), (0, None), ("", None), (None, None),
     (ABSENT, None), ("x", ERR), ("-", ERR)],
)  # fmt: skip
@pytest.mark.parametrize("bitrix_type", REFERENCE_TYPES)
def test_references_zero_is_unset(bitrix_type: str, wire: Any, expected: Any) -> None:
    check(bitrix_type, wire, expected)


def test_category_zero_is_the_default_pipeline_not_null() -> None:
    check("crm_category", "0", 0, name="CATEGORY_ID")


@pytest.mark.parametrize(
    ("wire", "expected"),
    [
        ("1000000.00", Decimal("1000000.00")),
        ("0.00", Decimal("0")),
        ("-15.5", Decimal("-15.5")),
        ("12.100000000", Decimal("12.1")),  # trailing zeros lose nothing
        ("0.000001", Decimal("0.000001")),
        ("1e3", Decimal("1000")),
        ("999999999999999999.99", Decimal("999999999999999999.99")),
        (999.99, Decimal("999.99")),  # crm.item-style JSON number
        (100, Decimal("100")),
        ("", None),
        (None, None),
        (ABSENT, None),
        ("12.1234567", ERR),  # more decimals than the scale: an error, never rounding
        ("1000000000000000000", ERR),
        ("1,5", ERR),
        ("NaN", ERR),
        ("1 000", ERR),
        (True, ERR),
    ],
)
@pytest.mark.parametrize("name", ["OPPORTUNITY", "TAX_VALUE"])
def test_money_amounts_are_exact_decimals(name: str, wire: Any, expected: Any) -> None:
    check("double", wire, expected, name=name)


def test_money_amount_type_is_decimal() -> None:
    schema = DealSchema.from_fields(_fields("double", False, "OPPORTUNITY"))
    assert pa.types.is_decimal(schema.arrow_schema.field("OPPORTUNITY").type)
    other = DealSchema.from_fields(_fields("double", False, "UF_CRM_2"))
    assert other.arrow_schema.field("UF_CRM_2").type == pa.float64()


@pytest.mark.parametrize(
    ("wire", "expected"),
    [
        ("12.5", 12.5),
        ("-3", -3.0),
        ("1e-3", 0.001),
        (3, 3.0),
        (2.25, 2.25),
        ("", None),
        (None, None),
        ("nan", ERR),
        ("inf", ERR),
        ("1e400", ERR),
        ("12,5", ERR),
        ("abc", ERR),
        (False, ERR),
    ],
)
def test_double(wire: Any, expected: Any) -> None:
    check("double", wire, expected)


BOOL_CASES = [
    ("Y", True),
    ("N", False),
    ("y", True),
    ("1", True),
    ("0", False),
    ("true", True),
    ("false", False),
    ("TRUE", True),
    ("False", False),
    (True, True),
    (False, False),
    (1, True),
    (0, False),
    ("", None),
    (None, None),
    (ABSENT, None),
    ("maybe", ERR),
    ("да", ERR),
    (2, ERR),
    ("YES", ERR),
    ([True], ERR),
]


@pytest.mark.parametrize(("wire", "expected"), BOOL_CASES)
@pytest.mark.parametrize("bitrix_type", ["char", "boolean"])
def test_booleans(bitrix_type: str, wire: Any, expected: Any) -> None:
    check(bitrix_type, wire, expected)


DATE_CASES = [
    # The documented example (REST docs `crm-deal-get.md`): local midnight + server offset.
    ("2024-08-30T02:00:00+02:00", date(2024, 8, 30)),
    ("2024-08-30T00:00:00+00:00", date(2024, 8, 30)),
    ("2024-08-30T03:00:00+03:00", date(2024, 8, 30)),
    # Negative offset: the string shows the previous day (inferred from rest module
    # `rest_util.php`, `CRestUtil::ConvertDate`).
    ("2024-08-29T19:00:00-05:00", date(2024, 8, 30)),
    ("2024-08-29T14:00:00-10:00", date(2024, 8, 30)),
    # DST, server in New York: a summer date rendered while the server is on winter time ...
    ("2024-06-30T19:00:00-04:00", date(2024, 7, 1)),
    # ... and a winter date rendered while the server is on summer time.
    ("2024-01-14T20:00:00-05:00", date(2024, 1, 15)),
    # DST, server in Berlin: both directions.
    ("2024-07-01T01:00:00+02:00", date(2024, 7, 1)),
    ("2024-01-15T02:00:00+01:00", date(2024, 1, 15)),
    # Kiritimati (+14:00): far east still lands on the right day.
    ("2024-08-30T14:00:00+14:00", date(2024, 8, 30)),
    ("2024-08-30T02:00:00Z", date(2024, 8, 30)),
    ("2024-08-30T02:00:00.5+02:00", date(2024, 8, 30)),
    ("1969-12-31T19:00:00-05:00", date(1970, 1, 1)),
    ("1960-05-01T03:00:00+03:00", date(1960, 5, 1)),
    ("2024-08-30", date(2024, 8, 30)),
    ("2024-02-29", date(2024, 2, 29)),
    ("", None),
    (None, None),
    (ABSENT, None),
    ("2024-02-30T00:00:00+00:00", ERR),
    ("2023-02-29", ERR),
    ("2024-13-01", ERR),
    ("30.08.2024", ERR),
    ("garbage", ERR),
    ("0000-01-01T00:00:00+00:00", ERR),
    (20240830, ERR),
]


@pytest.mark.parametrize(("wire", "expected"), DATE_CASES)
def test_date_rounds_to_the_nearest_utc_midnight(wire: Any, expected: Any) -> None:
    check("date", wire, expected)


@pytest.mark.parametrize(
    ("wire", "expected"),
    [
        ("2024-08-30T14:29:00+02:00", utc(2024, 8, 30, 12, 29)),
        ("2024-08-30T14:29:00-05:00", utc(2024, 8, 30, 19, 29)),
        ("2024-08-30T14:29:00Z", utc(2024, 8, 30, 14, 29)),
        ("2024-08-30T14:29:00.123456+00:00", utc(2024, 8, 30, 14, 29, 0, 123456)),
        ("2024-03-31T03:00:00+02:00", utc(2024, 3, 31, 1, 0)),  # Berlin, just after the change
        ("", None),
        (None, None),
        (ABSENT, None),
        ("2024-08-30T14:29:00", ERR),  # no offset: the zone is unknown
        ("2024-08-30T25:00:00+00:00", ERR),
        ("2024-13-01T00:00:00+00:00", ERR),
        ("yesterday", ERR),
        ("0001-01-01T00:00:00+05:00", ERR),
        (1725020945, ERR),
    ],
)
def test_datetime_is_utc(wire: Any, expected: Any) -> None:
    check("datetime", wire, expected)


TEXT_TYPES = ["string", "url", "address", "location", "crm_status", "crm_currency", "crm",
              "iblock_section", "iblock_element", "resourcebooking"]  # fmt: skip


@pytest.mark.parametrize(
    ("wire", "expected"),
    [
        ("Привет мир!", "Привет мир!"),
        ("Другое 🚀 ✈️", "Другое 🚀 ✈️"),
        ("  пробелы  ", "  пробелы  "),
        ("", ""),  # text keeps the empty string
        # A user field's null is a list method's empty value, which the get method sends as ""
        # (pipeline.fetch.listing); see test_a_standard_fields_null_stays_null.
        (None, ""),
        (ABSENT, None),
        ("D_1", "D_1"),
        ("T80_6", "T80_6"),
        ("Санкт-Петербург, Невский пр., 28|59.935634;30.325935|1202",
         "Санкт-Петербург, Невский пр., 28|59.935634;30.325935|1202"),
        ({"a": [1, "б"]}, '{"a":[1,"б"]}'),  # objects become JSON text
        ([1, 2], "[1,2]"),
        (5, "5"),
        (True, "true"),
    ],
)  # fmt: skip
@pytest.mark.parametrize("bitrix_type", TEXT_TYPES)
def test_text_types(bitrix_type: str, wire: Any, expected: Any) -> None:
    check(bitrix_type, wire, expected)


@pytest.mark.parametrize("bitrix_type", TEXT_TYPES)
def test_a_standard_fields_null_stays_null(bitrix_type: str) -> None:
    """Only user fields have a list form of their empty value; a standard field's null (the get
    method's own empty, REST docs `crm-deal-get.md` example `"LEAD_ID": null`) stays null."""
    check(bitrix_type, None, None, name="COMMENTS_X")


def money(amount: str | None, currency: str | None) -> dict[str, Any]:
    return {"amount": None if amount is None else Decimal(amount), "currency": currency}


@pytest.mark.parametrize(
    ("wire", "expected"),
    [
        ("1500.50|EUR", money("1500.50", "EUR")),
        ("300|RUB", money("300", "RUB")),
        ("1e+05|USD", money("100000", "USD")),
        ("-0.5|KWD", money("-0.5", "KWD")),
        ("12", money("12", None)),
        ("|RUB", money(None, "RUB")),
        (100, money("100", None)),
        ("", None),
        (None, None),
        (ABSENT, None),
        ("abc|EUR", ERR),
        ("1.1234567|EUR", ERR),
        ("1,50|EUR", ERR),
        ({"amount": 1}, ERR),
    ],
)
def test_money_user_field(wire: Any, expected: Any) -> None:
    check("money", wire, expected)


SHOW = "/bitrix/components/bitrix/crm.deal.show/show_file.php?ownerId=1&fileId=37375"
DOWNLOAD = "/bitrix/components/bitrix/crm.deal.show/show_file.php?auth=tok3n&ownerId=1&fileId=37375"


@pytest.mark.parametrize(
    ("wire", "expected"),
    [
        # The caller's token is dropped from the URL (crm restservice.php externalizeFile).
        ({"id": 37375, "showUrl": SHOW, "downloadUrl": DOWNLOAD},
         {"id": 37375, "showUrl": SHOW, "downloadUrl": SHOW}),
        ({"id": 37375, "showUrl": SHOW, "downloadUrl": SHOW + "&auth="},
         {"id": 37375, "showUrl": SHOW, "downloadUrl": SHOW}),
        ({"id": "37375", "showUrl": SHOW},
         {"id": 37375, "showUrl": SHOW, "downloadUrl": None}),  # missing URL is null
        (ABSENT, None),  # no file: the key is absent (crm `tryExternalizeFileField`)
        ("", None),
        (None, None),
        ({"id": "x", "showUrl": SHOW}, ERR),
        ("37375", ERR),
        ([], ERR),
    ],
)  # fmt: skip
def test_file(wire: Any, expected: Any) -> None:
    check("file", wire, expected)


FILE_A = {"id": 1, "showUrl": "/a", "downloadUrl": "/a?d"}
FILE_B = {"id": 2, "showUrl": "/b", "downloadUrl": "/b?d"}


@pytest.mark.parametrize(
    ("bitrix_type", "wire", "expected", "errors"),
    [
        ("enumeration", ["91", "93"], [91, 93], 0),
        ("enumeration", "91", [91], 0),  # a bare value is a one-element list
        ("enumeration", {"0": "91", "2": "93"}, [91, 93], 0),  # PHP array with gaps
        ("enumeration", ["91", "x", "93"], [91, None, 93], 1),
        ("enumeration", [], [], 0),
        ("enumeration", None, [], 0),  # a list method's empty (the get method sends false)
        ("enumeration", "", [], 0),  # "" is one of the portal's empty forms (false, "", [])
        ("enumeration", False, [], 0),
        ("enumeration", ABSENT, None, 0),
        ("string", ["a", "б", "🚀", ""], ["a", "б", "🚀", ""], 0),
        ("crm", ["C_123", "CO_456", "T80_6"], ["C_123", "CO_456", "T80_6"], 0),
        ("date", ["2024-08-29T19:00:00-05:00", "2024-01-14T20:00:00-05:00"],
         [date(2024, 8, 30), date(2024, 1, 15)], 0),
        ("date", ["2024-08-30", "bad", "also bad"], [date(2024, 8, 30), None, None], 2),
        ("datetime", ["2024-08-30T14:29:00+02:00"], [utc(2024, 8, 30, 12, 29)], 0),
        ("double", ["1.5", "2"], [1.5, 2.0], 0),
        ("employee", ["1", "0", "7"], [1, None, 7], 0),
        ("money", ["1|EUR", "2.5|USD"], [money("1", "EUR"), money("2.5", "USD")], 0),
        ("file", [], [], 0),  # multiple file with no files is [] (crm `tryExternalizeFileField`)
        ("file", [FILE_A, FILE_B], [FILE_A, FILE_B], 0),
        ("file", [FILE_A, "bad"], [FILE_A, None], 1),
        ("url", ["https://example.com/клиент?a=1"], ["https://example.com/клиент?a=1"], 0),
    ],
)  # fmt: skip
def test_multiple(bitrix_type: str, wire: Any, expected: Any, errors: int) -> None:
    value, got = run_one(bitrix_type, wire, multiple=True)
    assert value == expected
    assert len(got) == errors
    for error in got:
        assert error.field == "UF_CRM_1"
        assert error.reason.startswith("item ")


def test_list_element_errors_name_their_position() -> None:
    _, errors = run_one("integer", ["1", "two", "3", "four"], multiple=True)
    assert [(e.raw_value, e.reason.split(":")[0]) for e in errors] == [
        ("two", "item 1"),
        ("four", "item 3"),
    ]


def test_unknown_type_keeps_objects_as_json_text() -> None:
    check("some_future_type", {"b": 2, "a": "ё"}, '{"b":2,"a":"ё"}')
    check("some_future_type", [{"x": None}], '[{"x":null}]')


def test_record_error_raw_value_of_non_strings_is_json_text() -> None:
    _, errors = run_one("integer", {"n": "Ж"})
    assert errors[0].raw_value == '{"n":"Ж"}'
    _, errors = run_one("integer", True)
    assert errors[0].raw_value == "true"
