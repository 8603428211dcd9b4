"""The portal methods the fetch stage calls, named in one place (REST docs
`api-reference/crm/deals/`): the strategies, the health probe and the schema call map them."""

from __future__ import annotations

DEAL_GET = "crm.deal.get"
DEAL_LIST = "crm.deal.list"
DEAL_FIELDS = "crm.deal.fields"

__all__ = ["DEAL_FIELDS", "DEAL_GET", "DEAL_LIST"]
