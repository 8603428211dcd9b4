"""The audit every scenario ends in: each requested ID exactly once, every value as the portal
has it, nothing half-written where a reader looks.

The truth is the simulator's own state (`portal.deal_wire`), typed through the same schema
mapping the pipeline uses, so a value that changed anywhere between the wire and the Parquet file
shows up as a mismatch naming the deal and the column.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from bench.chaos.harness import check
from pipeline.normalise import DealSchema, normalise_deals
from pipeline.simulator import Portal


@dataclass(frozen=True)
class Audit:
    """What an audited output holds."""

    exported: int
    failed_permanent: int
    failed_retryable: int
    invalid_input: int
    values_checked: int
    #: Deals the portal cannot answer (poison), each in the sidecar with its expected code;
    #: counted here and not in `failed_permanent` / `failed_retryable`.
    unanswerable: int = 0

    def describe(self) -> str:
        parts = [f"{self.exported} exported"]
        if self.failed_permanent:
            parts.append(f"{self.failed_permanent} permanent")
        if self.failed_retryable:
            parts.append(f"{self.failed_retryable} retryable")
        if self.unanswerable:
            parts.append(f"{self.unanswerable} unanswerable with their portal code")
        if self.invalid_input:
            parts.append(f"{self.invalid_input} invalid lines")
        return ", ".join(parts) + f"; {self.values_checked} rows equal the portal"


def read_data(root: Path) -> pa.Table:
    """The dataset as a reader sees it: hive partitions, `_`/`.` files skipped."""
    return ds.dataset(root, format="parquet", partitioning="hive").to_table()


def read_sidecar(root: Path) -> pa.Table | None:
    files = sorted((root / "_errors").glob("*.parquet"))
    if not files:
        return None
    return pa.concat_tables(pq.read_table(f) for f in files)


def temp_files(root: Path) -> list[Path]:
    """Temp or partial files: anything a writer had not finished."""
    return [
        p
        for p in root.rglob("*")
        if p.is_file() and (p.name.startswith(".") or ".tmp" in p.name or p.suffix == ".partial")
    ]


def visible_data_files(root: Path) -> list[Path]:
    """Files a dataset reader would open: no path part starts with `_` or `.`."""
    return [
        p
        for p in root.rglob("*")
        if p.is_file()
        and not any(part.startswith(("_", ".")) for part in p.relative_to(root).parts)
    ]


def check_readable(root: Path) -> int:
    """Every file a reader would open is a whole Parquet file; the IDs in it are unique.

    Holds at every moment, even right after a kill: files are renamed into place only when whole.
    Returns the number of rows visible.
    """
    for path in visible_data_files(root):
        try:
            pq.read_metadata(path)
        except Exception as exc:
            raise_reason = f"half-written file visible to readers: {path.relative_to(root)}: {exc}"
            check(False, raise_reason)
    if not visible_data_files(root):
        return 0
    ids = read_data(root).column("ID").to_pylist()
    check(len(ids) == len(set(ids)), "a reader sees a deal twice in the data")
    return len(ids)


def _first_difference(got: list[dict[str, Any]], want: list[dict[str, Any]]) -> str:
    for g, w in zip(got, want, strict=True):
        if g != w:
            for key in w:
                if g.get(key) != w[key]:
                    ours, theirs = g.get(key), w[key]
                    return f"deal {w.get('ID')} column {key}: exported {ours!r}, portal {theirs!r}"
    return "rows differ"


def audit_output(
    root: Path,
    portal: Portal,
    wanted: set[int],
    *,
    invalid_lines: int | None = None,
    allow_retryable: bool = False,
    completed: bool = True,
    expected_failures: Mapping[int, str | None] | None = None,
    values: bool = True,
) -> Audit:
    """Check an output root against the portal; raise ScenarioFailed naming the first breach.

    * every ID of `wanted` is in the data or in a fetch row of the sidecar, never both, never
      twice; no other ID appears;
    * the data holds exactly the readable deals, unless a retryable failure explains a missing
      one (only when `allow_retryable`); deleted/hidden deals are never data;
    * `expected_failures` (deal ID -> sidecar code, None for any): readable deals the portal
      cannot answer (poison); each must be a fetch row with that code, retryable or not;
    * every exported row equals the portal's deal typed by the pipeline's own schema mapping
      (unless `values` is False: for a check half-way whose rows the final audit compares);
    * `invalid_lines` input rows (when given); a completed run has `_SUCCESS`, a manifest whose
      counts agree, no lock and no temp files.
    """
    check(root.is_dir(), f"no output at {root}")
    junk = temp_files(root)
    check(not junk, f"temp files left behind: {[str(p.relative_to(root)) for p in junk[:3]]}")
    check_readable(root)
    data = read_data(root) if visible_data_files(root) else None
    data_ids: list[int] = [] if data is None else data.column("ID").to_pylist()
    side = read_sidecar(root)
    fetch_rows: dict[int, bool] = {}
    fetch_codes: dict[int, str] = {}
    inputs = 0
    if side is not None:
        for i, stage, retryable, code in zip(
            side.column("id").to_pylist(),
            side.column("stage").to_pylist(),
            side.column("retryable").to_pylist(),
            side.column("code").to_pylist(),
            strict=True,
        ):
            if stage == "fetch":
                check(i not in fetch_rows, f"deal {i} has two fetch rows in the sidecar")
                fetch_rows[i] = bool(retryable)
                fetch_codes[i] = str(code or "")
            elif stage == "input":
                inputs += 1
    data_set = set(data_ids)
    check(len(data_ids) == len(data_set), "a deal was written twice")
    both = data_set & fetch_rows.keys()
    check(not both, f"deal {min(both) if both else 0} is both data and a sidecar failure")
    accounted = data_set | fetch_rows.keys()
    missing = wanted - accounted
    check(not missing, f"{len(missing)} requested IDs unaccounted for, e.g. {sorted(missing)[:5]}")
    extra = accounted - wanted
    check(not extra, f"{len(extra)} IDs nobody asked for, e.g. {sorted(extra)[:5]}")
    if invalid_lines is not None:
        check(
            inputs == invalid_lines, f"{inputs} input rows in the sidecar, expected {invalid_lines}"
        )

    expected = dict(expected_failures or {})
    for deal_id, code in sorted(expected.items()):
        check(deal_id in fetch_rows, f"deal {deal_id}, which the portal cannot answer, is not a "
              "sidecar fetch row")  # fmt: skip
        got = fetch_codes[deal_id]
        check(
            code in (None, got), f"deal {deal_id} is in the sidecar with code {got!r}, not {code!r}"
        )
    visible = (set(portal.visible_ids) & wanted) - expected.keys()
    not_readable = data_set - visible
    check(not not_readable, f"deleted/hidden deals exported: {sorted(not_readable)[:5]}")
    lost = visible - data_set
    retryable = {i for i, r in fetch_rows.items() if r} - expected.keys()
    if allow_retryable:
        unexplained = lost - retryable
        check(not unexplained, f"readable deals failed permanently: {sorted(unexplained)[:5]}")
    else:
        check(not lost, f"{len(lost)} readable deals missing from the data: {sorted(lost)[:5]}")
        check(not retryable, f"{len(retryable)} retryable failures left: {sorted(retryable)[:5]}")

    checked = 0
    if values and data is not None and data.num_rows:
        schema = DealSchema.from_fields(portal.fields())
        ordered = sorted(data_ids)
        wires = [portal.deal_wire(i) for i in ordered]
        check(all(w is not None for w in wires), "an exported deal has no wire form")
        want, _ = normalise_deals(wires, schema, ids=ordered)  # type: ignore[arg-type]
        got = data.sort_by("ID").select(want.column_names)
        got_rows, want_rows = got.to_pylist(), want.to_pylist()
        if got_rows != want_rows:
            check(False, "exported values differ: " + _first_difference(got_rows, want_rows))
        checked = len(got_rows)

    if completed:
        check((root / "_SUCCESS").exists(), "no _SUCCESS marker after a completed run")
        check(not (root / "_lock").exists(), "the lock outlived the run")
        manifest = json.loads((root / "_manifest.json").read_text())
        check(manifest.get("completed") is True, "manifest does not say completed")
        exported = manifest.get("counts", {}).get("exported")
        check(
            exported == len(data_ids),
            f"manifest says {exported} exported, data has {len(data_ids)}",
        )
    return Audit(
        exported=len(data_ids),
        failed_permanent=sum(1 for i, r in fetch_rows.items() if not r and i not in expected),
        failed_retryable=len(retryable),
        invalid_input=inputs,
        values_checked=checked,
        unanswerable=len(expected),
    )


#: The element type of each multiple field's list, by Bitrix24 type, as the README documents
#: the columns (IDs and references int64, datetimes timestamp UTC, dates date32, money and
#: files structs); anything else, a type unknown to the exporter included, is text.
LIST_ELEMENTS: dict[str, Callable[[pa.DataType], bool]] = {
    "integer": pa.types.is_int64,
    "enumeration": pa.types.is_int64,
    "employee": pa.types.is_int64,
    "double": pa.types.is_float64,
    "date": pa.types.is_date32,
    "datetime": lambda t: pa.types.is_timestamp(t) and t.tz == "UTC",
    "money": pa.types.is_struct,
    "file": pa.types.is_struct,
}


def empty_form(value: Any) -> str | None:
    """The wire form of an empty multiple field (`false`, `""` or `[]`), or None."""
    if value is False:
        return "false"
    if value == "":
        return "empty_string"
    if isinstance(value, list) and not value:
        return "empty_list"
    return None


@dataclass(frozen=True)
class MultiplesAudit:
    """What the multiple fields of an output hold: per field, its Bitrix24 type and how often
    each empty wire form arrived (all of them exported as `[]`)."""

    types: dict[str, str]
    forms: dict[str, Counter[str]]
    values_checked: int
    normalise_rows: int

    @property
    def empties(self) -> int:
        return sum(sum(c.values()) for c in self.forms.values())


def audit_multiples(root: Path, portal: Portal) -> MultiplesAudit:
    """Check every multiple field of every exported deal against the wire, independently of
    the pipeline's own conversion: the column is a list of the documented element type; an
    empty form (`false`, `""`, `[]`) is exported as `[]`; a non-empty list keeps its length with
    no null element; and the sidecar has no `normalise` row (no value failed conversion)."""
    data = read_data(root)
    side = read_sidecar(root)
    normalise_rows = 0
    if side is not None:
        normalise_rows = side.column("stage").to_pylist().count("normalise")
    check(normalise_rows == 0, f"{normalise_rows} normalise rows in the sidecar")
    # CONTACT_IDS is multiple, but crm.deal.get does not send it (REST docs, crm-deal-get.md;
    # contacts come from crm.deal.contact.items.get).
    types = {
        name: str(desc["type"])
        for name, desc in portal.fields().items()
        if desc.get("isMultiple") and name != "CONTACT_IDS"
    }
    ids: list[int] = data.column("ID").to_pylist()
    wires = [portal.deal_wire(i) or {} for i in ids]
    forms: dict[str, Counter[str]] = {name: Counter() for name in types}
    checked = 0
    for name, bitrix_type in types.items():
        check(name in data.column_names, f"multiple field {name} is not a column")
        arrow_type = data.schema.field(name).type
        check(pa.types.is_list(arrow_type), f"{name} ({bitrix_type}) is {arrow_type}, not a list")
        element = arrow_type.value_type
        typed = LIST_ELEMENTS.get(bitrix_type, pa.types.is_string)
        check(typed(element), f"{name} ({bitrix_type}) is a list of {element}")
        for deal_id, wire, value in zip(ids, wires, data.column(name).to_pylist(), strict=True):
            if name not in wire:
                continue
            sent = wire[name]
            form = empty_form(sent)
            if form is not None:
                forms[name][form] += 1
                check(value == [], f"deal {deal_id} {name}: empty {form} exported as {value!r}")
            elif isinstance(sent, list):
                check(
                    isinstance(value, list) and len(value) == len(sent) and None not in value,
                    f"deal {deal_id} {name}: {len(sent)} values sent, exported {value!r}",
                )
            checked += 1
    return MultiplesAudit(types, forms, checked, normalise_rows)


def ids_file(path: Path, portal: Portal, *, seed: int, extra: tuple[str, ...] = ()) -> set[int]:
    """Write an ID file: every ID up to past the portal's end (gaps, deleted, hidden, never
    existed), some duplicates, `extra` lines, shuffled. Returns the unique valid IDs."""
    import random

    wanted = list(range(1, portal.max_id + 25))
    rng = random.Random(seed)
    lines = [str(i) for i in wanted] + [str(rng.choice(wanted)) for _ in range(40)] + list(extra)
    rng.shuffle(lines)
    path.write_text("\n".join(lines) + "\n")
    return set(wanted)


__all__ = [
    "LIST_ELEMENTS",
    "Audit",
    "MultiplesAudit",
    "audit_multiples",
    "audit_output",
    "check_readable",
    "empty_form",
    "ids_file",
    "read_data",
    "read_sidecar",
    "temp_files",
    "visible_data_files",
]
