"""Property tests: arbitrary wire values never raise, every deal is one row, and every value that
could not be converted is exactly one record error (no error without a lost value, no lost value
without an error)."""

from __future__ import annotations

import re
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.normalise import EXTRA_COLUMN, DealSchema, normalise_deals
from pipeline.normalise.mapping import BITRIX24_TYPES, REFERENCE, TEXT, UNKNOWN
from pipeline.normalise.table import _normalise

TYPES = sorted(BITRIX24_TYPES)
FIELDS: dict[str, Any] = {"ID": {"type": "integer", "isMultiple": False}}
for n, _type in enumerate(TYPES):
    FIELDS[f"UF_CRM_{n:02d}"] = {"type": _type, "isMultiple": False}
    if _type not in ("boolean", "char"):
        FIELDS[f"UF_CRM_{n:02d}_M"] = {"type": _type, "isMultiple": True}
FIELDS["OPPORTUNITY"] = {"type": "double", "isMultiple": False}
FIELDS["UF_CRM_UNKNOWN"] = {"type": "not_a_type", "isMultiple": False}
SCHEMA = DealSchema.from_fields(FIELDS)
NAMES = [c.name for c in SCHEMA.columns if c.name != "ID"]

# Wire-like strings: the valid forms of every type, near misses, and free text.
WIRE_STRINGS = st.one_of(
    st.sampled_from(
        ["", "0", "00", "Y", "N", "1", "true", "-", "1500.50|EUR", "|RUB", "2024-08-30",
         "2024-08-29T19:00:00-05:00", "2024-02-30T00:00:00+00:00", "0000-01-01T00:00:00+00:00",
         "9999-12-31T23:00:00-05:00", "1e400", "nan", "0x1F", "1.1234567", "D_1", "T80_6"]
    ),
    st.from_regex(r"\A[+-]?[0-9]{1,21}(\.[0-9]{0,9})?\Z"),
    st.from_regex(r"\A[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}[+-][0-9]{2}:[0-9]{2}\Z"),
    st.text(max_size=12),
)  # fmt: skip
SCALARS = st.one_of(
    st.none(),
    WIRE_STRINGS,
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
)
FILES = st.fixed_dictionaries(
    {},
    optional={"id": SCALARS, "showUrl": SCALARS, "downloadUrl": SCALARS, "other": SCALARS},
)
ELEMENTS = st.one_of(SCALARS, FILES)
VALUES = st.one_of(
    ELEMENTS,
    st.lists(ELEMENTS, max_size=4),
    st.dictionaries(st.sampled_from(["0", "2", "7"]), ELEMENTS, max_size=3),
)
ABSENT = object()
DEALS = st.lists(
    st.fixed_dictionaries(
        {},
        optional={"ID": SCALARS, **dict.fromkeys(NAMES, VALUES), "UF_CRM_NEW": VALUES},
    ),
    max_size=12,
)

_ZEROS = re.compile(r"[+-]?0+")


def _blank(raw: Any, reference: bool) -> bool:
    """A value that means "empty" and may be null without an error."""
    if raw is None or raw is ABSENT or (isinstance(raw, str) and raw == ""):
        return True
    if reference and not isinstance(raw, bool):
        if isinstance(raw, int | float) and raw == 0:
            return True
        if isinstance(raw, str) and _ZEROS.fullmatch(raw):
            return True
    return False


def _elements(raw: Any) -> list[Any]:
    if isinstance(raw, list):
        return raw
    if isinstance(raw, dict):
        return list(raw.values())
    if raw is False or raw == "":
        return []  # the portal's empty forms of a multiple field (false, "", [])
    return [raw]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(DEALS)
def test_arbitrary_wire_values(deals: list[dict[str, Any]]) -> None:
    ids = list(range(1, len(deals) + 1))
    table, errors = normalise_deals(deals, SCHEMA, ids=ids)  # must not raise
    assert table.num_rows == len(deals)
    assert table.schema == SCHEMA.arrow_schema
    table.validate(full=True)

    by_cell: dict[tuple[int, str], int] = {}
    for error in errors:
        by_cell[(error.id, error.field)] = by_cell.get((error.id, error.field), 0) + 1
        assert error.reason
    expected_total = 0
    for column in SCHEMA.columns:
        out = table.column(column.name).to_pylist()
        reference = BITRIX24_TYPES.get(column.bitrix_type) is REFERENCE
        for row, deal in enumerate(deals):
            raw = deal.get(column.name, ABSENT)
            got = by_cell.get((ids[row], column.name), 0)
            # Every column here is a user field: a null it carries is a list method's empty
            # value, "" (text) or no items (multiple); only an absent key stays null.
            if column.kind in (TEXT, UNKNOWN):
                # Text never fails; it is null only when the key was absent.
                assert got == 0
                assert (out[row] is None) == (raw is ABSENT)
                assert raw is not None or out[row] == ""
                continue
            if column.is_multiple:
                if raw is None or raw is ABSENT:
                    assert out[row] == ([] if raw is None else None)
                    assert got == 0
                    continue
                elements = _elements(raw)
                assert len(out[row]) == len(elements)
                lost = sum(
                    1
                    for value, element in zip(out[row], elements, strict=True)
                    if value is None and not _blank(element, reference)
                )
                assert got == lost, (column.name, raw, out[row])
                expected_total += lost
            else:
                lost = out[row] is None and not _blank(raw, reference)
                assert got == int(lost), (column.name, raw, out[row])
                expected_total += int(lost)
    assert len(errors) == expected_total

    extra = table.column(EXTRA_COLUMN).to_pylist()
    for row, deal in enumerate(deals):
        assert (extra[row] is not None) == ("UF_CRM_NEW" in deal)


STRING_DEALS = st.lists(
    st.fixed_dictionaries(
        {},
        optional={
            "ID": st.one_of(st.none(), WIRE_STRINGS),
            **{
                name: st.one_of(st.none(), WIRE_STRINGS, st.lists(WIRE_STRINGS, max_size=3))
                for name in NAMES
            },
        },
    ),
    max_size=8,
)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(STRING_DEALS)
def test_fast_path_equals_python_path(deals: list[dict[str, Any]]) -> None:
    """pyarrow's own reading of string values gives exactly what the Python path gives."""
    fast = _normalise(deals, SCHEMA, None, fast=True)
    slow = _normalise(deals, SCHEMA, None, fast=False)
    assert fast[0].equals(slow[0])
    assert fast[1] == slow[1]


# A value that makes each strict cast reject its whole block, forcing every value of the block
# through the per-value converter.
POISON = {
    "integer": "99999999999999999999",
    "double": "x",
    "date": "x",
    "datetime": "x",
    "money": "x|EUR",
}


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(sorted(POISON)), WIRE_STRINGS)
def test_per_value_converter_agrees_with_the_vectorised_cast(bitrix_type: str, wire: str) -> None:
    convert = BITRIX24_TYPES[bitrix_type].convert
    alone, alone_failures = convert([wire])
    poisoned, poisoned_failures = convert([wire, POISON[bitrix_type]])
    assert poisoned.to_pylist()[0] == alone.to_pylist()[0]
    assert [f.reason for f in poisoned_failures if f.row == 0] == [f.reason for f in alone_failures]
    assert [f.row for f in poisoned_failures].count(1) == 1
