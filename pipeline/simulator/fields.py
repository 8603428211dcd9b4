"""The portal's deal schema: what `crm.deal.fields` returns.

Standard fields are those of REST docs `api-reference/crm/deals/crm-deal-fields.md`, related
fields grouped; `PARENT_ID_*` links to smart processes come next, then the user fields (descriptor
keys and value formats: REST docs `api-reference/crm/data-types.md`,
`universal/user-defined-fields/crm-userfield-types.md`). Titles are Russian, as on a
Russian-language portal.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# (name, type, read-only, extra descriptor keys, title)
_STANDARD: tuple[tuple[str, str, bool, dict[str, Any], str], ...] = (
    ("ID", "integer", True, {}, "ID"),
    ("TITLE", "string", False, {}, "Название"),
    ("TYPE_ID", "crm_status", False, {"statusType": "DEAL_TYPE"}, "Тип"),
    ("CATEGORY_ID", "crm_category", False, {"isImmutable": True}, "Воронка"),
    ("STAGE_ID", "crm_status", False, {"statusType": "DEAL_STAGE"}, "Стадия сделки"),
    ("STAGE_SEMANTIC_ID", "string", True, {}, "Группа стадии"),
    ("IS_NEW", "char", True, {}, "Новая сделка"),
    ("IS_RECURRING", "char", False, {}, "Регулярная сделка"),
    ("IS_RETURN_CUSTOMER", "char", False, {}, "Повторная сделка"),
    ("IS_REPEATED_APPROACH", "char", False, {}, "Повторное обращение"),
    ("PROBABILITY", "integer", False, {}, "Вероятность"),
    ("CURRENCY_ID", "crm_currency", False, {}, "Валюта"),
    ("OPPORTUNITY", "double", False, {}, "Сумма"),
    ("IS_MANUAL_OPPORTUNITY", "char", False, {}, "Сумма заполнена вручную"),
    ("TAX_VALUE", "double", False, {}, "Ставка налога"),
    ("COMPANY_ID", "crm_company", False, {"settings": {"parentEntityTypeId": 4}}, "Компания"),
    ("CONTACT_ID", "crm_contact", False, {"isDeprecated": True}, "Контакт"),
    ("CONTACT_IDS", "crm_contact", False, {"isMultiple": True}, "Контакты"),
    ("QUOTE_ID", "crm_quote", True, {"settings": {"parentEntityTypeId": 7}}, "Предложение"),
    ("LEAD_ID", "crm_lead", True, {"settings": {"parentEntityTypeId": 1}}, "Лид"),
    ("BEGINDATE", "date", False, {}, "Дата начала"),
    ("CLOSEDATE", "date", False, {}, "Предполагаемая дата закрытия"),
    ("OPENED", "char", False, {}, "Доступна для всех"),
    ("CLOSED", "char", False, {}, "Закрыта"),
    ("COMMENTS", "string", False, {}, "Комментарий"),
    ("ASSIGNED_BY_ID", "user", False, {}, "Ответственный"),
    ("CREATED_BY_ID", "user", True, {}, "Кем создана"),
    ("MODIFY_BY_ID", "user", True, {}, "Кем изменена"),
    ("MOVED_BY_ID", "user", True, {}, "Кто изменил стадию"),
    ("LAST_ACTIVITY_BY", "user", True, {}, "Автор последней активности"),
    ("DATE_CREATE", "datetime", True, {}, "Дата создания"),
    ("DATE_MODIFY", "datetime", True, {}, "Дата изменения"),
    ("MOVED_TIME", "datetime", True, {}, "Дата изменения стадии"),
    ("LAST_ACTIVITY_TIME", "datetime", True, {}, "Последняя активность"),
    ("SOURCE_ID", "crm_status", False, {"statusType": "SOURCE"}, "Источник"),
    ("SOURCE_DESCRIPTION", "string", False, {}, "Дополнительно об источнике"),
    ("ADDITIONAL_INFO", "string", False, {}, "Дополнительная информация"),
    ("ORIGINATOR_ID", "string", False, {}, "Внешний источник"),
    ("ORIGIN_ID", "string", False, {}, "Идентификатор элемента во внешнем источнике"),
    ("UTM_SOURCE", "string", False, {}, "Рекламная система"),
    ("UTM_MEDIUM", "string", False, {}, "Тип трафика"),
    ("UTM_CAMPAIGN", "string", False, {}, "Обозначение рекламной кампании"),
    ("UTM_CONTENT", "string", False, {}, "Содержание кампании"),
    ("UTM_TERM", "string", False, {}, "Условие поиска кампании"),
    ("LOCATION_ID", "location", False, {}, "Местоположение"),
)

#: Smart-process links: (entityTypeId, title). 0x80 = 128 gives the binding prefix "T80".
PARENT_TYPES: tuple[tuple[int, str], ...] = ((128, "Закупка"), (153, "Проект"), (1220, "Договор"))


@dataclass(frozen=True)
class UserField:
    """One UF_CRM_* field: its kind (config name), Bitrix UF type, multiplicity and extras."""

    kind: str
    name: str
    type: str
    multiple: bool
    label: str
    settings: dict[str, Any]
    items: tuple[tuple[str, str], ...] = ()


_ENUM_ITEMS = (("79", "Элемент списка #1"), ("80", "Элемент списка #2"), ("81", "Другое 🚀"))

USER_FIELDS: tuple[UserField, ...] = (
    UserField("string", "UF_CRM_1721244482250", "string", False, "Комментарий клиента",
              {"SIZE": 20, "ROWS": 1, "DEFAULT_VALUE": ""}),
    UserField("string_multi", "UF_CRM_1721244482251", "string", True, "Теги",
              {"SIZE": 20, "ROWS": 1, "DEFAULT_VALUE": ""}),
    UserField("integer", "UF_CRM_1721244500001", "integer", False, "Количество мест",
              {"SIZE": 20, "MIN_VALUE": 0, "MAX_VALUE": 0, "DEFAULT_VALUE": None}),
    UserField("double", "UF_CRM_1721244500002", "double", False, "Скидка, %",
              {"PRECISION": 2, "SIZE": 20, "MIN_VALUE": 0, "MAX_VALUE": 0, "DEFAULT_VALUE": None}),
    UserField("boolean", "UF_CRM_1721244500003", "boolean", False, "Предоплата",
              {"DEFAULT_VALUE": 0, "DISPLAY": "CHECKBOX", "LABEL": ["", ""]}),
    UserField("enumeration", "UF_CRM_1721812814433", "enumeration", False,
              "Пользовательское поле (список)",
              {"DISPLAY": "LIST", "LIST_HEIGHT": 1, "CAPTION_NO_VALUE": "", "SHOW_NO_VALUE": "Y"},
              _ENUM_ITEMS),
    UserField("enumeration_multi", "UF_CRM_1721812814500", "enumeration", True, "Каналы",
              {"DISPLAY": "LIST", "LIST_HEIGHT": 3, "CAPTION_NO_VALUE": "", "SHOW_NO_VALUE": "Y"},
              (("91", "Почта"), ("92", "Телефон"), ("93", "Telegram ✈️"))),
    UserField("datetime", "UF_CRM_1721244500004", "datetime", False, "Время звонка",
              {"DEFAULT_VALUE": {"TYPE": "NONE", "VALUE": ""}, "USE_SECOND": "Y"}),
    UserField("date", "UF_CRM_1721244500005", "date", False, "Дата договора",
              {"DEFAULT_VALUE": {"TYPE": "NONE", "VALUE": ""}}),
    UserField("date_multi", "UF_CRM_1721244500006", "date", True, "Даты встреч",
              {"DEFAULT_VALUE": {"TYPE": "NONE", "VALUE": ""}}),
    UserField("money", "UF_CRM_1721244500007", "money", False, "Бюджет клиента",
              {"DEFAULT_VALUE": ""}),
    UserField("url", "UF_CRM_1721244500008", "url", False, "Сайт",
              {"POPUP": "Y", "SIZE": 20, "DEFAULT_VALUE": ""}),
    UserField("address", "UF_CRM_1721244500009", "address", False, "Адрес доставки",
              {"SHOW_MAP": "Y"}),
    UserField("file", "UF_CRM_1721244500010", "file", False, "Скан договора",
              {"SIZE": 20, "MAX_ALLOWED_SIZE": 0, "EXTENSIONS": []}),
    UserField("file_multi", "UF_CRM_1721244500011", "file", True, "Фотографии",
              {"SIZE": 20, "MAX_ALLOWED_SIZE": 0, "EXTENSIONS": []}),
    UserField("employee", "UF_CRM_1721244500012", "employee", False, "Куратор", {}),
    UserField("crm_status", "UF_CRM_1721244500013", "crm_status", False, "Источник (справочник)",
              {"ENTITY_TYPE": "SOURCE"}),
    UserField("iblock_section", "UF_CRM_1721244500014", "iblock_section", False, "Раздел каталога",
              {"IBLOCK_TYPE_ID": "", "IBLOCK_ID": 14, "DISPLAY": "LIST", "ACTIVE_FILTER": "N"}),
    UserField("iblock_element", "UF_CRM_1721244500015", "iblock_element", False, "Товар",
              {"IBLOCK_TYPE_ID": "", "IBLOCK_ID": 14, "DISPLAY": "LIST", "ACTIVE_FILTER": "N"}),
    UserField("crm", "UF_CRM_1721244500016", "crm", False, "Связанный элемент",
              {"LEAD": "Y", "CONTACT": "Y", "COMPANY": "Y", "DEAL": "Y", "DYNAMIC_128": "Y"}),
    UserField("crm_multi", "UF_CRM_1721244500017", "crm", True, "Связанные элементы",
              {"LEAD": "N", "CONTACT": "Y", "COMPANY": "Y", "DEAL": "Y", "DYNAMIC_128": "Y"}),
)  # fmt: skip

#: Opt-in kinds (only when named in `user_fields`): a multiple UF of every type that can be
#: multiple, and a type of another module that the exporter does not know (`hlblock`, highload
#: block elements). Not in the default portal, so default deals and benchmarks stay as they are.
EXTRA_USER_FIELDS: tuple[UserField, ...] = (
    UserField("integer_multi", "UF_CRM_1721244600001", "integer", True, "Номера заказов",
              {"SIZE": 20, "MIN_VALUE": 0, "MAX_VALUE": 0, "DEFAULT_VALUE": None}),
    UserField("double_multi", "UF_CRM_1721244600002", "double", True, "Коэффициенты",
              {"PRECISION": 2, "SIZE": 20, "MIN_VALUE": 0, "MAX_VALUE": 0, "DEFAULT_VALUE": None}),
    UserField("money_multi", "UF_CRM_1721244600003", "money", True, "Платежи",
              {"DEFAULT_VALUE": ""}),
    UserField("datetime_multi", "UF_CRM_1721244600004", "datetime", True, "Звонки",
              {"DEFAULT_VALUE": {"TYPE": "NONE", "VALUE": ""}, "USE_SECOND": "Y"}),
    UserField("url_multi", "UF_CRM_1721244600005", "url", True, "Ссылки",
              {"POPUP": "Y", "SIZE": 20, "DEFAULT_VALUE": ""}),
    UserField("address_multi", "UF_CRM_1721244600006", "address", True, "Адреса",
              {"SHOW_MAP": "Y"}),
    UserField("employee_multi", "UF_CRM_1721244600007", "employee", True, "Наблюдатели", {}),
    UserField("crm_status_multi", "UF_CRM_1721244600008", "crm_status", True, "Источники",
              {"ENTITY_TYPE": "SOURCE"}),
    UserField("iblock_section_multi", "UF_CRM_1721244600009", "iblock_section", True, "Разделы",
              {"IBLOCK_TYPE_ID": "", "IBLOCK_ID": 14, "DISPLAY": "LIST", "ACTIVE_FILTER": "N"}),
    UserField("iblock_element_multi", "UF_CRM_1721244600010", "iblock_element", True, "Товары",
              {"IBLOCK_TYPE_ID": "", "IBLOCK_ID": 14, "DISPLAY": "LIST", "ACTIVE_FILTER": "N"}),
    UserField("hlblock_multi", "UF_CRM_1721244600011", "hlblock", True, "Справочник (HL)",
              {"HLBLOCK_ID": 1, "HLFIELD_ID": 0, "DISPLAY": "LIST"}),
)  # fmt: skip

USER_FIELD_KINDS: tuple[str, ...] = tuple(uf.kind for uf in USER_FIELDS)
ALL_USER_FIELD_KINDS: tuple[str, ...] = USER_FIELD_KINDS + tuple(
    uf.kind for uf in EXTRA_USER_FIELDS
)


def select_user_fields(kinds: tuple[str, ...] | None) -> tuple[UserField, ...]:
    """The UFs a portal exposes: the default set, or those whose `kind` is listed (in our
    order, extra kinds last)."""
    if kinds is None:
        return USER_FIELDS
    unknown = set(kinds) - set(ALL_USER_FIELD_KINDS)
    if unknown:
        raise ValueError(
            f"unknown user field kinds {sorted(unknown)}; known: {ALL_USER_FIELD_KINDS}"
        )
    return tuple(uf for uf in USER_FIELDS + EXTRA_USER_FIELDS if uf.kind in kinds)


def _descriptor(
    type_: str, *, read_only: bool, multiple: bool, dynamic: bool, title: str
) -> dict[str, Any]:
    return {
        "type": type_,
        "isRequired": False,
        "isReadOnly": read_only,
        "isImmutable": False,
        "isMultiple": multiple,
        "isDynamic": dynamic,
        "title": title,
    }


def build_fields(user_fields: tuple[UserField, ...]) -> dict[str, dict[str, Any]]:
    """The `result` of `crm.deal.fields` for a portal with these user fields."""
    return _build(_STANDARD, PARENT_TYPES, user_fields)


def _build(
    standard: tuple[tuple[str, str, bool, dict[str, Any], str], ...],
    parents: tuple[tuple[int, str], ...],
    user_fields: tuple[UserField, ...],
) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for name, type_, read_only, extra, title in standard:
        desc = _descriptor(type_, read_only=read_only, multiple=False, dynamic=False, title=title)
        desc.update({k: v for k, v in extra.items() if k != "settings"})
        if "settings" in extra:
            desc["settings"] = extra["settings"]
        out[name] = desc
    for entity_type_id, title in parents:
        desc = _descriptor(
            "crm_entity", read_only=False, multiple=False, dynamic=False, title=title
        )
        desc["settings"] = {"parentEntityTypeId": entity_type_id}
        out[f"PARENT_ID_{entity_type_id}"] = desc
    for uf in user_fields:
        desc = _descriptor(uf.type, read_only=False, multiple=uf.multiple, dynamic=True,
                           title=uf.name)  # fmt: skip
        if uf.items:
            desc["items"] = [{"ID": i, "VALUE": v} for i, v in uf.items]
        desc.update(listLabel=uf.label, formLabel=uf.label, filterLabel=uf.label)
        desc["settings"] = uf.settings
        out[uf.name] = desc
    return out


STANDARD_FIELD_NAMES: tuple[str, ...] = tuple(row[0] for row in _STANDARD)

#: The standard lead fields of REST docs `api-reference/crm/leads/crm-lead-fields.md` (its
#: example answer: types, read-only flags, `statusType`s, titles), in that order.
_LEAD_STANDARD: tuple[tuple[str, str, bool, dict[str, Any], str], ...] = (
    ("ID", "integer", True, {}, "ID"),
    ("TITLE", "string", False, {}, "Название лида"),
    ("HONORIFIC", "crm_status", False, {"statusType": "HONORIFIC"}, "Обращение"),
    ("NAME", "string", False, {}, "Имя"),
    ("SECOND_NAME", "string", False, {}, "Отчество"),
    ("LAST_NAME", "string", False, {}, "Фамилия"),
    ("BIRTHDATE", "date", False, {}, "Дата рождения"),
    ("COMPANY_TITLE", "string", False, {}, "Название компании"),
    ("SOURCE_ID", "crm_status", False, {"statusType": "SOURCE"}, "Источник"),
    ("SOURCE_DESCRIPTION", "string", False, {}, "Дополнительно об источнике"),
    ("STATUS_ID", "crm_status", False, {"statusType": "STATUS"}, "Стадия"),
    ("STATUS_DESCRIPTION", "string", False, {}, "Дополнительно о стадии"),
    ("STATUS_SEMANTIC_ID", "string", True, {}, "Состояние статуса"),
    ("POST", "string", False, {}, "Должность"),
    ("ADDRESS", "string", False, {}, "Адрес"),
    ("ADDRESS_2", "string", False, {}, "Адрес (стр. 2)"),
    ("ADDRESS_CITY", "string", False, {}, "Город"),
    ("ADDRESS_POSTAL_CODE", "string", False, {}, "Почтовый индекс"),
    ("ADDRESS_REGION", "string", False, {}, "Район"),
    ("ADDRESS_PROVINCE", "string", False, {}, "Область"),
    ("ADDRESS_COUNTRY", "string", False, {}, "Страна"),
    ("ADDRESS_COUNTRY_CODE", "string", False, {}, "Код страны"),
    ("ADDRESS_LOC_ADDR_ID", "integer", False, {}, "Идентификатор адреса местоположения"),
    ("CURRENCY_ID", "crm_currency", False, {}, "Валюта"),
    ("OPPORTUNITY", "double", False, {}, "Сумма"),
    ("IS_MANUAL_OPPORTUNITY", "char", False, {}, "IS_MANUAL_OPPORTUNITY"),
    ("OPENED", "char", False, {}, "Доступен для всех"),
    ("COMMENTS", "string", False, {}, "Комментарий"),
    ("HAS_PHONE", "char", True, {}, "Задан телефон"),
    ("HAS_EMAIL", "char", True, {}, "Задан e-mail"),
    ("HAS_IMOL", "char", True, {}, "Задана открытая линия"),
    ("ASSIGNED_BY_ID", "user", False, {}, "Ответственный"),
    ("CREATED_BY_ID", "user", True, {}, "Кем создан"),
    ("MODIFY_BY_ID", "user", True, {}, "Кем изменен"),
    ("MOVED_BY_ID", "user", True, {}, "MOVED_BY_ID"),
    ("DATE_CREATE", "datetime", True, {}, "Дата создания"),
    ("DATE_MODIFY", "datetime", True, {}, "Дата изменения"),
    ("MOVED_TIME", "datetime", True, {}, "MOVED_TIME"),
    ("COMPANY_ID", "crm_company", False, {"settings": {"parentEntityTypeId": 4}}, "Компания"),
    ("CONTACT_ID", "crm_contact", False, {"isDeprecated": True}, "Контакт"),
    ("CONTACT_IDS", "crm_contact", False, {"isMultiple": True}, "CONTACT_IDS"),
    ("IS_RETURN_CUSTOMER", "char", True, {}, "Повторный лид"),
    ("DATE_CLOSED", "datetime", True, {}, "Дата завершения"),
    ("ORIGINATOR_ID", "string", False, {}, "Внешний источник"),
    ("ORIGIN_ID", "string", False, {}, "Идентификатор элемента во внешнем источнике"),
    ("UTM_SOURCE", "string", False, {}, "Рекламная система"),
    ("UTM_MEDIUM", "string", False, {}, "Тип трафика"),
    ("UTM_CAMPAIGN", "string", False, {}, "Обозначение рекламной кампании"),
    ("UTM_CONTENT", "string", False, {}, "Содержание кампании"),
    ("UTM_TERM", "string", False, {}, "Условие поиска кампании"),
    ("LAST_ACTIVITY_TIME", "datetime", True, {}, "LAST_ACTIVITY_TIME"),
    ("LAST_ACTIVITY_BY", "user", True, {}, "LAST_ACTIVITY_BY"),
    ("PHONE", "crm_multifield", False, {"isMultiple": True}, "Телефон"),
    ("EMAIL", "crm_multifield", False, {"isMultiple": True}, "E-mail"),
    ("WEB", "crm_multifield", False, {"isMultiple": True}, "Сайт"),
    ("IM", "crm_multifield", False, {"isMultiple": True}, "Мессенджер"),
    ("LINK", "crm_multifield", False, {"isMultiple": True}, "LINK"),
)

#: The communication fields of a lead (type `crm_multifield`).
MULTIFIELDS: tuple[str, ...] = tuple(r[0] for r in _LEAD_STANDARD if r[1] == "crm_multifield")
LEAD_STANDARD_FIELD_NAMES: tuple[str, ...] = tuple(row[0] for row in _LEAD_STANDARD)


def build_lead_fields(user_fields: tuple[UserField, ...]) -> dict[str, dict[str, Any]]:
    """The `result` of `crm.lead.fields` for a portal with these (lead) user fields."""
    return _build(_LEAD_STANDARD, (), user_fields)


__all__ = [
    "ALL_USER_FIELD_KINDS",
    "EXTRA_USER_FIELDS",
    "LEAD_STANDARD_FIELD_NAMES",
    "MULTIFIELDS",
    "PARENT_TYPES",
    "STANDARD_FIELD_NAMES",
    "USER_FIELDS",
    "USER_FIELD_KINDS",
    "UserField",
    "build_fields",
    "build_lead_fields",
    "select_user_fields",
]
