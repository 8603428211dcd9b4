"""List methods' forms of user fields read as the get method's (pipeline.fetch.listing).

`crm.deal.list` rows show an empty user field as null where `crm.deal.get` sends `""` (single)
or `false` (multiple), boolean user fields as JSON `true`/`false` where get sends `"1"`/`"0"`,
and an empty single file field as null where get leaves the key out. The normaliser takes list
rows as they come, so for every value a row of either form must give the same typed row and the
same record errors (same field, same reason, same raw value).
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pytest

from pipeline.normalise import DealSchema, TableBuilder, normalise_deals
from pipeline.simulator.listform import list_form

#: name -> (Bitrix24 type, multiple): every UF type, single and multiple, plus one unknown type.
FIELDS: dict[str, tuple[str, bool]] = {
    "UF_B": ("boolean", False),
    # Impossible on a portal (REST docs `crm-deal-userfield-add.md`: boolean fields cannot be
    # multiple), but the rules must hold for it too, except for `false` (see `_rows`).
    "UF_MB": ("boolean", True),
    "UF_S": ("string", False),
    "UF_M": ("string", True),
    "UF_F": ("file", False),
    "UF_MF": ("file", True),
    "UF_I": ("integer", False),
    "UF_MI": ("integer", True),
    "UF_D": ("date", False),
    "UF_MD": ("date", True),
    "UF_H": ("hlblock", False),
    "UF_MH": ("hlblock", True),
    "UF_E": ("employee", False),
    "UF_MO": ("money", False),
}
VALUES: list[Any] = [
    None, True, False, "", "1", "0", "Y", "x", 0, 1, 2.5, [], ["a"], ["1", "x"], [True],
    {"id": 1, "showUrl": "/s?auth=t&a=1", "downloadUrl": "/d?auth=t&a=1"}, {"id": "q"},
    "2024-08-30T02:00:00+02:00",
]  # fmt: skip


def _schema() -> DealSchema:
    fields: dict[str, Any] = {
        "ID": {"type": "integer", "isMultiple": False},
        "TITLE": {"type": "string", "isMultiple": False},
    }
    for name, (bitrix_type, multiple) in FIELDS.items():
        fields[name] = {"type": bitrix_type, "isMultiple": multiple, "isDynamic": True}
    return DealSchema.from_fields(fields)


def get_form(row: dict[str, Any]) -> dict[str, Any]:
    """The rewrite the list strategy used to make (a list row into get's form), as the spec."""
    out = dict(row)
    for name, (bitrix_type, multiple) in FIELDS.items():
        if name not in out:
            continue
        value = out[name]
        if value is None:
            if multiple:
                out[name] = False
            elif bitrix_type == "file":
                del out[name]
            else:
                out[name] = ""
        elif bitrix_type == "boolean" and isinstance(value, bool):
            out[name] = "1" if value else "0"
    return out


def _rows(complete: bool) -> list[dict[str, Any]]:
    """One row per (field, value); `complete`: every column present, as in a list answer."""
    rows: list[dict[str, Any]] = []
    for name in FIELDS:
        for value in VALUES:
            if name == "UF_MB" and value is False:
                # The old rewrite took it for a boolean value ("0"); the normaliser, knowing
                # no form, for a multiple field's empty form, as for every other type.
                continue
            row: dict[str, Any] = {"ID": str(len(rows) + 1), "TITLE": None}
            if complete:
                row.update(dict.fromkeys(FIELDS))
            row[name] = value
            rows.append(row)
    return rows


def _errors(errors: list[Any]) -> list[tuple[Any, ...]]:
    return [(e.id, e.field, e.reason, e.raw_value) for e in errors]


def _by_builder(rows: list[dict[str, Any]], schema: DealSchema, part: int) -> Any:
    builder = TableBuilder(schema)
    for start in range(0, len(rows), part):
        some = rows[start : start + part]
        builder.add(some, [int(r["ID"]) for r in some])
    return builder.finish()


@pytest.mark.parametrize("complete", [True, False], ids=["complete", "sparse"])
@pytest.mark.parametrize("path", ["normalise_deals", "builder-50", "builder-all"])
def test_list_rows_normalise_as_their_get_form(complete: bool, path: str) -> None:
    schema = _schema()
    listed = _rows(complete)
    got = [get_form(row) for row in listed]
    if path == "normalise_deals":
        by_list, by_get = normalise_deals(listed, schema), normalise_deals(got, schema)
    else:
        part = 50 if path == "builder-50" else len(listed)
        by_list, by_get = _by_builder(listed, schema, part), _by_builder(got, schema, part)
    assert by_list[0].schema == by_get[0].schema
    for name in schema.column_names:
        assert by_list[0].column(name).to_pylist() == by_get[0].column(name).to_pylist(), name
    assert by_list[0].equals(by_get[0])
    assert _errors(by_list[1]) == _errors(by_get[1])


def test_the_simulators_list_form_normalises_as_its_get_form() -> None:
    """The other direction: get values through the simulator's list form (`list_form`)."""
    schema = _schema()
    file = {"id": 5, "showUrl": "/s", "downloadUrl": "/d?auth=&a=1"}
    # What get sends: a multiple field's empty is false, "" or []; a single one's "".
    singles: list[Any] = ["", "1", "0", "7", "x", "2024-08-30T02:00:00+02:00"]
    multiples: list[Any] = [False, "", [], ["a", "b"], ["7"]]
    got: list[dict[str, Any]] = []
    listed: list[dict[str, Any]] = []
    for name, (bitrix_type, multiple) in FIELDS.items():
        values = multiples if multiple else singles
        if bitrix_type == "file":
            values = [False, [], [file]] if multiple else [file]  # no file: the key is absent
        for value in values:
            if bitrix_type == "boolean" and value not in ("", "1", "0", False):
                continue  # list methods show a stored integer: only 1/0 exist
            deal_id = str(len(got) + 1)
            got.append({"ID": deal_id, name: value})
            listed.append({"ID": deal_id, name: list_form(value, bitrix_type, multiple, False)})
    by_get, by_list = normalise_deals(got, schema), normalise_deals(listed, schema)
    assert by_list[0].equals(by_get[0])
    assert _errors(by_list[1]) == _errors(by_get[1])


def test_a_column_of_json_booleans_is_read_as_it_is() -> None:
    schema = _schema()
    rows = [{"ID": "1", "UF_B": True}, {"ID": "2", "UF_B": False}, {"ID": "3", "UF_B": None}]
    table, errors = normalise_deals(rows, schema)
    assert table.column("UF_B").to_pylist() == [True, False, None]
    assert table.schema.field("UF_B").type == pa.bool_()
    assert errors == []


def test_complete_rows_of_a_one_string_column_schema() -> None:
    # Rows carrying every column take the by-position struct conversion; with one string
    # column its tuples have one value.
    schema = DealSchema.from_fields({"ID": {"type": "integer", "isMultiple": False}})
    builder = TableBuilder(schema)
    builder.add([{"ID": "2"}, {"ID": "1"}], [2, 1])
    table, errors = builder.finish()
    assert table.column("ID").to_pylist() == [1, 2]
    assert errors == []


@pytest.mark.parametrize(
    "values",
    [["1", "0", "", "x"], [True, False, None], ["1", True, False, "0", "Y", None]],
    ids=["get", "list", "both"],
)
def test_a_boolean_user_field_staged_in_parts_types_as_at_once(values: list[Any]) -> None:
    schema = _schema()
    rows = [{"ID": str(n + 1), "UF_B": value} for n, value in enumerate(values)]
    ids = [int(r["ID"]) for r in rows]
    builder = TableBuilder(schema)
    for n in range(len(rows)):
        builder.add(rows[n : n + 1], ids[n : n + 1])
    staged = builder.finish()
    at_once = normalise_deals(rows, schema)
    assert staged[0].equals(at_once[0])
    assert _errors(staged[1]) == _errors(at_once[1])
