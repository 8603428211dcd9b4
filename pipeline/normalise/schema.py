"""The schema of one entity's records, derived from the portal's own metadata (the `result` of
the entity's fields method, `Entity.fields_method`).

Columns keep the Bitrix24 names. Order is stable: the entity's standard fields in a fixed order
(`Entity.standard_order`, from the REST docs field tables, related fields grouped), other
standard fields by name, `PARENT_ID_*` by entity type id, user fields (`UF_*`) by name, and last
`_extra` (JSON text of keys a record carried that the schema lacks). Each Arrow field carries the
Bitrix24 type and title in its metadata.

`CONTACT_IDS` is listed by the portal but never returned by the get methods (REST docs
`crm-deal-fields.md`, note under the response; `crm-lead-get.md`), so it gets no column (an
always-null column would read as "no contacts"); if a payload ever carries it, it lands in
`_extra`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson
import pyarrow as pa

from pipeline.entity import DEAL, Entity
from pipeline.errors import FatalPortalError
from pipeline.normalise.convert import convert_text, convert_unknown, takes_fast_path
from pipeline.normalise.mapping import Kind, kind_for

EXTRA_COLUMN = "_extra"
#: Converters that keep text: `""` and null differ there, for every other kind both are null.
_TEXT_CONVERTERS = (convert_text, convert_unknown)
SNAPSHOT_FORMAT = "deal-export.schema/1"
#: Schema metadata key of a table whose string-valued columns are not typed yet.
STAGED_KEY = b"deal-export.staged"

#: The deal column order (kept for importers; the order of a run is its entity's).
STANDARD_ORDER: tuple[str, ...] = DEAL.standard_order

#: Fields the deal fields method lists and the get method never sends (see `Entity.omitted`).
OMITTED: Mapping[str, str] = DEAL.omitted

# Arrow field metadata keys.
META_TYPE = b"bitrix24.type"
META_TITLE = b"bitrix24.title"
META_MULTIPLE = b"bitrix24.multiple"


def _ranks(entity: Entity) -> Mapping[str, int]:
    return {name: rank for rank, name in enumerate(entity.standard_order)}


def _order_key(name: str, ranks: Mapping[str, int]) -> tuple[int, int, str]:
    if name in ranks:
        return (0, ranks[name], name)
    if name.startswith("PARENT_ID_"):
        suffix = name.removeprefix("PARENT_ID_")
        return (2, int(suffix) if suffix.isascii() and suffix.isdigit() else -1, name)
    if name.startswith("UF_"):
        return (3, 0, name)
    return (1, 0, name)


@dataclass(frozen=True, slots=True)
class Column:
    """One data column: the Bitrix24 field it comes from and how it is typed."""

    name: str
    bitrix_type: str
    is_multiple: bool
    title: str
    kind: Kind

    @property
    def field(self) -> pa.Field:
        return pa.field(
            self.name,
            self.kind.arrow_type,
            nullable=True,
            metadata={
                META_TYPE: self.bitrix_type.encode(),
                META_TITLE: self.title.encode(),
                META_MULTIPLE: b"true" if self.is_multiple else b"false",
            },
        )

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "bitrix_type": self.bitrix_type,
            "is_multiple": self.is_multiple,
            "arrow_type": str(self.kind.arrow_type),
            "title": self.title,
        }


def _title(name: str, info: Mapping[str, Any]) -> str:
    # User fields often have their code as `title` and the human name in the labels (REST docs
    # `api-reference/crm/companies/crm-company-fields.md` example).
    for key in ("title", "listLabel", "formLabel", "filterLabel"):
        label = info.get(key)
        if isinstance(label, str) and label and label != name:
            return label
    return name


def _enumeration(info: Mapping[str, Any]) -> dict[str, str]:
    items = info.get("items")
    if not isinstance(items, list):
        return {}
    labels: dict[str, str] = {}
    for item in items:
        if isinstance(item, Mapping) and "ID" in item:
            labels[str(item["ID"])] = str(item.get("VALUE", ""))
    return labels


def string_valued(kind: Kind) -> bool:
    """Whether a column of this kind is read out of the payload dicts as Arrow strings."""
    return kind.strings and takes_fast_path(kind.arrow_type)


def _staged_field(column: Column) -> pa.Field:
    """The field of a structured column in a part `TableBuilder` has not typed yet."""
    if column.kind.staging is not None:
        return pa.field(column.name, column.kind.staging.wire_type)
    return column.field


class EntitySchema:
    """The typed schema of one entity for one run. Build it with `from_fields` or
    `from_snapshot`."""

    __slots__ = (
        "_fields",
        "_names",
        "arrow_schema",
        "columns",
        "entity",
        "enumerations",
        "fast_type",
        "fingerprint",
        "groups",
        "known",
        "list_empty_lists",
        "list_empty_text_fields",
        "list_empty_texts",
        "other_positions",
        "staged_groups",
        "staged_schema",
        "string_groups",
        "string_positions",
        "structured_groups",
    )

    def __init__(
        self, fields: Mapping[str, Any], columns: tuple[Column, ...], entity: Entity = DEAL
    ) -> None:
        self._fields = dict(fields)
        self.entity = entity
        self.columns = columns
        self.arrow_schema: pa.Schema = pa.schema(
            [column.field for column in columns] + [pa.field(EXTRA_COLUMN, pa.string())]
        )
        # The string-valued columns, for pyarrow's own dict-to-Arrow conversion (fast path).
        self.fast_type: pa.DataType = pa.struct(
            [pa.field(c.name, pa.string()) for c in columns if string_valued(c.kind)]
        )
        # Column positions by kind: one converter call per kind, not per column, since each
        # call has a fixed cost that dominates for parts of a few dozen records.
        by_kind: dict[Kind, list[int]] = {}
        for position, column in enumerate(columns):
            by_kind.setdefault(column.kind, []).append(position)
        self.groups: tuple[tuple[Kind, tuple[int, ...]], ...] = tuple(
            (kind, tuple(positions)) for kind, positions in by_kind.items()
        )
        # How TableBuilder holds a part: string-valued columns as wire strings, columns with a
        # `Kind.staging` in its wire form (both typed once per chunk), the rest typed per part.
        self.string_groups = tuple(g for g in self.groups if string_valued(g[0]))
        self.staged_groups = tuple(
            g for g in self.groups if g[0].staging is not None and g not in self.string_groups
        )
        self.structured_groups = tuple(
            g for g in self.groups if g not in self.string_groups and g not in self.staged_groups
        )
        self.string_positions = tuple(sorted(p for _, ps in self.string_groups for p in ps))
        self.other_positions = tuple(
            n for n in range(len(columns)) if n not in self.string_positions
        )
        self.staged_schema: pa.Schema = pa.schema(
            # The string-valued columns stay the one struct pyarrow read them into.
            [pa.field("_wire", self.fast_type)]
            + [_staged_field(columns[n]) for n in self.other_positions]
            + [pa.field(EXTRA_COLUMN, pa.string())],
            metadata={STAGED_KEY: b"true"},
        )
        self._names = tuple(column.name for column in columns)
        # User fields whose empty value list methods send as null where the get method sends
        # `""` (single text fields) or `false` (multiple fields): see `pipeline.fetch.listing`.
        user_fields = [(n, c) for n, c in enumerate(columns) if c.name.startswith("UF_")]
        self.list_empty_texts = tuple(
            n for n, c in user_fields if not c.is_multiple and c.kind.convert in _TEXT_CONVERTERS
        )
        self.list_empty_lists = tuple(n for n, c in user_fields if c.is_multiple)
        fast_names = self.fast_type.names
        #: The same single text fields, as indexes into `fast_type`.
        self.list_empty_text_fields = tuple(
            fast_names.index(columns[n].name) for n in self.list_empty_texts
        )
        #: Every column name, for telling a payload's unknown keys.
        self.known = frozenset(self._names)
        self.enumerations: dict[str, dict[str, str]] = {}
        for column in columns:
            info = fields[column.name]
            if column.bitrix_type == "enumeration" and isinstance(info, Mapping):
                self.enumerations[column.name] = _enumeration(info)
        layout = [[c.name, c.bitrix_type, c.is_multiple, str(c.kind.arrow_type)] for c in columns]
        # Titles are left out on purpose: they follow the portal language, not the data layout.
        self.fingerprint: str = hashlib.sha256(orjson.dumps(layout)).hexdigest()

    @classmethod
    def from_fields(cls, fields: Mapping[str, Any], entity: Entity = DEAL) -> EntitySchema:
        """Derive the schema from the `result` of the entity's fields method.

        A malformed entry (no `type`) becomes a text column, so its values are still kept.
        Raises FatalPortalError when the answer is not a field map at all.
        """
        if not isinstance(fields, Mapping) or not fields:
            raise FatalPortalError(
                f"{entity.fields_method} returned no field map; cannot derive the "
                f"{entity.name} schema",
                code="BAD_FIELDS",
            )
        columns: list[Column] = []
        names = [name for name in fields if isinstance(name, str)]
        ranks = _ranks(entity)
        for name in sorted(names, key=lambda n: _order_key(n, ranks)):
            if name in entity.omitted or name == EXTRA_COLUMN:
                continue
            info = fields[name]
            if not isinstance(info, Mapping):
                info = {}
            bitrix_type = info.get("type")
            if not isinstance(bitrix_type, str) or not bitrix_type:
                bitrix_type = "unknown"
            is_multiple = info.get("isMultiple") is True
            columns.append(
                Column(
                    name=name,
                    bitrix_type=bitrix_type,
                    is_multiple=is_multiple,
                    title=_title(name, info),
                    kind=kind_for(name, bitrix_type, is_multiple, entity.type_overrides),
                )
            )
        return cls(fields, tuple(columns), entity)

    @classmethod
    def from_snapshot(cls, snapshot: Mapping[str, Any], entity: Entity = DEAL) -> EntitySchema:
        """Rebuild the schema from a `snapshot()` (its raw fields-method answer)."""
        fields = snapshot.get("fields") if isinstance(snapshot, Mapping) else None
        if not isinstance(fields, Mapping):
            raise ValueError("schema snapshot has no 'fields' map")
        return cls.from_fields(fields, entity)

    @property
    def column_names(self) -> tuple[str, ...]:
        return self._names

    def snapshot(self) -> dict[str, Any]:
        """A JSON-able record of this schema: raw metadata, derived columns, enumeration labels."""
        return {
            "format": SNAPSHOT_FORMAT,
            "fingerprint": self.fingerprint,
            "fields": self._fields,
            "columns": [column.describe() for column in self.columns],
            "extra_column": EXTRA_COLUMN,
            "omitted": {
                name: why for name, why in self.entity.omitted.items() if name in self._fields
            },
            "enumerations": self.enumerations,
        }

    def __repr__(self) -> str:
        return (
            f"EntitySchema({self.entity.name}, {len(self.columns)} columns, "
            f"fingerprint={self.fingerprint[:12]})"
        )


#: The name users import (`from pipeline.normalise import DealSchema`); one class serves every
#: entity.
DealSchema = EntitySchema

__all__ = ["EXTRA_COLUMN", "OMITTED", "STANDARD_ORDER", "Column", "DealSchema", "EntitySchema"]
