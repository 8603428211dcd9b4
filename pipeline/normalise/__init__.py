"""Typed normalisation: an entity's fields metadata becomes an Arrow schema; its payloads become
typed Arrow tables plus record errors. Pure: no I/O (callers fetch metadata and write snapshots).

    schema = DealSchema.from_fields(fields)          # the `result` of the deal fields method
    schema = EntitySchema.from_fields(fields, LEAD)  # the same for leads
    table, errors = normalise_deals(payloads, schema, ids=ids)
    drift = compare_snapshots(previous_snapshot, schema.snapshot())
"""

from pipeline.normalise.drift import SchemaDrift, TypeChange, compare_snapshots
from pipeline.normalise.schema import EXTRA_COLUMN, Column, DealSchema, EntitySchema
from pipeline.normalise.table import TableBuilder, normalise_deals

__all__ = [
    "EXTRA_COLUMN",
    "Column",
    "DealSchema",
    "EntitySchema",
    "SchemaDrift",
    "TableBuilder",
    "TypeChange",
    "compare_snapshots",
    "normalise_deals",
]
