"""Deterministic deal data: one deal's wire dict is a pure function of (seed, ID, portal).

Nothing is generated up front except the ID layout, so a portal of a million deals starts in
about a second; each deal is built on demand (tens of microseconds) and cached by the caller.
Values follow the `crm.deal.get` wire format: numbers and IDs as strings, `Y`/`N` chars, `null`
for empty standard fields (REST docs `api-reference/crm/deals/crm-deal-get.md` example), `""` for
empty date fields and empty single user fields (rest `rest_util.php` `CRestUtil::ConvertDate`;
crm `restservice.php` `CCrmDealRestProxy::innerGet`), an empty single file field absent (crm
`tryExternalizeFileField`). An empty multiple field is `false`, `""` or `[]` (main module
`usertype.php`, `CUserTypeManager::GetUserFields`; see `EMPTY_FORMS`), chosen per deal and field.

File URLs are built as crm `restservice.php` `externalizeFile` builds them: `showUrl` without
and `downloadUrl` with an `auth=` parameter. The stored bytes carry it empty, which is what a
webhook call gets; the server puts an OAuth caller's token there at serve time (`FILE_AUTH`).
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from pipeline.simulator.config import EmptyMultiple
from pipeline.simulator.fields import PARENT_TYPES, UserField
from pipeline.simulator.timefmt import ServerZone

#: Deals were created between these instants (UTC), in ID order with jitter.
CREATED_FROM = 1_546_300_800  # 2019-01-01
CREATED_TO = 1_735_689_600  # 2025-01-01
#: Generated modifications never go past this instant; `Portal.touch` moves deals beyond it.
MODIFIED_TO = 1_751_328_000  # 2025-07-01

_MASK64 = (1 << 64) - 1


def mix64(x: int) -> int:
    """splitmix64 finaliser: a cheap, well-spread hash of an integer."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def unit(seed: int, salt: int, n: int) -> float:
    """A uniform [0, 1) draw that depends only on (seed, salt, n)."""
    return mix64(mix64(seed * 0x100000001B3 + salt) ^ n) / 2.0**64


_TITLES = (
    "Сделка #{id}",
    "Поставка оборудования 🚚 #{id}",
    'ООО "Ромашка" — договор №{id}',
    "Deal #{id} (import)",
    "Ёлки & <палки> #{id}",
    "Продление лицензии 1С:Предприятие, {id}",
    "Ремонт офиса 🛠️ [B]срочно[/B] #{id}",
    "  Пробелы по краям #{id}  ",
)
_COMMENTS = (
    "[B]Важный клиент[/B]\nПозвонить после 15:00 ☎️",
    "[I]Скидка 10%[/I], согласовано с [URL=https://example.com/deal]руководителем[/URL]",
    "Клиент просит счёт на ООО «Вектор» 👍\r\nИНН 7701234567",
    "[LIST][*]пункт один[*]пункт два[/LIST]",
    "<b>HTML</b> &amp; entities &lt;kept&gt; as sent",
    "Emoji only: 🎉🎉🎉",
    "",
)
_TYPES = ("SALE", "COMPLEX", "GOODS", "SERVICES", "SERVICE")
_STAGES = ("NEW", "PREPARATION", "PREPAYMENT_INVOICE", "EXECUTING", "FINAL_INVOICE")
_WON, _LOST = ("WON",), ("LOSE", "APOLOGY")
_CURRENCIES = ("RUB", "RUB", "RUB", "USD", "EUR", "KZT", "BYN")
_SOURCES = ("CALL", "EMAIL", "WEB", "ADVERTISING", "PARTNER", "RECOMMENDATION", "CALLBACK",
            "WEBFORM", "TRADE_SHOW", "OTHER")  # fmt: skip
_UTM_SOURCES = ("google", "yandex", "vk", "telegram")
_STRINGS = ("Привет мир!", "VIP 👑", "[B]жирный[/B] текст", "plain ascii", "多语言 текст",
            "строка с \"кавычками\" и \\ слешем")  # fmt: skip
_TAGS = ("опт", "розница", "b2b", "🔥 горячий", "повторный")
_ADDRESSES = (
    "Москва, ул. Тверская, 1|55.757718;37.611347|1201",
    "Санкт-Петербург, Невский пр., 28|59.935634;30.325935|1202",
    "Berlin, Unter den Linden 77|52.516275;13.377704|1203",
    "Алматы, пр. Абая, 10",
)
_CRM_PREFIXES = ("D", "C", "CO", "L", "T80")
_STATUSES = ("CALL", "EMAIL", "WEB", "PARTNER")
_POOL = 256
#: The bytes in front of the (empty) token of every downloadUrl in a deal's JSON.
FILE_AUTH = b"/show_file.php?auth=&"

#: Wire forms of an empty multiple UF, as weighted choices. A NULL column, which main's
#: `CUserTypeManager::GetUserFields` unserialises to `false`, is the common case; `""` is a deal
#: with no UF row, `[]` a stored empty array. The converters of the crm module turn an empty
#: date/datetime into `""` (`CRestUtil::ConvertDate(false)`) and an empty file into `[]`
#: (`tryExternalizeFileField`), so those types have one form on a real portal.
_MIX: tuple[Any, ...] = (False,) * 6 + ("",) * 2 + ([],) * 2
_MIX_BY_TYPE: dict[str, tuple[Any, ...]] = {"date": ("",), "datetime": ("",), "file": ([],)}
EMPTY_FORMS: dict[str, tuple[Any, ...]] = {
    "false": (False,),
    "empty_string": ("",),
    "empty_list": ([],),
}
#: Distinct deal templates; a deal's non-ID-bound values come from one of them.
_ARCHETYPES = 2048


@dataclass(frozen=True)
class _Side:
    """What a template needs to become a deal: which ID-bound values to compute and how."""

    amount: bool
    taxed: bool
    close_days: int | None
    moved: float
    activity: float | None
    per_deal: tuple[tuple[str, bool, int, Callable[[int, int], Any]], ...]
    #: Empty multiple UFs: (name, per-field salt, the forms to choose from).
    empties: tuple[tuple[str, int, tuple[Any, ...]], ...] = ()


class DealFactory:
    """Builds the wire dict of one deal from (seed, ID)."""

    #: The component whose `show_file.php` serves this entity's file fields.
    SHOW_COMPONENT = "crm.deal.show"
    #: Fields `build` leaves out of the answer when their value is empty.
    DROPPED_WHEN_EMPTY: tuple[str, ...] = ()

    def __init__(self, seed: int, zone: ServerZone, user_fields: tuple[UserField, ...],
                 max_id: int, empty_multiple: EmptyMultiple = "mix",
                 comment_bytes: int = 0) -> None:  # fmt: skip
        self.seed = seed
        self.comment_bytes = comment_bytes
        self.zone = zone
        self.user_fields = user_fields
        self.max_id = max(1, max_id)
        self.empty_multiple = empty_multiple
        self._plans = self._user_field_plans()
        self._archetypes: dict[int, tuple[dict[str, Any], _Side]] = {}
        self._salt_deal = seed * 0x9E3779B1
        self._salt_created = mix64(seed * 0x100000001B3 + 1)
        self._salt_modified = mix64(seed * 0x100000001B3 + 2)

    def created_at(self, deal_id: int) -> int:
        """Creation instant: grows with the ID, jittered by up to ±3 days."""
        base = CREATED_FROM + (CREATED_TO - CREATED_FROM) * deal_id / (self.max_id + 1)
        jitter = (mix64(self._salt_created ^ deal_id) / 2.0**64 - 0.5) * 6 * 86400
        return int(min(CREATED_TO, max(CREATED_FROM, base + jitter)))

    def modified_at(self, deal_id: int, created: int | None = None) -> int:
        """Generated last-modification instant (before any `touch`)."""
        if created is None:
            created = self.created_at(deal_id)
        u = mix64(self._salt_modified ^ deal_id) / 2.0**64
        return created + int(u**3 * (MODIFIED_TO - created))

    def build(self, deal_id: int, modified: int | None = None) -> dict[str, Any]:
        """The wire dict of deal `deal_id`; `modified` overrides the generated DATE_MODIFY."""
        template, _, values = self._patch(deal_id, modified)
        deal = template.copy()  # assignment to existing keys keeps the template's key order
        deal.update(values)
        return deal

    def encode(self, deal_id: int, modified: int | None = None) -> bytes:
        """The deal's wire JSON. (Splicing ID-bound values into pre-encoded template JSON was
        measured slower than this: a deal has a dozen ID-bound values.)"""
        return orjson.dumps(self.build(deal_id, modified))

    def parts(self, deal_id: int, modified: int | None) -> tuple[dict[str, Any], dict[str, Any]]:
        """(template, ID-bound values): what `build` merges, before it drops empty fields
        (`DROPPED_WHEN_EMPTY`). Templates live as long as the factory."""
        template, _, values = self._patch(deal_id, modified)
        return template, values

    def _patch(
        self, deal_id: int, modified: int | None
    ) -> tuple[dict[str, Any], _Side, dict[str, Any]]:
        """The template of a deal and its ID-bound values, in template key order."""
        h = mix64(self._salt_deal + deal_id)
        template, side = self._archetype(h % _ARCHETYPES)
        return template, side, self._values(deal_id, h, template, side, modified)

    def _values(self, deal_id: int, h: int, template: dict[str, Any], side: _Side,
                modified: int | None) -> dict[str, Any]:  # fmt: skip
        z = self.zone
        created = self.created_at(deal_id)
        if modified is None:
            modified = self.modified_at(deal_id, created)
        span = max(0, modified - created)
        values: dict[str, Any] = {
            "ID": str(deal_id),
            "TITLE": _TITLES[(h >> 12) % len(_TITLES)].format(id=deal_id),
        }
        if side.amount:
            amount = ((h >> 20) % 10_000_000) / 100 * (1 + (h >> 44) % 7)
            values["OPPORTUNITY"] = f"{amount:.2f}"
            if side.taxed:
                values["TAX_VALUE"] = f"{amount * 0.2:.2f}"
        begin = created // 86400  # the deal's calendar day: its UTC date of creation
        values["BEGINDATE"] = z.epoch_day(begin)
        if side.close_days is not None:
            values["CLOSEDATE"] = z.epoch_day(begin + side.close_days)
        values["DATE_CREATE"] = z.datetime(created)
        values["DATE_MODIFY"] = z.datetime(modified)
        values["MOVED_TIME"] = z.datetime(created + int(side.moved * span))
        if side.activity is not None:
            values["LAST_ACTIVITY_TIME"] = z.datetime(created + int(side.activity * span))
        if template["ORIGIN_ID"] is not None:
            values["ORIGIN_ID"] = f"{deal_id:08d}"
        for name, multiple, count, make in side.per_deal:
            made = [make(deal_id, i) for i in range(count)]
            values[name] = made if multiple else made[0]
        for name, salt, forms in side.empties:
            values[name] = forms[mix64(salt ^ deal_id) % len(forms)] if len(forms) > 1 else forms[0]
        return values

    def _comment(self, note: str, k: int) -> str:
        """A short note, or with `comment_bytes` a long one: the note, then numbered lines of
        text up to about that many UTF-8 bytes (the archetype's own, so deals differ)."""
        if not self.comment_bytes:
            return note
        lines = [note]
        size = len(note.encode())
        n = 0
        while size < self.comment_bytes:
            n += 1
            line = f"\r\n{n}. Переписка с клиентом, шаблон {k}: обсудили условия поставки."
            lines.append(line)
            size += len(line.encode())
        return "".join(lines)

    def empty_forms(self, uf: UserField) -> tuple[Any, ...]:
        """The wire forms an empty multiple `uf` is drawn from."""
        if self.empty_multiple != "mix":
            return EMPTY_FORMS[self.empty_multiple]
        return _MIX_BY_TYPE.get(uf.type, _MIX)

    def _archetype(self, k: int) -> tuple[dict[str, Any], _Side]:
        """The k-th deal template: every value that does not embed the deal's ID or dates.

        A deal is its template (chosen by a hash of the ID) patched with ID-bound values, so
        building one costs a dict copy and a few formats instead of a full random draw.
        """
        cached = self._archetypes.get(k)
        if cached is not None:
            return cached
        rnd = random.Random(self.seed * 0x9E3779B1 + k)
        r = rnd.random
        moved = r()
        activity = r() if r() < 0.8 else None

        category = 0 if r() < 0.7 else (1 if r() < 0.6 else 3)
        roll = r()
        if roll < 0.2:
            stage, semantic = _WON[0], "S"
        elif roll < 0.35:
            stage, semantic = _LOST[int(r() * 2)], "F"
        else:
            stage, semantic = _STAGES[int(r() * len(_STAGES))], "P"
        if category:
            stage = f"C{category}:{stage}"
        closed = "Y" if semantic != "P" else "N"

        currency = _CURRENCIES[int(r() * len(_CURRENCIES))]
        has_amount = r() >= 0.05
        taxed = r() < 0.3
        close_days = int(r() * 90) if r() < 0.9 else None
        user = str(1 + int(r() * 40))

        deal: dict[str, Any] = {
            "ID": "",
            "TITLE": "",
            "TYPE_ID": _TYPES[int(r() * len(_TYPES))] if r() < 0.9 else None,
            "CATEGORY_ID": str(category),
            "STAGE_ID": stage,
            "STAGE_SEMANTIC_ID": semantic,
            "IS_NEW": "Y" if stage.endswith("NEW") else "N",
            "IS_RECURRING": "Y" if r() < 0.05 else "N",
            "IS_RETURN_CUSTOMER": "Y" if r() < 0.2 else "N",
            "IS_REPEATED_APPROACH": "Y" if r() < 0.1 else "N",
            "PROBABILITY": str(int(r() * 101)) if r() < 0.7 else None,
            "CURRENCY_ID": currency,
            "OPPORTUNITY": "0.00",
            "IS_MANUAL_OPPORTUNITY": "Y" if r() < 0.3 else "N",
            "TAX_VALUE": "0.00",
            "COMPANY_ID": str(1 + int(r() * 5000)) if r() < 0.7 else "0",
            "CONTACT_ID": str(1 + int(r() * 20000)) if r() < 0.8 else None,
            "QUOTE_ID": str(1 + int(r() * 900)) if r() < 0.05 else None,
            "LEAD_ID": str(1 + int(r() * 30000)) if r() < 0.3 else None,
            "BEGINDATE": "",
            "CLOSEDATE": "",  # an empty date field is "" (CRestUtil::ConvertDate)
            "OPENED": "Y" if r() < 0.8 else "N",
            "CLOSED": closed,
            "COMMENTS": self._comment(_COMMENTS[int(r() * len(_COMMENTS))], k)
            if r() < 0.6
            else None,
            "ASSIGNED_BY_ID": user,
            "CREATED_BY_ID": str(1 + int(r() * 40)),
            "MODIFY_BY_ID": user,
            "MOVED_BY_ID": user,
            "LAST_ACTIVITY_BY": user if activity is not None else None,
            "DATE_CREATE": "",
            "DATE_MODIFY": "",
            "MOVED_TIME": "",
            "LAST_ACTIVITY_TIME": "",
            "SOURCE_ID": _SOURCES[int(r() * len(_SOURCES))] if r() < 0.85 else None,
            "SOURCE_DESCRIPTION": "Заявка с сайта 🌐" if r() < 0.2 else None,
            "ADDITIONAL_INFO": None,
            "ORIGINATOR_ID": "1c" if r() < 0.1 else None,
            "ORIGIN_ID": "" if r() < 0.1 else None,
        }
        if r() < 0.3:
            deal["UTM_SOURCE"] = _UTM_SOURCES[int(r() * len(_UTM_SOURCES))]
            deal["UTM_MEDIUM"] = "cpc"
            deal["UTM_CAMPAIGN"] = "осень_2024"
            deal["UTM_CONTENT"] = None
            deal["UTM_TERM"] = "купить сделку" if r() < 0.5 else None
        else:
            deal["UTM_SOURCE"] = deal["UTM_MEDIUM"] = deal["UTM_CAMPAIGN"] = None
            deal["UTM_CONTENT"] = deal["UTM_TERM"] = None
        deal["LOCATION_ID"] = None
        for entity_type_id, _ in PARENT_TYPES:
            deal[f"PARENT_ID_{entity_type_id}"] = str(1 + int(r() * 300)) if r() < 0.2 else None
        per_deal, empties = self._user_fields(deal, rnd)
        side = _Side(has_amount, taxed, close_days, moved, activity, tuple(per_deal), empties)
        self._archetypes[k] = (deal, side)
        return deal, side

    def _user_field_plans(self) -> list[tuple[str, bool, bool, list[Any] | None]]:
        """Per UF: (name, multiple, is_file, value pool). Pools are drawn once from the seed so
        that a deal costs one index draw per value; file and url values embed the deal ID and
        are formatted per deal (pool None)."""
        plans: list[tuple[str, bool, bool, list[Any] | None]] = []
        for n, uf in enumerate(self.user_fields):
            rnd = random.Random(self.seed * 7919 + n)
            pool = None
            if uf.type not in ("file", "url"):
                pool = [self._uf_value(uf, rnd) for _ in range(_POOL)]
            plans.append((uf.name, uf.multiple, uf.type == "file", pool))
        return plans

    def _user_fields(self, deal: dict[str, Any], rnd: random.Random) -> tuple[
        list[tuple[str, bool, int, Callable[[int, int], Any]]],
        tuple[tuple[str, int, tuple[Any, ...]], ...],
    ]:  # fmt: skip
        """Fill the template's UFs; returns (name, multiple, count, maker) of the UFs whose
        values embed the deal ID and are made per deal, and the empty multiple UFs, whose wire
        form is drawn per deal (`_Side.empties`)."""
        r = rnd.random
        per_deal: list[tuple[str, bool, int, Callable[[int, int], Any]]] = []
        empties: list[tuple[str, int, tuple[Any, ...]]] = []
        for n, ((name, multiple, is_file, pool), uf) in enumerate(
            zip(self._plans, self.user_fields, strict=True)
        ):
            if r() < 0.25:  # empty
                if multiple:
                    forms = self.empty_forms(uf)
                    deal[name] = forms[0]  # keeps the key order; drawn per deal
                    empties.append((name, mix64(self.seed * 0x2545F491 + n), forms))
                elif not is_file:  # an empty single file field is absent from the answer
                    deal[name] = ""
                continue
            count = 1 + int(r() * 3) if multiple else 1
            if pool is None:
                deal[name] = None  # placeholder keeps the key order; filled per deal
                per_deal.append((name, multiple, count, _per_deal_maker(uf, self.SHOW_COMPONENT)))
            else:
                values = [pool[int(r() * _POOL)] for _ in range(count)]
                deal[name] = values if multiple else values[0]
        return per_deal, tuple(empties)

    def _uf_value(self, uf: UserField, rnd: random.Random) -> Any:
        """One value for a UF pool (types whose values do not embed the deal ID)."""
        r = rnd.random
        t = uf.type
        if t == "string":
            pool = _TAGS if uf.multiple else _STRINGS
            return pool[int(r() * len(pool))]
        if t == "integer":
            return str(int(r() * 1000) - 100)
        if t == "double":
            return str(round(r() * 100, 2))
        if t == "boolean":
            return "1" if r() < 0.5 else "0"
        if t == "enumeration":
            return uf.items[int(r() * len(uf.items))][0]
        if t == "datetime":
            return self.zone.datetime(int(CREATED_FROM + r() * (MODIFIED_TO - CREATED_FROM)))
        if t == "date":
            day = dt.date(2019, 1, 1) + dt.timedelta(days=int(r() * 2400))
            return self.zone.date(day)
        if t == "money":
            cur = _CURRENCIES[int(r() * len(_CURRENCIES))]
            amount = round(r() * 100000, 2)
            return f"{amount:g}|{cur}" if r() < 0.5 else f"{amount:.2f}|{cur}"
        if t == "address":
            return _ADDRESSES[int(r() * len(_ADDRESSES))]
        if t == "employee":
            return str(1 + int(r() * 40))
        if t == "crm_status":
            return _STATUSES[int(r() * len(_STATUSES))]
        if t in ("iblock_section", "iblock_element"):
            return str(1 + int(r() * (50 if t == "iblock_section" else 5000)))
        if t == "crm":
            prefix = _CRM_PREFIXES[int(r() * len(_CRM_PREFIXES))]
            return f"{prefix}_{1 + int(r() * 9999)}"
        if t == "hlblock":
            return str(1 + int(r() * 50))
        raise ValueError(f"no generator for UF type {t!r}")


def _per_deal_maker(uf: UserField, component: str) -> Callable[[int, int], Any]:
    """A fast formatter for a UF value that embeds the deal ID (file, url)."""
    if uf.type == "file":
        base = 30000 + (8 if uf.multiple else 0)
        handler = f"/bitrix/components/bitrix/{component}/show_file.php?"
        show_prefix = handler + "ownerId="
        download_prefix = handler + "auth=&ownerId="
        middle = f"&fieldName={uf.name}&dynamic=Y&fileId="

        def file_value(deal_id: int, i: int) -> Any:
            file_id = base + deal_id * 16 + i
            tail = f"{deal_id}{middle}{file_id}"
            return {
                "id": file_id,
                "showUrl": show_prefix + tail,
                "downloadUrl": download_prefix + tail,
            }

        return file_value
    if uf.type == "url":
        return lambda deal_id, i: f"https://example.com/клиент/{deal_id}?utm=тест&i={i}"
    raise ValueError(f"UF type {uf.type!r} is not made per deal")


def with_file_auth(deal_json: bytes, token: str) -> bytes:
    """A deal's JSON with `token` as the `auth` of every downloadUrl, as the portal answers an
    OAuth caller (crm `restservice.php` `externalizeFile` uses the request's own `auth`)."""
    if not token or FILE_AUTH not in deal_json:
        return deal_json
    escaped = orjson.dumps(token)[1:-1]  # stays valid JSON whatever the token holds
    return deal_json.replace(FILE_AUTH, FILE_AUTH[:-1] + escaped + b"&")


__all__ = [
    "CREATED_FROM",
    "CREATED_TO",
    "EMPTY_FORMS",
    "FILE_AUTH",
    "MODIFIED_TO",
    "DealFactory",
    "mix64",
    "unit",
    "with_file_auth",
]
