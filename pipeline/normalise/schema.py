"""The deal schema, derived from the portal's own metadata (the `result` of `crm.deal.fields`).

Columns keep the Bitrix24 names. Order is stable: the standard fields in a fixed order (those of
REST docs `api-reference/crm/deals/crm-deal-fields.md`, related fields grouped), other standard
fields by name, `PARENT_ID_*` by entity type id, user fields (`UF_*`) by name, and last `_extra`
(JSON text of keys a deal carried that the schema lacks). Each Arrow field carries the Bitrix24
type and title in its metadata.

`CONTACT_IDS` is listed by the portal but never returned by `crm.deal.get` (REST docs
`crm-deal-fields.md`, note under the response), so it gets no column (an always-null column would
read as "no contacts"); if a payload ever carries it, it lands in `_extra`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson
import pyarrow as pa

from pipeline.errors import FatalPortalError
from pipeline.normalise.convert import takes_fast_path
from pipeline.normalise.mapping import Kind, kind_for

EXTRA_COLUMN = "_extra"
SNAPSHOT_FORMAT = "deal-export.schema/1"

# The fields of REST docs `crm-deal-fields.md`, related fields grouped.
STANDARD_ORDER: tuple[str, ...] = (
    "ID",
    "TITLE",
    "TYPE_ID",
    "CATEGORY_ID",
    "STAGE_ID",
    "STAGE_SEMANTIC_ID",
    "IS_NEW",
    "IS_RECURRING",
    "IS_RETURN_CUSTOMER",
    "IS_REPEATED_APPROACH",
    "PROBABILITY",
    "CURRENCY_ID",
    "OPPORTUNITY",
    "IS_MANUAL_OPPORTUNITY",
    "TAX_VALUE",
    "COMPANY_ID",
    "CONTACT_ID",
    "CONTACT_IDS",
    "QUOTE_ID",
    "LEAD_ID",
    "BEGINDATE",
    "CLOSEDATE",
    "OPENED",
    "CLOSED",
    "COMMENTS",
    "ASSIGNED_BY_ID",
    "CREATED_BY_ID",
    "MODIFY_BY_ID",
    "MOVED_BY_ID",
    "LAST_ACTIVITY_BY",
    "DATE_CREATE",
    "DATE_MODIFY",
    "MOVED_TIME",
    "LAST_ACTIVITY_TIME",
    "SOURCE_ID",
    "SOURCE_DESCRIPTION",
    "ADDITIONAL_INFO",
    "ORIGINATOR_ID",
    "ORIGIN_ID",
    "UTM_SOURCE",
    "UTM_MEDIUM",
    "UTM_CAMPAIGN",
    "UTM_CONTENT",
    "UTM_TERM",
    "LOCATION_ID",
)
_STANDARD_RANK = {name: rank for rank, name in enumerate(STANDARD_ORDER)}

# Listed by crm.deal.fields, never sent by crm.deal.get (REST docs `crm-deal-fields.md`).
OMITTED: Mapping[str, str] = {
    "CONTACT_IDS": "not returned by crm.deal.get (use crm.deal.contact.items.get)",
}

# Arrow field metadata keys.
META_TYPE = b"bitrix24.type"
META_TITLE = b"bitrix24.title"
META_MULTIPLE = b"bitrix24.multiple"


def _order_key(name: str) -> tuple[int, int, str]:
    if name in _STANDARD_RANK:
        return (0, _STANDARD_RANK[name], name)
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


class DealSchema:
    """The typed deal schema for one run. Build it with `from_fields` or `from_snapshot`."""

    __slots__ = ("_fields", "arrow_schema", "columns", "enumerations", "fast_type", "fingerprint")

    def __init__(self, fields: Mapping[str, Any], columns: tuple[Column, ...]) -> None:
        self._fields = dict(fields)
        self.columns = columns
        self.arrow_schema: pa.Schema = pa.schema(
            [column.field for column in columns] + [pa.field(EXTRA_COLUMN, pa.string())]
        )
        # The string-valued columns, for pyarrow's own dict-to-Arrow conversion (fast path).
        self.fast_type: pa.DataType = pa.struct(
            [pa.field(c.name, pa.string()) for c in columns if takes_fast_path(c.kind.arrow_type)]
        )
        self.enumerations: dict[str, dict[str, str]] = {}
        for column in columns:
            info = fields[column.name]
            if column.bitrix_type == "enumeration" and isinstance(info, Mapping):
                self.enumerations[column.name] = _enumeration(info)
        layout = [[c.name, c.bitrix_type, c.is_multiple, str(c.kind.arrow_type)] for c in columns]
        # Titles are left out on purpose: they follow the portal language, not the data layout.
        self.fingerprint: str = hashlib.sha256(orjson.dumps(layout)).hexdigest()

    @classmethod
    def from_fields(cls, fields: Mapping[str, Any]) -> DealSchema:
        """Derive the schema from the `result` of `crm.deal.fields`.

        A malformed entry (no `type`) becomes a text column, so its values are still kept.
        Raises FatalPortalError when the answer is not a field map at all.
        """
        if not isinstance(fields, Mapping) or not fields:
            raise FatalPortalError(
                "crm.deal.fields returned no field map; cannot derive the deal schema",
                code="BAD_FIELDS",
            )
        columns: list[Column] = []
        names = [name for name in fields if isinstance(name, str)]
        for name in sorted(names, key=_order_key):
            if name in OMITTED or name == EXTRA_COLUMN:
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
                    kind=kind_for(name, bitrix_type, is_multiple),
                )
            )
        return cls(fields, tuple(columns))

    @classmethod
    def from_snapshot(cls, snapshot: Mapping[str, Any]) -> DealSchema:
        """Rebuild the schema from a `snapshot()` (its raw `crm.deal.fields` answer)."""
        fields = snapshot.get("fields") if isinstance(snapshot, Mapping) else None
        if not isinstance(fields, Mapping):
            raise ValueError("schema snapshot has no 'fields' map")
        return cls.from_fields(fields)

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(column.name for column in self.columns)

    def snapshot(self) -> dict[str, Any]:
        """A JSON-able record of this schema: raw metadata, derived columns, enumeration labels."""
        return {
            "format": SNAPSHOT_FORMAT,
            "fingerprint": self.fingerprint,
            "fields": self._fields,
            "columns": [column.describe() for column in self.columns],
            "extra_column": EXTRA_COLUMN,
            "omitted": {name: why for name, why in OMITTED.items() if name in self._fields},
            "enumerations": self.enumerations,
        }

    def __repr__(self) -> str:
        return f"DealSchema({len(self.columns)} columns, fingerprint={self.fingerprint[:12]})"


__all__ = ["EXTRA_COLUMN", "OMITTED", "STANDARD_ORDER", "Column", "DealSchema"]
