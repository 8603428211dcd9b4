"""Typed normalisation: `crm.deal.fields` metadata becomes an Arrow schema; deal payloads become
typed Arrow tables plus record errors. Pure: no I/O (callers fetch metadata and write snapshots).

    schema = DealSchema.from_fields(fields)          # the `result` of crm.deal.fields
    table, errors = normalise_deals(payloads, schema, ids=ids)
    drift = compare_snapshots(previous_snapshot, schema.snapshot())
"""

from pipeline.normalise.drift import SchemaDrift, TypeChange, compare_snapshots
from pipeline.normalise.schema import EXTRA_COLUMN, Column, DealSchema
from pipeline.normalise.table import TableBuilder, normalise_deals

__all__ = [
    "EXTRA_COLUMN",
    "Column",
    "DealSchema",
    "SchemaDrift",
    "TableBuilder",
    "TypeChange",
    "compare_snapshots",
    "normalise_deals",
]
