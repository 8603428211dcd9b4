"""How list methods show a record: which fields a `select` yields and in what form. Pure.

Both list and get run crm `restservice.php` `externalizeFields`, so dates, datetimes and file
objects (token in the URLs included) look the same; what differs is how user field values reach
it (`list_form`). A row depends field by field on the record's get form, which is what lets
`Portal.list_row` build rows from a template's row plus the record's own values.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

#: name -> (is user field, is multiple, UF type), in `crm.<entity>.fields` order.
FieldsMeta = Mapping[str, tuple[bool, bool, str]]


class ListPlan:
    """The fields rows of one `select` carry, in `crm.<entity>.fields` order: `*` is every
    standard field and `UF_*` every user field, both without multiple ones, which come only
    when named (REST docs `crm-deal-list.md`, `select`); `CONTACT_IDS` never (REST docs
    `crm-deal-fields.md`); the ID always; unknown names add nothing (crm `restservice.php`
    `externalizeFields` drops fields it does not describe)."""

    __slots__ = ("full", "key", "names", "stored_empty_lists", "user_fields", "wanted")

    def __init__(self, fields_meta: FieldsMeta, select: list[str], stored_empty_lists: bool):
        star, uf_star = "*" in select, "UF_*" in select
        asked = set(select)
        names: list[str] = []
        user_fields: dict[str, tuple[str, bool]] = {}
        for name, (is_uf, multiple, uf_type) in fields_meta.items():
            if name == "CONTACT_IDS":
                continue
            if name == "ID" or name in asked or (not multiple and (uf_star if is_uf else star)):
                names.append(name)
                if is_uf:
                    user_fields[name] = (uf_type, multiple)
        self.names = tuple(names)
        self.wanted = frozenset(names)
        self.user_fields = user_fields
        self.stored_empty_lists = stored_empty_lists
        #: Whether rows carry data beyond the ID (what a poison deal spoils, what rows cost).
        self.full = any(name != "ID" for name in names)
        #: Identifies the plan in caches of rows.
        self.key = (self.names, stored_empty_lists)

    def value(self, name: str, value: Any) -> Any:
        """The list form of field `name` (in the plan) whose get form is `value`."""
        shown = self.user_fields.get(name)
        if shown is None:
            return value
        return list_form(value, shown[0], shown[1], self.stored_empty_lists)

    def row(self, data: Mapping[str, Any]) -> dict[str, Any]:
        """A record's list row from its get form. An absent standard field shows as null; so
        does an absent user field (an empty single file UF: absent from get, null in list)."""
        row: dict[str, Any] = dict.fromkeys(self.names)
        for name in self.names:
            if name in data:
                row[name] = self.value(name, data[name])
        return row


def list_form(value: Any, uf_type: str, multiple: bool, stored_empty_lists: bool) -> Any:
    """A user field's list value from its `crm.deal.get` value.

    get reads UFs through main's `CUserTypeManager::GetUserFields` (a NULL multiple column
    unserialises to `false`) and crm `innerGet` turns a missing value into `""`; list reads the
    joined columns through main's `CDBResult::Fetch`, which unserialises a multiple column only
    when it is set, and adds no `?? ''`: an empty value stays NULL, JSON `null` (REST docs
    `crm-lead-list.md` example). Then `externalizeFields` runs for both: `CRestUtil::ConvertDate`
    and `ConvertDateTime` give `""` for any empty date/datetime (the `crm-lead-list.md`
    example shows `"BIRTHDATE": ""`), and `tryExternalizeFileField` leaves a NULL file column
    alone. Booleans are stored as integers and list methods show them as JSON `true`/`false`
    (REST docs `crm-lead-list.md` example; main `booleantype.php`).
    """
    if uf_type in ("date", "datetime"):
        return "" if value is False else value
    if multiple:
        if value is False or value == "":
            return None
        if value == [] and uf_type == "file" and not stored_empty_lists:
            return None
        return value
    if value == "":
        return None
    if uf_type == "boolean":
        return value == "1"
    return value


__all__ = ["FieldsMeta", "ListPlan", "list_form"]
