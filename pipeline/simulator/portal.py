"""The simulated portal's state: which IDs exist, which are hidden or deleted, and each deal.

The ID layout is drawn once from the seed (gaps of never-used IDs, a few long jumps, deleted
deals in between); deal contents are built on demand by `DealFactory` and kept in a bounded cache
of JSON bytes. `touch` and `delete` change the portal while it runs (incremental-load tests).
"""

from __future__ import annotations

import bisect
import random
from array import array
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any, Literal

import orjson

from pipeline.simulator.config import EmptyMultiple
from pipeline.simulator.fields import UserField, build_fields, build_lead_fields
from pipeline.simulator.generate import DealFactory
from pipeline.simulator.leads import LeadFactory
from pipeline.simulator.listform import ListPlan
from pipeline.simulator.timefmt import ServerZone

Status = Literal["visible", "hidden", "deleted", "missing"]
Kind = Literal["deal", "lead"]
#: Leads draw their ID layout from another stream of the seed: their own ID space.
_LEAD_LAYOUT_SALT = 0x1EAD
_MISSING, _VISIBLE, _HIDDEN, _DELETED = 0, 1, 2, 3
_NAMES: dict[int, Status] = {0: "missing", 1: "visible", 2: "hidden", 3: "deleted"}
#: Select signatures whose template rows are kept.
_PLANS_KEPT = 4


class Portal:
    """The source of truth the simulator serves from.

    `existing_ids` are all deals in the portal (hidden ones included), `visible_ids` those the
    webhook user can read, `hidden_ids` those answered with `Access denied.`, `deleted_ids`
    IDs that existed once and now answer `Not found`. All are sorted lists.
    """

    def __init__(self, *, deals: int, seed: int, zone: ServerZone,
                 user_fields: tuple[UserField, ...], hidden_fraction: float,
                 deleted_fraction: float, cache_size: int,
                 empty_multiple: EmptyMultiple = "mix", kind: Kind = "deal",
                 comment_bytes: int = 0) -> None:  # fmt: skip
        self.seed = seed
        self.zone = zone
        self.user_fields = user_fields
        self.kind: Kind = kind
        self._status = bytearray()
        self._ids = array("q")  # existing (visible + hidden), ascending
        layout_seed = seed if kind == "deal" else seed * 0x10001 + _LEAD_LAYOUT_SALT
        self._layout(deals, layout_seed, hidden_fraction, deleted_fraction)
        max_id = len(self._status) - 1
        self._factory: DealFactory = (
            DealFactory(seed, zone, user_fields, max_id, empty_multiple, comment_bytes)
            if kind == "deal"
            else LeadFactory(seed, zone, user_fields, max_id, empty_multiple)
        )
        self._modified: dict[int, int] = {}
        # FIFO eviction via OrderedDict: popping the front of a plain dict rescans the holes
        # left by earlier deletions and turns quadratic on a full cache.
        self._cache: OrderedDict[int, bytes] = OrderedDict()
        self._cache_size = max(0, cache_size)
        self._fields = (build_fields if kind == "deal" else build_lead_fields)(user_fields)
        self._fields_json = orjson.dumps(self._fields)
        #: name -> (is user field, is multiple, UF type), in `crm.deal.fields` order.
        self.fields_meta: dict[str, tuple[bool, bool, str]] = {
            name: (bool(d["isDynamic"]), bool(d["isMultiple"]), str(d["type"]))
            for name, d in self._fields.items()
        }
        self._lists: dict[str, list[int]] = {}
        self._plan_rows: dict[tuple[tuple[str, ...], bool], dict[int, dict[str, Any]]] = {}

    def _layout(self, deals: int, seed: int, hidden: float, deleted: float) -> None:
        rnd = random.Random(seed)
        r = rnd.random
        status = self._status
        status.append(_MISSING)  # ID 0 never exists
        ids = self._ids
        next_id = 1
        while len(ids) < deals:
            roll = r()
            if roll < 0.00005:  # a long jump, like IDs reserved by an import
                status.extend(bytes(1000))
                next_id += 1000
                continue
            if roll < 0.08:  # never used (failed insert, other entity took the sequence)
                status.append(_MISSING)
            elif roll < 0.08 + deleted:
                status.append(_DELETED)
            else:
                ids.append(next_id)
                status.append(_HIDDEN if r() < hidden else _VISIBLE)
            next_id += 1

    # -- queries ----------------------------------------------------------------------------

    def status(self, deal_id: int) -> Status:
        if 0 < deal_id < len(self._status):
            return _NAMES[self._status[deal_id]]
        return "missing"

    @property
    def max_id(self) -> int:
        return len(self._status) - 1

    def _ids_with(self, *codes: int) -> list[int]:
        st = self._status
        return [i for i in range(1, len(st)) if st[i] in codes]

    @property
    def existing_ids(self) -> list[int]:
        return list(self._ids)

    @property
    def visible_ids(self) -> list[int]:
        return self._ids_with(_VISIBLE)

    @property
    def hidden_ids(self) -> list[int]:
        return self._ids_with(_HIDDEN)

    @property
    def deleted_ids(self) -> list[int]:
        return self._ids_with(_DELETED)

    def fields(self) -> dict[str, Any]:
        """The `result` of `crm.deal.fields` (a fresh copy)."""
        result: dict[str, Any] = orjson.loads(self._fields_json)
        return result

    def fields_json(self) -> bytes:
        return self._fields_json

    def deal_json(self, deal_id: int) -> bytes:
        """Encoded wire dict of an existing deal (visible or hidden); cached."""
        cached = self._cache.get(deal_id)
        if cached is not None:
            return cached
        data = self._factory.encode(deal_id, self._modified.get(deal_id))
        if self._cache_size:
            # orjson's result keeps its growth buffer (~16 KiB for a 2.5 KiB deal); a cached
            # copy must be compact or a 1M-deal run holds gigabytes.
            data = bytes(bytearray(data))
            if len(self._cache) >= self._cache_size:
                self._cache.popitem(last=False)
            self._cache[deal_id] = data
        return data

    def deal_data(self, deal_id: int) -> dict[str, Any] | None:
        """The wire dict of any existing deal, hidden ones included; None otherwise."""
        if self.status(deal_id) not in ("visible", "hidden"):
            return None
        result: dict[str, Any] = orjson.loads(self.deal_json(deal_id))
        return result

    def deal_wire(self, deal_id: int) -> dict[str, Any] | None:
        """Exactly what `crm.deal.get` returns as `result` for this ID, or None when it answers
        with an error (missing, deleted or hidden)."""
        if self.status(deal_id) != "visible":
            return None
        return self.deal_data(deal_id)

    def list_rows(self, ids: Iterable[int], plan: ListPlan) -> list[dict[str, Any]]:
        """The list rows of existing records: what `plan.row` makes of each `deal_data`,
        without encoding or decoding a record. A row is its template's row (made once per plan)
        with the record's own values in their list form."""
        factory = self._factory
        dropped = factory.DROPPED_WHEN_EMPTY
        templates = self._row_templates(plan)
        wanted, shown = plan.wanted, plan.value
        # Fields shown as they are, which are most of a record's own values.
        plain = wanted.difference(plan.user_fields, dropped)
        rows: list[dict[str, Any]] = []
        for deal_id in ids:
            template, values = factory.parts(deal_id, self._modified.get(deal_id))
            base = templates.get(id(template))
            if base is None:
                base = templates[id(template)] = plan.row(_as_built(template, dropped))
            row = base.copy()  # assignment to existing keys keeps the plan's field order
            for name, value in values.items():
                if name in plain:
                    row[name] = value
                elif name in wanted:
                    row[name] = None if name in dropped and not value else shown(name, value)
            rows.append(row)
        return rows

    def _row_templates(self, plan: ListPlan) -> dict[int, dict[str, Any]]:
        """Template rows of one plan, by the `id()` of their template (templates live as long
        as the factory); a few plans at most, as a client sends one select signature."""
        rows = self._plan_rows.get(plan.key)
        if rows is None:
            if len(self._plan_rows) >= _PLANS_KEPT:
                self._plan_rows.clear()
            rows = self._plan_rows[plan.key] = {}
        return rows

    def date_modify(self, deal_id: int) -> int:
        """Unix time of the deal's DATE_MODIFY."""
        touched = self._modified.get(deal_id)
        return touched if touched is not None else self._factory.modified_at(deal_id)

    def date_create(self, deal_id: int) -> int:
        return self._factory.created_at(deal_id)

    def ids_after(self, after_id: int) -> Iterable[int]:
        """Existing IDs greater than `after_id`, ascending (for `crm.deal.list` scans)."""
        start = bisect.bisect_right(self._ids, after_id)
        for i in range(start, len(self._ids)):
            deal_id = self._ids[i]
            if self._status[deal_id] in (_VISIBLE, _HIDDEN):
                yield deal_id

    def readable(self, deal_id: int) -> bool:
        return 0 < deal_id < len(self._status) and self._status[deal_id] == _VISIBLE

    # -- changes while running --------------------------------------------------------------

    def touch(self, ids: Iterable[int], at: float) -> None:
        """Set DATE_MODIFY of existing deals to `at` (Unix time), as an edit in the CRM would."""
        for deal_id in ids:
            if self.status(deal_id) in ("visible", "hidden"):
                self._modified[deal_id] = int(at)
                self._cache.pop(deal_id, None)

    def delete(self, ids: Iterable[int]) -> None:
        """Delete existing deals: afterwards they answer `Not found`."""
        for deal_id in ids:
            if self.status(deal_id) in ("visible", "hidden"):
                self._status[deal_id] = _DELETED
                self._cache.pop(deal_id, None)

    def hide(self, ids: Iterable[int]) -> None:
        """Take read permission on existing deals away: afterwards they are missing from every
        listing and answer `Access denied`, as a deal moved out of the user's reach would."""
        for deal_id in ids:
            if self.status(deal_id) == "visible":
                self._status[deal_id] = _HIDDEN
                self._cache.pop(deal_id, None)

    def reveal(self, ids: Iterable[int]) -> None:
        """Give read permission back on hidden deals (the reverse of `hide`)."""
        for deal_id in ids:
            if self.status(deal_id) == "hidden":
                self._status[deal_id] = _VISIBLE
                self._cache.pop(deal_id, None)

    def create(self, count: int, at: float) -> list[int]:
        """Add `count` visible deals with the next unused IDs (as the CRM's auto-increment
        would), created and modified at `at`; returns their IDs. Their contents come from the
        seed like every deal's, so the same calls on the same seed give the same deals."""
        first = len(self._status)
        new_ids = list(range(first, first + max(0, count)))
        for deal_id in new_ids:
            self._status.append(_VISIBLE)
            self._ids.append(deal_id)
            self._modified[deal_id] = int(at)
        return new_ids

    def restore(self, ids: Iterable[int], at: float) -> list[int]:
        """Bring deleted deals back under their old IDs (as from the recycle bin), modified at
        `at`; returns the IDs restored (others are left alone)."""
        restored: list[int] = []
        for deal_id in ids:
            if self.status(deal_id) != "deleted":
                continue
            self._status[deal_id] = _VISIBLE
            position = bisect.bisect_left(self._ids, deal_id)
            if position == len(self._ids) or self._ids[position] != deal_id:
                self._ids.insert(position, deal_id)
            self._modified[deal_id] = int(at)
            self._cache.pop(deal_id, None)
            restored.append(deal_id)
        return restored


def _as_built(template: dict[str, Any], dropped: tuple[str, ...]) -> dict[str, Any]:
    """A template as `build` would answer it: without the empty fields it leaves out."""
    if not any(name in template and not template[name] for name in dropped):
        return template
    return {k: v for k, v in template.items() if k not in dropped or v}


__all__ = ["Portal", "Status"]
