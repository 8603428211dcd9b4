"""Empty multiple fields in the portal's three wire forms, and access tokens inside file URLs.

An empty *multiple* user field reaches `crm.deal.get` as `false` (a NULL column unserialised by
main's `CUserTypeManager::GetUserFields`), `""` (no UF row; every empty date/datetime through
`CRestUtil::ConvertDate`) or `[]` (a stored empty array; every empty file through crm
`tryExternalizeFileField`). All three must be the same empty list, with no record error.
File URLs carry the caller's token as `auth=` (crm `restservice.php` `externalizeFile`); no
stored value, `_extra` text or record error may keep it.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from pipeline.normalise import EXTRA_COLUMN, DealSchema, normalise_deals
from pipeline.normalise.convert import strip_auth
from pipeline.normalise.mapping import BITRIX24_TYPES

from .test_types import ABSENT, run_one

#: Every type the mapping knows plus one it does not (kept as text), each as a multiple field.
MULTIPLE_TYPES = [*sorted(BITRIX24_TYPES), "hlblock"]
EMPTY_FORMS = {"false": False, "empty_string": "", "empty_list": []}
#: One well-formed value per type, so a chunk mixes empty and filled lists.
FILLED: dict[str, Any] = {
    "integer": "7", "crm_category": "1", "enumeration": "79", "user": "3", "employee": "3",
    "crm_company": "9", "crm_contact": "84", "crm_lead": "4", "crm_quote": "2",
    "crm_entity": "22", "double": "1.5", "char": "Y", "boolean": "1",
    "date": "2024-08-30T02:00:00+02:00", "datetime": "2024-08-30T14:29:00+02:00",
    "money": "300|RUB", "file": {"id": 5, "showUrl": "/s?fileId=5", "downloadUrl": "/d?fileId=5"},
    "string": "тег", "url": "https://example.com/a", "address": "Москва|55.7;37.6",
    "location": "12", "crm_status": "CALL", "crm_currency": "EUR", "crm": "CO_3",
    "iblock_section": "4", "iblock_element": "500", "hlblock": "8",
    "crm_multifield": {"ID": "11658", "VALUE_TYPE": "WORK", "VALUE": "+7 900", "TYPE_ID": "PHONE"},
}  # fmt: skip
TOKEN = "0f1e2d3c4b5a69788796a5b4c3d2e1f0"
FILE_PATH = "/bitrix/components/bitrix/crm.deal.show/show_file.php"
FILE_QUERY = "ownerId=410&fieldName=UF_CRM_1&dynamic=Y&fileId=37375"


def _field(name: str, bitrix_type: str) -> dict[str, Any]:
    return {"type": bitrix_type, "isMultiple": True, "isDynamic": True, "title": name}


def test_every_type_is_covered() -> None:
    assert set(FILLED) == set(MULTIPLE_TYPES)


@pytest.mark.parametrize("form", sorted(EMPTY_FORMS))
@pytest.mark.parametrize("bitrix_type", MULTIPLE_TYPES)
def test_each_empty_form_is_an_empty_list_without_error(bitrix_type: str, form: str) -> None:
    value, errors = run_one(bitrix_type, EMPTY_FORMS[form], multiple=True)
    assert value == []
    assert errors == []


@pytest.mark.parametrize("bitrix_type", MULTIPLE_TYPES)
def test_null_is_a_list_methods_empty_and_absent_stays_null(bitrix_type: str) -> None:
    """List methods send an empty multiple user field as null where the get method sends one
    of the three forms above (pipeline.fetch.listing): the same empty list. An absent key means
    the portal said nothing about the field: that is not "no values"; nor is a standard
    field's null."""
    assert run_one(bitrix_type, None, multiple=True) == ([], [])
    assert run_one(bitrix_type, ABSENT, multiple=True) == (None, [])
    assert run_one(bitrix_type, None, multiple=True, name="PARENT_LIST") == (None, [])


def test_truth_table_in_one_chunk() -> None:
    """All types x all forms in one chunk (the column-wise path), mixed with filled lists."""
    names = {t: f"UF_CRM_{n:02d}" for n, t in enumerate(MULTIPLE_TYPES)}
    fields = {"ID": {"type": "integer", "isMultiple": False, "title": "ID"}}
    fields.update({name: _field(name, t) for t, name in names.items()})
    schema = DealSchema.from_fields(fields)
    wires = [*EMPTY_FORMS.values(), "filled", None, ABSENT]
    deals = []
    for row, wire in enumerate(wires):
        deal: dict[str, Any] = {"ID": str(row + 1)}
        for t, name in names.items():
            if wire is not ABSENT:
                deal[name] = [FILLED[t]] if wire == "filled" else wire
        deals.append(deal)
    table, errors = normalise_deals(deals, schema)
    assert errors == []
    for t, name in names.items():
        column = table.column(name).to_pylist()
        assert column[:3] == [[], [], []], (t, column)
        filled = column[3]
        assert filled is not None, t
        assert len(filled) == 1, t
        assert filled[0] is not None, t
        assert column[4] == [], t  # a list method's empty
        assert column[5] is None, t


def test_false_for_a_single_field_is_a_value_only_for_booleans() -> None:
    """Only multiple fields are unserialised to `false`; a single UF's empty is `""` in
    `crm.deal.get` (`$ufData['VALUE'] ?? ''`). A JSON `false` in a single field is therefore a
    real boolean (list methods send booleans that way) or bad data, as before."""
    assert run_one("boolean", False) == (False, [])
    value, errors = run_one("integer", False)
    assert value is None
    assert len(errors) == 1


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (f"{FILE_PATH}?auth={TOKEN}&{FILE_QUERY}", f"{FILE_PATH}?{FILE_QUERY}"),
        (f"{FILE_PATH}?auth=&{FILE_QUERY}", f"{FILE_PATH}?{FILE_QUERY}"),  # webhook: empty
        (f"{FILE_PATH}?{FILE_QUERY}&auth={TOKEN}", f"{FILE_PATH}?{FILE_QUERY}"),
        (f"{FILE_PATH}?ownerId=1&auth={TOKEN}&fileId=2", f"{FILE_PATH}?ownerId=1&fileId=2"),
        (f"{FILE_PATH}?auth={TOKEN}", FILE_PATH),
        (f"{FILE_PATH}?auth={TOKEN}&", FILE_PATH),
        (f"{FILE_PATH}?auth={TOKEN}&a=1&auth=again", f"{FILE_PATH}?a=1"),
        (f"{FILE_PATH}?auth={TOKEN}&fileId=2#auth", f"{FILE_PATH}?fileId=2#auth"),
        (f"{FILE_PATH}?auth", FILE_PATH),
        (f"{FILE_PATH}?auth={TOKEN}#top", f"{FILE_PATH}#top"),
        (f"{FILE_PATH}?aut%68={TOKEN}&fileId=2", f"{FILE_PATH}?fileId=2"),  # PHP decodes names
        (f"https://p.bitrix24.ru{FILE_PATH}?auth={TOKEN}&b=2&a=1",
         f"https://p.bitrix24.ru{FILE_PATH}?b=2&a=1"),  # order kept
        (f"{FILE_PATH}?{FILE_QUERY}", f"{FILE_PATH}?{FILE_QUERY}"),
        ("/x?authx=1&xauth=2&a=auth", "/x?authx=1&xauth=2&a=auth"),
        ("/x?a=1&&b=%20", "/x?a=1&&b=%20"),
        ("/no/query", "/no/query"),
    ],
)  # fmt: skip
def test_strip_auth(url: str, expected: str) -> None:
    assert strip_auth(url) == expected


def _file(n: int) -> dict[str, Any]:
    query = FILE_QUERY.replace("37375", str(n))
    return {
        "id": n,
        "showUrl": f"{FILE_PATH}?{query}",
        "downloadUrl": f"{FILE_PATH}?auth={TOKEN}&{query}",
    }


def _stored(n: int) -> dict[str, Any]:
    query = FILE_QUERY.replace("37375", str(n))
    return {"id": n, "showUrl": f"{FILE_PATH}?{query}", "downloadUrl": f"{FILE_PATH}?{query}"}


def test_single_and_multiple_file_urls_lose_the_token() -> None:
    assert run_one("file", _file(1)) == (_stored(1), [])
    assert run_one("file", [_file(1), _file(2)], multiple=True) == ([_stored(1), _stored(2)], [])


def test_unknown_types_lose_the_token_in_json_text_and_urls() -> None:
    # A disk file object as crm `tryExternalizeDiskFileField` builds it (VIEW_PARAMS auth).
    disk = {"id": 9, "url": f"https://p.bitrix24.ru/disk/showFile/9/?auth={TOKEN}&ncc=1"}
    value, errors = run_one("diskfile", disk)
    assert errors == []
    assert TOKEN not in value
    assert orjson.loads(value) == {"id": 9, "url": "https://p.bitrix24.ru/disk/showFile/9/?ncc=1"}
    value, _ = run_one("diskfile", [disk], multiple=True)
    assert TOKEN not in value[0]
    value, _ = run_one("diskfile", f"/disk/showFile/9/?auth={TOKEN}")
    assert value == "/disk/showFile/9/"


def test_user_text_is_kept_verbatim() -> None:
    """A string or url field holds what a user typed; it is never rewritten."""
    typed = "https://example.com/login?auth=my-own-text"
    assert run_one("url", typed) == (typed, [])
    assert run_one("string", typed) == (typed, [])


def test_no_token_in_extra_or_record_errors() -> None:
    fields = {
        "ID": {"type": "integer", "isMultiple": False, "title": "ID"},
        "UF_CRM_F": {"type": "file", "isMultiple": False, "title": "F"},
        "UF_CRM_N": {"type": "integer", "isMultiple": False, "title": "N"},
    }
    schema = DealSchema.from_fields(fields)
    bad_file = {**_file(3), "id": "not-a-number"}
    deals = [
        # A file field created mid-run is not in the schema: its value lands in `_extra`.
        {"ID": "1", "UF_CRM_F": _file(1), "UF_CRM_NEW": [_file(2)]},
        {"ID": "2", "UF_CRM_F": bad_file, "UF_CRM_N": f"{FILE_PATH}?auth={TOKEN}"},
    ]
    table, errors = normalise_deals(deals, schema)
    assert TOKEN not in orjson.dumps(table.to_pylist(), default=str).decode()
    assert (
        table.column(EXTRA_COLUMN)[0].as_py() == orjson.dumps({"UF_CRM_NEW": [_stored(2)]}).decode()
    )
    assert len(errors) == 2
    for error in errors:
        assert TOKEN not in error.raw_value
        assert TOKEN not in error.reason
