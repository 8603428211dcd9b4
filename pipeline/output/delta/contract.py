"""The schema contract of a Delta output: which schema changes a run may write. Pure.

In the spirit of dlt's schema contracts (https://dlthub.com/docs/general-usage/schema-contracts):

    add-columns  (default) a new portal field becomes a new nullable column; a field whose type
                 changed stops the run with the drift report, before anything is written
    evolve       as add-columns, and a changed type is applied: the table is rewritten once
                 with that column cast to the new type (a value that cannot be cast stops the
                 run instead; nothing is dropped silently)
    freeze       any added field or changed type stops the run

A removed field never stops a run: its column stays; a deal the run updates keeps the value it
last had there (MERGE's update-all sets the columns the new data has), a new deal holds null.
"""

from __future__ import annotations

from typing import Literal

from pipeline.errors import OutputError
from pipeline.normalise import SchemaDrift

SchemaContract = Literal["add-columns", "evolve", "freeze"]
CONTRACTS: tuple[str, ...] = ("add-columns", "evolve", "freeze")


def check(contract: str, drift: SchemaDrift, *, setting: str = "output.schema_contract") -> None:
    """Raise OutputError (with the drift report) when `contract` forbids `drift`."""
    refused = list(drift.type_changed)
    if contract == "evolve":
        return
    lines = [f"field type changed: {change}" for change in refused]
    if contract == "freeze":
        lines = [f"field added: {name}" for name in drift.added] + lines
    if not lines:
        return
    hint = (
        f"{setting} = 'evolve' applies changed types (the table is rewritten with the new type)"
        if contract != "freeze"
        else f"{setting} = 'add-columns' or 'evolve' lets the table follow the portal"
    )
    raise OutputError(
        "the portal's deal fields changed since the last completed run: "
        + "; ".join(lines)
        + f". {setting} = {contract!r} stops here, nothing was written; {hint}"
    )


def accepts_new_columns(contract: str) -> bool:
    return contract != "freeze"


__all__ = ["CONTRACTS", "SchemaContract", "accepts_new_columns", "check"]
