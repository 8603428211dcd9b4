"""TableBuilder: a chunk converted part by part equals one normalise_deals call in ID order."""

from __future__ import annotations

import random
from typing import Any

import pyarrow as pa
import pytest

from pipeline.normalise import DealSchema, TableBuilder, normalise_deals
from pipeline.normalise import table as table_module

FIELDS: dict[str, Any] = {
    "ID": {"type": "integer", "isMultiple": False, "title": "ID"},
    "TITLE": {"type": "string", "isMultiple": False, "title": "T"},
    "OPPORTUNITY": {"type": "double", "isMultiple": False, "title": "O"},
    "UF_CRM_1": {"type": "date", "isMultiple": False, "title": "D"},
    "UF_CRM_2": {"type": "integer", "isMultiple": True, "title": "M"},
}


def _deal(i: int) -> dict[str, Any]:
    deal: dict[str, Any] = {"ID": str(i), "TITLE": f"deal {i}", "OPPORTUNITY": f"{i}.50"}
    if i % 7 == 0:
        deal["OPPORTUNITY"] = "ten"  # a record error
    if i % 5 == 0:
        deal["UF_CRM_1"] = "never"  # another one, later in the row
    if i % 3 == 0:
        deal["UF_CRM_2"] = [str(i), "x"]  # a bad list element
    if i % 11 == 0:
        deal["OPPORTUNITY"] = 12.5  # a JSON number: that part takes the per-value path
    if i % 13 == 0:
        deal["NEW_FIELD"] = "kept in _extra"
    return deal


def test_parts_in_any_order_equal_one_sorted_call() -> None:
    schema = DealSchema.from_fields(FIELDS)
    ids = list(range(1, 301))
    expected_table, expected_errors = normalise_deals([_deal(i) for i in ids], schema, ids=ids)
    shuffled = ids[:]
    random.Random(5).shuffle(shuffled)
    builder = TableBuilder(schema)
    for start in range(0, len(shuffled), 64):
        part = sorted(shuffled[start : start + 64])
        builder.add([_deal(i) for i in part], part)
    assert builder.rows == len(ids)
    table, errors = builder.finish()
    assert table.equals(expected_table)
    assert errors == expected_errors
    assert builder.rows == 0


def test_ascending_parts_are_kept_without_a_sort() -> None:
    schema = DealSchema.from_fields(FIELDS)
    builder = TableBuilder(schema)
    for start in (1, 51):
        part = list(range(start, start + 50))
        builder.append(builder.convert([_deal(i) for i in part], part))
    table, _ = builder.finish()
    assert table.column("ID").to_pylist() == list(range(1, 101))


def test_an_empty_builder_finishes_with_an_empty_table() -> None:
    schema = DealSchema.from_fields(FIELDS)
    table, errors = TableBuilder(schema).finish()
    assert table.num_rows == 0
    assert table.schema.equals(schema.arrow_schema)
    assert errors == []


def test_a_grouping_orders_the_rows_by_group_then_id() -> None:
    schema = DealSchema.from_fields(FIELDS)
    ids = list(range(1, 301))
    by_id, expected_errors = normalise_deals([_deal(i) for i in ids], schema, ids=ids)
    shuffled = ids[:]
    random.Random(7).shuffle(shuffled)
    seen: list[list[int]] = []

    def group(rows: pa.Table) -> pa.Array:
        row_ids = rows.column("ID").to_pylist()
        seen.append(row_ids)
        return pa.array([(2 - i % 3) for i in row_ids], pa.int32())

    builder = TableBuilder(schema, group)
    for start in range(0, len(shuffled), 64):
        part = shuffled[start : start + 64]
        builder.add([_deal(i) for i in part], part)
    table, errors = builder.finish()
    # Asked once, with the rows as they were added.
    assert seen == [shuffled]
    wanted = sorted(ids, key=lambda i: (2 - i % 3, i))
    assert table.column("ID").to_pylist() == wanted
    assert table.equals(by_id.take(pa.array([i - 1 for i in wanted])))
    # Record errors stay by ID, whatever the rows' order.
    assert errors == expected_errors
    assert builder.fresh().group is group


def test_a_grouping_that_declines_keeps_id_order_and_ordered_rows_are_not_copied(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    schema = DealSchema.from_fields(FIELDS)
    builder = TableBuilder(schema, lambda rows: None)
    for part in ([5, 6], [1, 2]):
        builder.add([_deal(i) for i in part], part)
    table, _ = builder.finish()
    assert table.column("ID").to_pylist() == [1, 2, 5, 6]
    # Already by group, then ID: kept as they are, not copied into order.
    monkeypatch.setattr(table_module, "_sorted", None)
    builder = TableBuilder(schema, lambda rows: pa.array([0, 0, 1, 1], pa.int32()))
    for part in ([1, 2], [5, 6]):
        builder.add([_deal(i) for i in part], part)
    table, _ = builder.finish()
    assert table.column("ID").to_pylist() == [1, 2, 5, 6]
