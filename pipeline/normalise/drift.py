"""Schema drift between two schema snapshots (`EntitySchema.snapshot()`), e.g. last run vs this run.

A column's type is its Bitrix24 type, multiplicity and derived Arrow type; any difference is a
type change, reported so the writer never coerces new values into the old column type.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pipeline.normalise.schema import EntitySchema


@dataclass(frozen=True, slots=True)
class TypeChange:
    """One column whose type differs between the snapshots."""

    name: str
    old_bitrix_type: str
    new_bitrix_type: str
    old_arrow_type: str
    new_arrow_type: str

    def __str__(self) -> str:
        return (
            f"{self.name}: {self.old_bitrix_type} ({self.old_arrow_type}) -> "
            f"{self.new_bitrix_type} ({self.new_arrow_type})"
        )


@dataclass(frozen=True, slots=True)
class SchemaDrift:
    """Columns added, removed and changed in type, each sorted by name."""

    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    type_changed: tuple[TypeChange, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.type_changed)

    def describe(self) -> list[str]:
        """One human line per change, for the run summary."""
        lines = [f"field added: {name}" for name in self.added]
        lines += [f"field removed: {name}" for name in self.removed]
        lines += [f"field type changed: {change}" for change in self.type_changed]
        return lines


def _columns(snapshot: Mapping[str, Any], which: str) -> dict[str, tuple[str, str]]:
    if not isinstance(snapshot, Mapping):
        raise ValueError(f"{which} schema snapshot is not a JSON object")
    columns = snapshot.get("columns")
    if columns is None:
        # A snapshot with only the raw fields-method answer: derive the columns from it.
        columns = EntitySchema.from_snapshot(snapshot).snapshot()["columns"]
    if not isinstance(columns, list):
        raise ValueError(f"{which} schema snapshot has no 'columns' list")
    out: dict[str, tuple[str, str]] = {}
    for column in columns:
        if not isinstance(column, Mapping) or not isinstance(column.get("name"), str):
            raise ValueError(f"{which} schema snapshot has a malformed column entry")
        bitrix_type = str(column.get("bitrix_type"))
        if column.get("is_multiple") is True:
            bitrix_type += "[]"
        out[column["name"]] = (bitrix_type, str(column.get("arrow_type")))
    return out


def compare_snapshots(old: Mapping[str, Any], new: Mapping[str, Any]) -> SchemaDrift:
    """What changed from `old` to `new`. Raises ValueError for a snapshot that is not one."""
    before = _columns(old, "old")
    after = _columns(new, "new")
    changed = tuple(
        TypeChange(name, before[name][0], after[name][0], before[name][1], after[name][1])
        for name in sorted(before.keys() & after.keys())
        if before[name] != after[name]
    )
    return SchemaDrift(
        added=tuple(sorted(after.keys() - before.keys())),
        removed=tuple(sorted(before.keys() - after.keys())),
        type_changed=changed,
    )


__all__ = ["SchemaDrift", "TypeChange", "compare_snapshots"]
