"""What makes an export a deal export (or a lead export): one frozen descriptor per CRM entity.

Everything entity-specific lives here: the REST methods, the ID, modified-time and created-time
fields, how a get answer is unwrapped, the standard column order, the per-field type overrides,
the default partition column and the words used in messages. The rest of the package reads these
values instead of naming an entity, so a second entity is a second descriptor, not a fork.

Sources (official REST docs, `bitrix-tools/b24-rest-docs` / apidocs.bitrix24.com):

* deals: `api-reference/crm/deals/crm-deal-get.md`, `crm-deal-list.md`, `crm-deal-fields.md`;
* leads: `api-reference/crm/leads/crm-lead-get.md`, `crm-lead-list.md`, `crm-lead-fields.md`.
  Leads carry the communication fields `PHONE`, `EMAIL`, `WEB`, `IM`, `LINK` of type
  `crm_multifield` (`isMultiple: true`): lists of `{"ID", "VALUE_TYPE", "VALUE", "TYPE_ID"}`,
  absent from a get answer when empty (the `crm-lead-get.md` example answer has `PHONE` and
  `IM` but no `EMAIL`, with `HAS_EMAIL: "N"`). `CONTACT_IDS` is listed by `crm.lead.fields`
  but is not in the get answer, as for deals.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

EntityName = Literal["deal", "lead"]

#: Per-field type overrides: the portal types money amounts `double`, but they arrive as decimal
#: strings (`"OPPORTUNITY": "1000000.00"` in the get examples of both entities) and must sum
#: exactly. The values name a kind of `pipeline.normalise.mapping.OVERRIDE_KINDS`.
_MONEY_AMOUNTS: Final[Mapping[str, str]] = {"OPPORTUNITY": "decimal", "TAX_VALUE": "decimal"}


@dataclass(frozen=True, slots=True)
class Entity:
    """One CRM entity as the exporter sees it. Pure data; build no other instances at run time.

    `payload_key`: where the record sits inside a get answer's `result` (None: `result` is the
    record itself, as for `crm.deal.get` and `crm.lead.get`; `crm.item.get` would say "item").
    `omitted`: fields the fields method lists but the get method never sends, with the reason
    kept in the schema snapshot (an always-null column would read as "none").
    """

    name: EntityName
    plural: str
    title: str
    get_method: str
    list_method: str
    fields_method: str
    standard_order: tuple[str, ...]
    id_field: str = "ID"
    modified_field: str = "DATE_MODIFY"
    created_field: str = "DATE_CREATE"
    payload_key: str | None = None
    omitted: Mapping[str, str] = field(default_factory=dict)
    type_overrides: Mapping[str, str] = field(default_factory=lambda: dict(_MONEY_AMOUNTS))

    @property
    def partition_column(self) -> str:
        """The default partition column: the creation time, which never changes for a record,
        so a record stays in its partition across runs."""
        return self.created_field

    @property
    def id_noun(self) -> str:
        """`deal ID`, as in "not a valid deal ID"."""
        return f"{self.name} ID"

    def unwrap(self, result: Any) -> Any:
        """The record inside a get answer's `result` (the `result` itself for these methods)."""
        if self.payload_key is None:
            return result
        return result.get(self.payload_key) if isinstance(result, dict) else None

    def get_command(self, record_id: int) -> str:
        """One `batch` `cmd` entry for `record_id`. A validated integer ID needs no escaping,
        and `urlencode` per command was a seventh of the exporter's CPU; `int()` keeps anything
        else from reaching the query unescaped."""
        return f"{self.get_method}?ID={int(record_id)}"

    def tag_fingerprint(self, fingerprint: str) -> str:
        """The input fingerprint of this entity's export: the same IDs of another entity are
        another input, so an output root of one entity is never resumed with another's rows.
        Deals keep the bare fingerprint, which outputs written before entities existed hold."""
        return fingerprint if self.name == "deal" else f"{self.name}:{fingerprint}"


# The fields of REST docs `crm-deal-fields.md`, related fields grouped.
_DEAL_ORDER: Final[tuple[str, ...]] = (
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

# The fields of REST docs `crm-lead-fields.md`, in the order of its example answer, with the
# record's own fields first, then people and times, then the source and UTM fields, and the
# communication multifields last.
_LEAD_ORDER: Final[tuple[str, ...]] = (
    "ID",
    "TITLE",
    "HONORIFIC",
    "NAME",
    "SECOND_NAME",
    "LAST_NAME",
    "BIRTHDATE",
    "COMPANY_TITLE",
    "SOURCE_ID",
    "SOURCE_DESCRIPTION",
    "STATUS_ID",
    "STATUS_DESCRIPTION",
    "STATUS_SEMANTIC_ID",
    "POST",
    "ADDRESS",
    "ADDRESS_2",
    "ADDRESS_CITY",
    "ADDRESS_POSTAL_CODE",
    "ADDRESS_REGION",
    "ADDRESS_PROVINCE",
    "ADDRESS_COUNTRY",
    "ADDRESS_COUNTRY_CODE",
    "ADDRESS_LOC_ADDR_ID",
    "CURRENCY_ID",
    "OPPORTUNITY",
    "IS_MANUAL_OPPORTUNITY",
    "OPENED",
    "COMMENTS",
    "HAS_PHONE",
    "HAS_EMAIL",
    "HAS_IMOL",
    "ASSIGNED_BY_ID",
    "CREATED_BY_ID",
    "MODIFY_BY_ID",
    "MOVED_BY_ID",
    "DATE_CREATE",
    "DATE_MODIFY",
    "MOVED_TIME",
    "COMPANY_ID",
    "CONTACT_ID",
    "CONTACT_IDS",
    "IS_RETURN_CUSTOMER",
    "DATE_CLOSED",
    "ORIGINATOR_ID",
    "ORIGIN_ID",
    "UTM_SOURCE",
    "UTM_MEDIUM",
    "UTM_CAMPAIGN",
    "UTM_CONTENT",
    "UTM_TERM",
    "LAST_ACTIVITY_TIME",
    "LAST_ACTIVITY_BY",
    "PHONE",
    "EMAIL",
    "WEB",
    "IM",
    "LINK",
)

DEAL: Final = Entity(
    name="deal",
    plural="deals",
    title="Deal",
    get_method="crm.deal.get",
    list_method="crm.deal.list",
    fields_method="crm.deal.fields",
    standard_order=_DEAL_ORDER,
    # REST docs `crm-deal-fields.md`, the note under the response.
    omitted={"CONTACT_IDS": "not returned by crm.deal.get (use crm.deal.contact.items.get)"},
)

LEAD: Final = Entity(
    name="lead",
    plural="leads",
    title="Lead",
    get_method="crm.lead.get",
    list_method="crm.lead.list",
    fields_method="crm.lead.fields",
    standard_order=_LEAD_ORDER,
    # Listed by `crm-lead-fields.md`, absent from the `crm-lead-get.md` answer and its field
    # table; the bindings have their own method (`crm-lead-contact-items-get.md`).
    omitted={"CONTACT_IDS": "not returned by crm.lead.get (use crm.lead.contact.items.get)"},
)

ENTITIES: Final[Mapping[str, Entity]] = {e.name: e for e in (DEAL, LEAD)}
ENTITY_NAMES: Final[tuple[str, ...]] = tuple(ENTITIES)


def entity_named(name: str) -> Entity:
    """The descriptor called `name` (`deal`, `lead`); ValueError naming the known ones."""
    found = ENTITIES.get(name.strip().lower()) if isinstance(name, str) else None
    if found is None:
        raise ValueError(f"unknown entity {name!r}: expected one of {', '.join(ENTITY_NAMES)}")
    return found


__all__ = ["DEAL", "ENTITIES", "ENTITY_NAMES", "LEAD", "Entity", "EntityName", "entity_named"]
