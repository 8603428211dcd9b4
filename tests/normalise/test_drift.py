"""Schema drift between two snapshots: added, removed, changed in type."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from pipeline.normalise import DealSchema, SchemaDrift, compare_snapshots


def f(bitrix_type: str, multiple: bool = False) -> dict[str, Any]:
    return {"type": bitrix_type, "isMultiple": multiple, "title": "x"}


OLD: dict[str, Any] = {
    "ID": f("integer"),
    "TITLE": f("string"),
    "UF_CRM_1": f("string"),
    "UF_CRM_2": f("enumeration"),
    "UF_CRM_3": f("date"),
    "PARENT_ID_153": f("crm_entity"),
}


def snap(fields: dict[str, Any]) -> dict[str, Any]:
    return DealSchema.from_fields(fields).snapshot()


def test_identical_snapshots_have_no_drift() -> None:
    drift = compare_snapshots(snap(OLD), snap(copy.deepcopy(OLD)))
    assert drift == SchemaDrift()
    assert not drift
    assert drift.describe() == []


def test_added_removed_and_type_changed() -> None:
    new = copy.deepcopy(OLD)
    del new["PARENT_ID_153"]
    new["UF_CRM_9"] = f("money")
    new["UF_CRM_1"] = f("integer")  # string -> integer
    new["UF_CRM_2"] = f("enumeration", multiple=True)  # single -> multiple
    drift = compare_snapshots(snap(OLD), snap(new))
    assert drift
    assert drift.added == ("UF_CRM_9",)
    assert drift.removed == ("PARENT_ID_153",)
    changed = {c.name: c for c in drift.type_changed}
    assert set(changed) == {"UF_CRM_1", "UF_CRM_2"}
    assert (changed["UF_CRM_1"].old_bitrix_type, changed["UF_CRM_1"].new_bitrix_type) == (
        "string",
        "integer",
    )
    assert (changed["UF_CRM_1"].old_arrow_type, changed["UF_CRM_1"].new_arrow_type) == (
        "string",
        "int64",
    )
    assert changed["UF_CRM_2"].new_bitrix_type == "enumeration[]"
    assert changed["UF_CRM_2"].new_arrow_type == "list<element: int64>"
    lines = drift.describe()
    assert "field added: UF_CRM_9" in lines
    assert "field removed: PARENT_ID_153" in lines
    assert "field type changed: UF_CRM_1: string (string) -> integer (int64)" in lines


def test_same_arrow_type_but_other_bitrix_type_is_a_change() -> None:
    new = copy.deepcopy(OLD)
    new["UF_CRM_1"] = f("url")  # both are text columns, but the meaning changed
    drift = compare_snapshots(snap(OLD), snap(new))
    assert [c.name for c in drift.type_changed] == ["UF_CRM_1"]


def test_snapshot_with_only_raw_fields_is_derived() -> None:
    new = {**OLD, "UF_CRM_4": f("boolean")}
    drift = compare_snapshots({"fields": OLD}, snap(new))
    assert drift.added == ("UF_CRM_4",)
    assert not drift.removed
    assert not drift.type_changed


@pytest.mark.parametrize(
    "bad",
    [[], "x", {"columns": "nope"}, {"columns": [{"no": "name"}]}, {"unrelated": 1}],
)
def test_malformed_snapshot_is_a_clear_error(bad: Any) -> None:
    with pytest.raises(ValueError, match="snapshot"):
        compare_snapshots(bad, snap(OLD))
