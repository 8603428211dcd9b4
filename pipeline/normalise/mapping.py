"""The one table that maps a Bitrix24 field type to an Arrow type and a converter.

Adding a Bitrix24 type is one row in `BITRIX24_TYPES`. Types come from the entity's fields method
(standard fields, REST docs `api-reference/crm/deals/crm-deal-fields.md`,
`api-reference/crm/leads/crm-lead-fields.md`) and
`crm.userfield.types` (user fields, REST docs
`api-reference/crm/universal/user-defined-fields/crm-userfield-types.md`). A type we do not know
is kept as text (JSON text for objects and arrays), losslessly except that URLs in it lose their
`auth` parameter (`convert.strip_auth`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import pyarrow as pa

from pipeline.normalise.convert import (
    DECIMAL_TYPE,
    FILE_TYPE,
    FLAG_STAGING,
    MONEY_TYPE,
    MULTIFIELD_TYPE,
    TIMESTAMP_TYPE,
    Converter,
    Staging,
    convert_bool,
    convert_date,
    convert_datetime,
    convert_decimal,
    convert_file,
    convert_flag,
    convert_float,
    convert_int,
    convert_money,
    convert_multifield,
    convert_reference,
    convert_text,
    convert_unknown,
    list_of,
    list_staging,
    list_type,
)


@dataclass(frozen=True, slots=True)
class Kind:
    """How one column is typed: its Arrow type and the converter that produces it; `staging`
    for a structured column that `TableBuilder` may hold in its wire form until a chunk is
    complete (string-valued columns are held as strings anyway)."""

    arrow_type: pa.DataType
    convert: Converter
    staging: Staging | None = None
    #: Whether the wire values are strings, so that pyarrow may read them out of the payload
    #: dicts as strings (`convert.takes_fast_path`); a column that is not is typed per part.
    strings: bool = True


INTEGER = Kind(pa.int64(), convert_int)
# A reference to another object; "0" means "not set" (inferred from the REST docs example in
# `api-reference/crm/leads/crm-lead-list.md`, `"COMPANY_ID": "0"`).
REFERENCE = Kind(pa.int64(), convert_reference)
DECIMAL = Kind(DECIMAL_TYPE, convert_decimal)
FLOAT = Kind(pa.float64(), convert_float)
BOOLEAN = Kind(pa.bool_(), convert_bool)
# A boolean user field: `"1"`/`"0"` from the get method, JSON `true`/`false` from list methods
# (REST docs `api-reference/crm/leads/crm-lead-list.md` example), so not a string column.
FLAG = Kind(pa.bool_(), convert_flag, FLAG_STAGING, strings=False)
DATE = Kind(pa.date32(), convert_date)
DATETIME = Kind(TIMESTAMP_TYPE, convert_datetime)
TEXT = Kind(pa.string(), convert_text)
MONEY = Kind(MONEY_TYPE, convert_money)
FILE = Kind(FILE_TYPE, convert_file)
# A lead's (or contact's) phone, e-mail, site, messenger: `{ID, VALUE_TYPE, VALUE, TYPE_ID}`.
MULTIFIELD = Kind(MULTIFIELD_TYPE, convert_multifield)
# Text too, but a type we do not know may be server-made and hold a tokenised URL.
UNKNOWN = Kind(pa.string(), convert_unknown)

BITRIX24_TYPES: dict[str, Kind] = {
    "integer": INTEGER,
    # CATEGORY_ID "0" is the default pipeline, a real value: not a reference that can be unset.
    "crm_category": INTEGER,
    # Enumeration values are option IDs; labels live in the schema snapshot.
    "enumeration": INTEGER,
    "user": REFERENCE,
    "employee": REFERENCE,
    "crm_company": REFERENCE,
    "crm_contact": REFERENCE,
    "crm_lead": REFERENCE,
    "crm_quote": REFERENCE,
    "crm_entity": REFERENCE,
    "double": FLOAT,
    "char": BOOLEAN,
    "boolean": FLAG,
    "date": DATE,
    "datetime": DATETIME,
    "money": MONEY,
    "file": FILE,
    "string": TEXT,
    "url": TEXT,
    "address": TEXT,
    "location": TEXT,
    "crm_status": TEXT,
    "crm_currency": TEXT,
    "crm": TEXT,  # bindings such as "D_1", "CO_3", "T80_6"
    "iblock_section": TEXT,
    "iblock_element": TEXT,
    # REST docs `api-reference/crm/data-types.md` (`crm_multifield`), example answer in
    # `api-reference/crm/leads/crm-lead-get.md` (`"PHONE": [{"ID": "11658", ...}]`).
    "crm_multifield": MULTIFIELD,
}

#: The kinds an entity's `type_overrides` may name (`pipeline.entity.Entity.type_overrides`).
OVERRIDE_KINDS: dict[str, Kind] = {"decimal": DECIMAL}

# Money amounts are typed `double` by the fields methods but arrive as decimal strings (REST docs
# `crm-deal-get.md` example, `"OPPORTUNITY": "1000000.00"`) and must sum exactly: the deal
# overrides, for callers that pass none.
FIELD_KINDS: dict[str, Kind] = {
    "OPPORTUNITY": DECIMAL,
    "TAX_VALUE": DECIMAL,
}

FALLBACK = UNKNOWN

# One list kind per element kind, so every multiple field of one type shares a converter and the
# normaliser can convert those columns together, in one call.
_LIST_KINDS: dict[Kind, Kind] = {}


def kind_for(
    name: str, bitrix_type: str, is_multiple: bool, overrides: Mapping[str, str] | None = None
) -> Kind:
    """The column kind for one fields-method entry; `overrides` maps a field name to a kind of
    `OVERRIDE_KINDS` (default: the deal's, `FIELD_KINDS`)."""
    if overrides is None:
        forced = FIELD_KINDS.get(name)
    else:
        forced = OVERRIDE_KINDS.get(overrides[name]) if name in overrides else None
    base = forced or BITRIX24_TYPES.get(bitrix_type, FALLBACK)
    if not is_multiple:
        return base
    if base not in _LIST_KINDS:
        _LIST_KINDS[base] = Kind(
            list_type(base.arrow_type),
            list_of(base.convert, base.arrow_type),
            list_staging(base.convert, base.arrow_type),
        )
    return _LIST_KINDS[base]


__all__ = [
    "BITRIX24_TYPES",
    "FALLBACK",
    "FIELD_KINDS",
    "OVERRIDE_KINDS",
    "UNKNOWN",
    "Kind",
    "kind_for",
]
