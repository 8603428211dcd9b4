"""The cheap paths against straightforward references on mixed and odd wire values.

`TableBuilder` holds a part's string-valued and multiple columns in their wire form and types
them once per chunk; columns of one kind are typed in one converter call; plain file objects and
lists of strings skip the per-value checks. Each must give exactly what the plain path gives:
one `normalise_deals` call, one converter call per column, the checked per-value pass.
"""

from __future__ import annotations

import random
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.normalise import DealSchema, TableBuilder, normalise_deals
from pipeline.normalise import table as table_module
from pipeline.normalise.convert import (
    _checked_files,
    _is_auth,
    _list_converters,
    convert_file,
    convert_int,
    convert_reference,
    scalar_int,
    strip_auth,
)
from pipeline.normalise.mapping import BITRIX24_TYPES
from pipeline.normalise.table import _normalise
from tests.normalise.test_properties import DEALS, FILES, NAMES, SCALARS, SCHEMA, STRING_DEALS

RELAXED = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# The per-column reference makes ~100 converter calls an example.
FEWER = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _in_parts(
    deals: list[dict[str, Any]], ids: list[int], cuts: list[int], seed: int
) -> tuple[pa.Table, list[Any]]:
    """The deals through one TableBuilder, cut into parts at `cuts`, parts added in any order."""
    bounds = sorted({0, len(deals), *(c % (len(deals) + 1) for c in cuts)})
    parts = [(bounds[n], bounds[n + 1]) for n in range(len(bounds) - 1)]
    random.Random(seed).shuffle(parts)
    builder = TableBuilder(SCHEMA)
    for start, end in parts:
        builder.append(builder.convert(deals[start:end], ids[start:end]))
    return builder.finish()


@FEWER
@given(
    st.one_of(DEALS, STRING_DEALS),
    st.lists(st.integers(0, 40), max_size=4),
    st.integers(0, 3),
)
def test_parts_equal_one_normalise_call(
    deals: list[dict[str, Any]], cuts: list[int], seed: int
) -> None:
    """Staged or typed at once (a part with a JSON number is), any cut, any order of parts."""
    ids = list(range(1, len(deals) + 1))
    expected_table, expected_errors = normalise_deals(deals, SCHEMA, ids=ids)
    table, errors = _in_parts(deals, ids, cuts, seed)
    assert table.equals(expected_table)
    assert errors == expected_errors


@FEWER
@given(st.one_of(DEALS, STRING_DEALS), st.booleans())
def test_columns_of_a_kind_together_equal_one_call_per_column(
    deals: list[dict[str, Any]], fast: bool
) -> None:
    grouped = _normalise(deals, SCHEMA, None, fast=fast)
    alone = _normalise(deals, SCHEMA, None, fast=False, grouped=False)
    assert grouped[0].equals(alone[0])
    assert grouped[1] == alone[1]


def _same(got: tuple[pa.Array, list[Any]], expected: tuple[pa.Array, list[Any]]) -> None:
    assert got[0].type == expected[0].type
    assert got[0].to_pylist() == expected[0].to_pylist()
    assert got[0].is_null().to_pylist() == expected[0].is_null().to_pylist()
    assert got[1] == expected[1]


FILE_VALUES = st.lists(st.one_of(FILES, SCALARS, st.just("")), max_size=8)
PORTAL = "/bitrix/components/bitrix/crm.deal.show/show_file.php"


@RELAXED
@given(FILE_VALUES)
def test_file_objects_equal_the_checked_pass(values: list[Any]) -> None:
    _same(convert_file(values), _checked_files(values))


def test_file_forms_table() -> None:
    """The plain pass refuses what only the checked pass may judge, and strips `auth` alike."""
    values: list[Any] = [
        {"id": 7, "showUrl": f"{PORTAL}?ownerId=1", "downloadUrl": f"{PORTAL}?auth=tok&ownerId=1"},
        {"id": 8, "downloadUrl": f"{PORTAL}?ownerId=1&auth=tok#x"},
        {"id": 9, "downloadUrl": f"{PORTAL}?auth=a&auth=b&x=1"},
        # Only a literal "auth" is looked for in file URLs (the portal writes it so), both paths.
        {"id": 10, "showUrl": f"{PORTAL}?aut%68=enc&x=1"},
        {},
        None,
        "",
    ]
    odd: list[Any] = [
        {"id": 5.5},  # pyarrow would truncate it
        {"id": True},
        {"id": "12"},
        {"id": 2**63},
        {"id": 1, "showUrl": b"/bytes"},
        {"id": 1, "downloadUrl": 42},
        [1, "a", "b"],
        "text",
        0,
    ]
    _same(convert_file(values), _checked_files(values))
    assert "tok" not in str(convert_file(values)[0].to_pylist())
    for value in odd:
        _same(convert_file([*values, value]), _checked_files([*values, value]))


LIST_ELEMENT_TYPES = ("integer", "enumeration", "string", "date", "datetime", "double", "employee")
LIST_VALUES = st.lists(
    st.one_of(
        st.none(),
        st.just(False),
        st.just(""),
        st.lists(st.one_of(SCALARS, FILES), max_size=4),
        st.dictionaries(st.sampled_from(["0", "2", "7"]), SCALARS, max_size=3),
        SCALARS,
    ),
    max_size=8,
)


@RELAXED
@given(st.sampled_from(LIST_ELEMENT_TYPES), LIST_VALUES)
def test_staged_lists_equal_the_checked_pass(bitrix_type: str, values: list[Any]) -> None:
    kind = BITRIX24_TYPES[bitrix_type]
    lists = _list_converters(kind.convert, kind.arrow_type)
    _same(lists.convert(values), lists.checked(values))


JSON_LISTS = st.lists(
    st.one_of(st.none(), st.lists(st.one_of(SCALARS, FILES), max_size=4)), max_size=8
)


@RELAXED
@given(st.sampled_from((*LIST_ELEMENT_TYPES, "file")), JSON_LISTS)
def test_lists_flattened_at_once_equal_the_per_value_pass(
    bitrix_type: str, values: list[Any]
) -> None:
    """A column of JSON arrays and nulls only is flattened by C loops; one `false` more (an
    empty list, last) makes the same column take the per-value pass."""
    kind = BITRIX24_TYPES[bitrix_type]
    lists = _list_converters(kind.convert, kind.arrow_type)
    array, failures = lists.checked([*values, False])
    expected = (array.slice(0, len(values)), [f for f in failures if f.row < len(values)])
    _same(lists.checked(values), expected)


NEGATIVE_WIRE = ["-5", "+5", "-0", "-00", "--1", "-", "- 1", "-9223372036854775808",
                 "-9223372036854775809", "-1.5", "-0x1F", "12", "", None]  # fmt: skip


def test_signed_integers_equal_the_per_value_converter() -> None:
    for convert, zero_is_null in ((convert_int, False), (convert_reference, True)):
        array, failures = convert(NEGATIVE_WIRE)
        failed = {failure.row for failure in failures}
        for row, raw in enumerate(NEGATIVE_WIRE):
            try:
                expected = scalar_int(raw, zero_is_null=zero_is_null)
            except ValueError:
                assert row in failed, raw
                assert array[row].as_py() is None
                continue
            assert row not in failed, raw
            assert array[row].as_py() == expected, raw


def test_a_staged_part_is_a_few_hundred_bytes_a_deal() -> None:
    """Held parts must stay far smaller than payload dicts (several kilobytes a deal)."""
    schema = DealSchema.from_fields(
        {
            "ID": {"type": "integer"},
            "TITLE": {"type": "string"},
            "STAGE_ID": {"type": "crm_status"},
            "OPPORTUNITY": {"type": "double"},
            "DATE_CREATE": {"type": "datetime"},
            "UF_CRM_1": {"type": "enumeration", "isMultiple": True},
        }
    )
    deals = [
        {
            "ID": str(i),
            "TITLE": f"Deal #{i}",
            "STAGE_ID": "C1:NEW",
            "OPPORTUNITY": "1500.00",
            "DATE_CREATE": "2024-08-29T19:00:00-05:00",
            "UF_CRM_1": ["91", "92"],
        }
        for i in range(1, 51)
    ]
    builder = TableBuilder(schema)
    part = builder.convert(deals, list(range(1, 51)))
    assert part.table.nbytes / 50 < 300
    builder.append(part)
    table, errors = builder.finish()
    assert errors == []
    assert table.equals(normalise_deals(deals, schema, ids=list(range(1, 51)))[0])


def _reference_strip_auth(url: str) -> str:
    """strip_auth as it was before its first cut used str.partition."""
    start = url.find("?") + 1
    if not start:
        return url
    if url.startswith("auth=", start):
        end = url.find("&", start)
        if 0 < end < len(url) - 1 and "#" not in url and "auth" not in url[end:]:
            return url[:start] + url[end + 1 :]
    head, rest = url[: start - 1], url[start:]
    query, hash_mark, fragment = rest.partition("#")
    pieces = query.split("&")
    kept = [p for p in pieces if not _is_auth(p)]
    if len(kept) == len(pieces):
        return url
    kept_query = "&".join(kept)
    return head + ("?" + kept_query if kept_query else "") + hash_mark + fragment


URL_PIECES = st.lists(
    st.sampled_from(
        ["/f.php", "?", "auth=", "auth", "tok", "&", "#", "=", "x=1", "aut%68=", "?auth="]
    ),
    max_size=9,
).map("".join)


@settings(max_examples=400, deadline=None)
@given(URL_PIECES)
def test_strip_auth_equals_its_reference(url: str) -> None:
    assert strip_auth(url) == _reference_strip_auth(url)


@pytest.mark.parametrize("run_rows", [1, 7, 4_000])
def test_runs_of_staged_parts_between_typed_ones(
    monkeypatch: pytest.MonkeyPatch, run_rows: int
) -> None:
    """Staged parts are typed in runs; a part typed at once (a JSON number) cuts a run."""
    monkeypatch.setattr(table_module, "_TYPE_ROWS", run_rows)
    rng = random.Random(run_rows)
    deals: list[dict[str, Any]] = []
    for i in range(1, 121):
        deal = {name: rng.choice(["", "7", "N", "2024-08-30", "x", None]) for name in NAMES}
        deal["ID"] = str(i)
        if i % 17 == 0:
            deal[NAMES[0]] = 12.5  # this deal's part is typed at once
        deals.append(deal)
    ids = list(range(1, 121))
    cuts = sorted(rng.sample(range(1, 120), 15))
    expected = normalise_deals(deals, SCHEMA, ids=ids)
    table, errors = _in_parts(deals, ids, cuts, seed=run_rows)
    assert table.equals(expected[0])
    assert errors == expected[1]
