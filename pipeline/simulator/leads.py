"""Deterministic lead data: one lead's wire dict is a pure function of (seed, ID, portal).

Built like deals (`DealFactory`: a template chosen by a hash of the ID, patched with the values
that embed the ID or its dates; the same user field kinds and empty forms), with the lead field
set and value forms of REST docs `api-reference/crm/leads/crm-lead-get.md` (its example answer):
numbers and IDs as strings, `Y`/`N` chars, `null` for empty standard fields, `""` for an empty
date (`"BIRTHDATE": ""`, `"DATE_CLOSED": ""`), and the communication fields (`PHONE`, `EMAIL`,
`WEB`, `IM`, type `crm_multifield`) as lists of `{"ID", "VALUE_TYPE", "VALUE", "TYPE_ID"}`
that are absent from the answer when empty (the example has `PHONE` and `IM` but no `EMAIL`,
with `"HAS_EMAIL": "N"`). `HAS_PHONE`/`HAS_EMAIL`/`HAS_IMOL` agree with them.
"""

from __future__ import annotations

import random
from typing import Any

from pipeline.simulator.generate import DealFactory, _Side, mix64

_LEAD_TITLES = (
    "Лид #{id}",
    "Заявка с сайта 🌐 #{id}",
    'ООО "Вектор" — запрос КП №{id}',
    "Lead #{id} (import)",
    "Звонок: <не дозвонились> & перезвонить #{id}",
    "  Пробелы по краям #{id}  ",
)
_NAMES = ("Иван", "Мария", "Алексей", "Ольга", "John", "Zoë", "Сергей", "")
_LAST_NAMES = ("Петров", "Иванова", "Smith", "О'Коннор", "Ким", None)
_STATUSES = ("NEW", "IN_PROCESS", "PROCESSED")
_WON, _LOST = ("CONVERTED",), ("JUNK",)
_SOURCES = ("CALL", "EMAIL", "WEB", "ADVERTISING", "PARTNER", "RECOMMENDATION", "WEBFORM", "OTHER")
_CURRENCIES = ("RUB", "RUB", "USD", "EUR", "KZT")
_HONORIFICS = ("HNR_RU_1", "HNR_RU_2", None, None)
_CITIES = ("Москва", "Санкт-Петербург", "Алматы", "Berlin", None)
_PHONE_TYPES = ("WORK", "MOBILE", "HOME", "OTHER")
_EMAIL_TYPES = ("WORK", "HOME", "OTHER")
_IM_TYPES = ("TELEGRAM", "OPENLINE", "SKYPE", "WHATSAPP")
#: Multifield entry IDs come from one sequence of the portal (`b_crm_field_multi`); each lead
#: owns a block of 16 so that they never collide.
_MULTI_BASE = 10_000


class LeadFactory(DealFactory):
    """Builds the wire dict of one lead from (seed, ID)."""

    SHOW_COMPONENT = "crm.lead.show"
    DROPPED_WHEN_EMPTY = ("PHONE", "EMAIL", "WEB", "IM")

    def build(self, deal_id: int, modified: int | None = None) -> dict[str, Any]:
        lead = super().build(deal_id, modified)
        for name in self.DROPPED_WHEN_EMPTY:
            if not lead[name]:
                del lead[name]  # an empty multifield is not in the answer
        return lead

    def _values(self, deal_id: int, h: int, template: dict[str, Any], side: _Side,
                modified: int | None) -> dict[str, Any]:  # fmt: skip
        z = self.zone
        created = self.created_at(deal_id)
        if modified is None:
            modified = self.modified_at(deal_id, created)
        span = max(0, modified - created)
        values: dict[str, Any] = {
            "ID": str(deal_id),
            "TITLE": _LEAD_TITLES[(h >> 12) % len(_LEAD_TITLES)].format(id=deal_id),
        }
        if side.amount:
            values["OPPORTUNITY"] = f"{((h >> 20) % 5_000_000) / 100:.2f}"
        values["DATE_CREATE"] = z.datetime(created)
        values["DATE_MODIFY"] = z.datetime(modified)
        values["MOVED_TIME"] = z.datetime(created + int(side.moved * span))
        if side.activity is not None:
            values["LAST_ACTIVITY_TIME"] = z.datetime(created + int(side.activity * span))
        if side.close_days is not None:
            values["DATE_CLOSED"] = z.datetime(created + int(side.moved * span))
        if template["ORIGIN_ID"] is not None:
            values["ORIGIN_ID"] = f"L{deal_id:08d}"
        values.update(_communications(deal_id, h))
        values["HAS_PHONE"] = "Y" if values["PHONE"] else "N"
        values["HAS_EMAIL"] = "Y" if values["EMAIL"] else "N"
        openline = any(e["VALUE_TYPE"] == "OPENLINE" for e in values["IM"])
        values["HAS_IMOL"] = "Y" if openline else "N"
        for name, multiple, count, make in side.per_deal:
            made = [make(deal_id, i) for i in range(count)]
            values[name] = made if multiple else made[0]
        for name, salt, forms in side.empties:
            values[name] = forms[mix64(salt ^ deal_id) % len(forms)] if len(forms) > 1 else forms[0]
        return values

    def _archetype(self, k: int) -> tuple[dict[str, Any], _Side]:
        """The k-th lead template: every value that does not embed the lead's ID or dates."""
        cached = self._archetypes.get(k)
        if cached is not None:
            return cached
        rnd = random.Random(self.seed * 0x1EAD0001 + k)
        r = rnd.random
        moved = r()
        activity = r() if r() < 0.7 else None
        roll = r()
        if roll < 0.25:
            status, semantic = _WON[0], "S"
        elif roll < 0.4:
            status, semantic = _LOST[0], "F"
        else:
            status, semantic = _STATUSES[int(r() * len(_STATUSES))], "P"
        has_amount = r() >= 0.3
        user = str(1 + int(r() * 40))
        city = _CITIES[int(r() * len(_CITIES))]
        lead: dict[str, Any] = {
            "ID": "",
            "TITLE": "",
            "HONORIFIC": _HONORIFICS[int(r() * len(_HONORIFICS))],
            "NAME": _NAMES[int(r() * len(_NAMES))],
            "SECOND_NAME": None,
            "LAST_NAME": _LAST_NAMES[int(r() * len(_LAST_NAMES))],
            "COMPANY_TITLE": "ООО «Ромашка»" if r() < 0.3 else None,
            "COMPANY_ID": str(1 + int(r() * 5000)) if r() < 0.2 else None,
            "CONTACT_ID": str(1 + int(r() * 20000)) if r() < 0.2 else None,
            "IS_RETURN_CUSTOMER": "Y" if r() < 0.1 else "N",
            "BIRTHDATE": self.zone.epoch_day(3000 + int(r() * 12000)) if r() < 0.2 else "",
            "SOURCE_ID": _SOURCES[int(r() * len(_SOURCES))] if r() < 0.9 else None,
            "SOURCE_DESCRIPTION": "Форма на сайте" if r() < 0.2 else None,
            "STATUS_ID": status,
            "STATUS_DESCRIPTION": "Ждёт звонка ☎️" if r() < 0.1 else None,
            "POST": "Директор" if r() < 0.2 else None,
            "COMMENTS": "[B]Горячий[/B] лид 🔥" if r() < 0.3 else None,
            "CURRENCY_ID": _CURRENCIES[int(r() * len(_CURRENCIES))],
            "OPPORTUNITY": "0.00",
            "IS_MANUAL_OPPORTUNITY": "Y" if r() < 0.2 else "N",
            "HAS_PHONE": "N",
            "HAS_EMAIL": "N",
            "HAS_IMOL": "N",
            "ASSIGNED_BY_ID": user,
            "CREATED_BY_ID": str(1 + int(r() * 40)),
            "MODIFY_BY_ID": user,
            "DATE_CREATE": "",
            "DATE_MODIFY": "",
            "DATE_CLOSED": "",
            "STATUS_SEMANTIC_ID": semantic,
            "OPENED": "Y" if r() < 0.8 else "N",
            "ORIGINATOR_ID": "1c" if r() < 0.1 else None,
            "ORIGIN_ID": "" if r() < 0.1 else None,
            "MOVED_BY_ID": user,
            "MOVED_TIME": "",
            "ADDRESS": "ул. Тверская, 1" if city else None,
            "ADDRESS_2": None,
            "ADDRESS_CITY": city,
            "ADDRESS_POSTAL_CODE": "125009" if city else None,
            "ADDRESS_REGION": None,
            "ADDRESS_PROVINCE": None,
            "ADDRESS_COUNTRY": "Россия" if city else None,
            "ADDRESS_COUNTRY_CODE": None,
            "ADDRESS_LOC_ADDR_ID": None,
            "UTM_SOURCE": "yandex" if r() < 0.3 else None,
            "UTM_MEDIUM": None,
            "UTM_CAMPAIGN": None,
            "UTM_CONTENT": None,
            "UTM_TERM": None,
            "LAST_ACTIVITY_BY": user if activity is not None else None,
            "LAST_ACTIVITY_TIME": "",
            "PHONE": [],
            "EMAIL": [],
            "WEB": [],
            "IM": [],
        }
        close = 0 if semantic != "P" else None
        per_deal, empties = self._user_fields(lead, rnd)
        side = _Side(has_amount, False, close, moved, activity, tuple(per_deal), empties)
        self._archetypes[k] = (lead, side)
        return lead, side


def _communications(lead_id: int, h: int) -> dict[str, list[dict[str, str]]]:
    """The lead's multifields: 0-2 phones, 0-2 e-mails, 0-1 site, 0-1 messenger."""
    base = _MULTI_BASE + lead_id * 16
    counts = ((h >> 3) % 3, (h >> 5) % 3, (h >> 7) % 2, (h >> 9) % 2)
    entries: dict[str, list[dict[str, str]]] = {"PHONE": [], "EMAIL": [], "WEB": [], "IM": []}
    n = 0
    for i in range(counts[0]):
        kind = _PHONE_TYPES[(h >> (11 + i)) % len(_PHONE_TYPES)]
        value = f"+7 9{(lead_id * 7 + i) % 100:02d} {lead_id % 1000:03d}-{i:02d}-{h % 100:02d}"
        entries["PHONE"].append(_entry(base + n, kind, value, "PHONE"))
        n += 1
    for i in range(counts[1]):
        kind = _EMAIL_TYPES[(h >> (13 + i)) % len(_EMAIL_TYPES)]
        entries["EMAIL"].append(_entry(base + n, kind, f"lead{lead_id}.{i}@пример.рф", "EMAIL"))
        n += 1
    if counts[2]:
        entries["WEB"].append(_entry(base + n, "WORK", f"https://example.com/{lead_id}", "WEB"))
        n += 1
    if counts[3]:
        kind = _IM_TYPES[(h >> 17) % len(_IM_TYPES)]
        value = f"imol|livechat|1|{lead_id}|21" if kind == "OPENLINE" else f"@lead{lead_id}"
        entries["IM"].append(_entry(base + n, kind, value, "IM"))
    return entries


def _entry(entry_id: int, value_type: str, value: str, type_id: str) -> dict[str, str]:
    return {"ID": str(entry_id), "VALUE_TYPE": value_type, "VALUE": value, "TYPE_ID": type_id}


__all__ = ["LeadFactory"]
