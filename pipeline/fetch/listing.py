"""The `list` strategy's wire side: `batch` requests of `crm.<entity>.list` commands with an `@ID`
filter, and their answers split per requested ID. Pure.

One command asks for up to `LIST_PAGE` known IDs:

    crm.<entity>.list?filter[@ID][]=..&order[ID]=ASC&start=-1&select[]=ID&select[]=TITLE&...

* `start=-1` skips the count query (REST docs `settings/performance/huge-data.md`); with at
  most one page of IDs asked for, one page is the whole answer.
* `select` names every field `crm.<entity>.fields` describes: `*` and `UF_*` leave out multiple
  fields (REST docs `api-reference/crm/deals/crm-deal-list.md`, parameter `select`).
* Deleted and hidden deals are silently absent (list methods filter by row permissions, crm
  `restservice.php` `innerGetList`): such IDs come back as `absent`, for a follow-up
  `crm.<entity>.get` that names the reason.
* A row whose ID was not asked for means the portal did not apply the filter: `stray`.

List rows show user fields in other forms than `crm.<entity>.get` (both run crm `restservice.php`
`externalizeFields`, but get reads user fields through main's `CUserTypeManager` and adds
`?? ''`, list reads the joined columns): an empty user field is `null` instead of `""`, a
boolean one JSON `true`/`false` instead of `"1"`/`"0"` (REST docs `crm-lead-list.md` example;
main `booleantype.php`), an empty single file field `null` where get leaves the key out. Rows
are handed on as they come: the normaliser reads both forms alike (`pipeline.normalise`: a null
user field a payload carries is get's empty form, a boolean user field takes JSON booleans),
which costs a few vectorised calls per answer instead of a rewrite of every row.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any
from urllib.parse import quote

from pipeline.entity import DEAL
from pipeline.fetch.batch import CommandError, as_section, parse_error

#: Rows per list page, and so IDs per `@ID` filter (REST docs `crm-deal-list.md`: 50 per page).
LIST_PAGE = 50

#: List commands per `batch` (at most; fewer when the operating window or the 60 s cap says so).
#: Not the 50 a batch allows: orjson decodes through a buffer ~12-15 times its input, and a
#: 2,500-row answer (~5.5 MB of JSON) decoded whole peaked at ~80 MB, a 1,000-row one at ~33 MB
#: (10 commands: ~16 MB, but ~15% more CPU a deal: smaller parts to normalise, more requests).
#: A list answer is now decoded a command's section at a time (`pipeline.fetch.sections`), which
#: bounds that buffer whatever the count; the answer's decoded rows (~7 kB a deal) still grow
#: with it. Twenty commands still carry 1,000 rows per request, so the request rate (2 per
#: second on standard plans, REST docs `limits.md`) affords far more rows than the operating
#: budget lets list calls fetch.
LIST_BATCH_COMMANDS = 20


def list_select(fields: Mapping[str, Any]) -> list[str]:
    """Every field the fields method describes, ID first, named one by one."""
    names = [str(name) for name in fields]
    return ["ID", *(n for n in names if n != "ID")]


def select_query(select: Sequence[str]) -> str:
    """The `select[]=...` part of a command's query, built once per run."""
    return "&".join(f"select%5B%5D={quote(name, safe='')}" for name in select)


_ID_FILTER = "filter%5B%40ID%5D%5B%5D="


def list_command(ids: Sequence[int], select_part: str, method: str = DEAL.list_method) -> str:
    """One `cmd` entry: the list method for exactly `ids` (validated integers), ID ascending."""
    # One join over `map` (C loops), not an f-string per ID; `int` keeps anything that is not
    # an integer from reaching the query unescaped.
    wanted = _ID_FILTER + ("&" + _ID_FILTER).join(map(str, map(int, ids)))
    return f"{method}?{wanted}&order%5BID%5D=ASC&start=-1&{select_part}"


def list_key(index: int) -> str:
    """A non-numeric batch key, so PHP keeps the sections objects (see `pipeline.fetch.batch`)."""
    return f"l{index}"


def chunk_ids(ids: Sequence[int], size: int = LIST_PAGE) -> list[list[int]]:
    return [list(ids[i : i + size]) for i in range(0, len(ids), size)]


def build_list_batch(
    chunks: Sequence[Sequence[int]], select_part: str, method: str = DEAL.list_method
) -> dict[str, Any]:
    """The JSON body of a `batch` of list commands, one per chunk (1..50 chunks), `halt=0`."""
    if not 1 <= len(chunks) <= 50:
        raise ValueError("a batch carries 1..50 commands")
    cmd = {list_key(n): list_command(chunk, select_part, method) for n, chunk in enumerate(chunks)}
    return {"halt": 0, "cmd": cmd}


@dataclass(slots=True)
class ListReply:
    """A list batch answer split per requested ID. Every requested ID is in exactly one of
    `deals`, `absent`, `errors`, `missing`; `stray` holds IDs that came back unasked."""

    deals: dict[int, dict[str, Any]] = field(default_factory=dict)
    #: Asked for, not returned: deleted, hidden, or never existed.
    absent: list[int] = field(default_factory=list)
    #: The command carrying the ID failed (one entry per ID of that command).
    errors: dict[int, CommandError] = field(default_factory=dict)
    #: The command carrying the ID was not executed.
    missing: list[int] = field(default_factory=list)
    stray: list[str] = field(default_factory=list)


def parse_list_batch(result: Any, chunks: Sequence[Sequence[int]]) -> ListReply:
    """Split the top-level `result` of a list batch answer into per-ID outcomes (rows keep
    list's form, see the module docstring)."""
    keys = [list_key(n) for n in range(len(chunks))]
    body = result if isinstance(result, dict) else {}
    results = as_section(body.get("result"), keys)
    errors = as_section(body.get("result_error"), keys)
    reply = ListReply()
    for key, chunk in zip(keys, chunks, strict=True):
        if key in results:
            _take_rows(results[key], chunk, reply)
        elif key in errors:
            error = parse_error(errors[key])
            for deal_id in chunk:
                reply.errors[deal_id] = error
        else:
            reply.missing.extend(chunk)
    return reply


def _take_rows(rows: Any, chunk: Sequence[int], reply: ListReply) -> None:
    if isinstance(rows, dict):
        rows = list(rows.values()) if rows else []  # PHP's empty array, or an odd PHP list
    if not isinstance(rows, list):
        reply.stray.append(f"a {type(rows).__name__} instead of a list of deals")
        return
    if _take_as_asked(rows, chunk, reply.deals):
        return
    found = _found_by_id(rows, chunk, reply)
    deals = reply.deals
    for deal_id in chunk:
        payload = found.get(deal_id)
        if payload is None:
            reply.absent.append(deal_id)
        else:
            deals[deal_id] = payload


#: A row's ID, looked up in C (`map`), for `_take_as_asked`.
_ROW_ID = itemgetter("ID")


def _take_as_asked(rows: list[Any], chunk: Sequence[int], deals: dict[int, dict[str, Any]]) -> bool:
    """Take the rows into `deals` when they are exactly the chunk's deals, one row per
    requested ID in the order asked for, each a dict whose ID is a string that parses to it:
    what a portal sends for a chunk of which none is deleted or hidden (`order[ID]=ASC`; IDs
    come as strings, REST docs `crm-deal-get.md`). False (nothing taken) for anything else.

    The same outcome as `_found_by_id` then gives, in a few C-level passes (`map`, one list
    comparison) instead of a Python step per row: the same int() parse of the same strings
    (bools and other types go the exact way), and no row left over to be a stray or absent.
    `parse_list_batch` of 30 simulator answers of 1,000 rows: 13.5 -> 10.5 ms CPU."""
    if len(rows) != len(chunk) or set(map(type, rows)) - {dict}:
        return False
    try:
        texts = list(map(_ROW_ID, rows))
    except KeyError:  # a row without an ID: a stray
        return False
    if set(map(type, texts)) - {str}:
        return False
    try:
        if list(map(int, texts)) != chunk:
            return False
    except ValueError:  # an ID that is not a number: a stray
        return False
    found = dict(zip(chunk, rows, strict=True))
    if len(found) != len(rows):  # an ID asked for twice: its first row, the exact way
        return False
    deals.update(found)
    return True


def _found_by_id(
    rows: list[Any], chunk: Sequence[int], reply: ListReply
) -> dict[int, dict[str, Any]]:
    """The rows by requested ID, each row's ID parsed; rows that match no requested ID are
    `stray` (the first of two rows with one ID is kept)."""
    wanted = set(chunk)
    found: dict[int, dict[str, Any]] = {}
    for row in rows:
        raw = row.get("ID") if isinstance(row, dict) else None
        deal_id = _row_id(raw)
        if deal_id is None or deal_id not in wanted:
            reply.stray.append(str(raw)[:40])
            continue
        assert isinstance(row, dict)
        found.setdefault(deal_id, row)
    return found


def _row_id(raw: Any) -> int | None:
    if isinstance(raw, bool):
        return None
    try:
        # IDs arrive as strings (REST docs `crm-deal-get.md`): no str() copy for those.
        return int(raw if type(raw) is str else str(raw))
    except ValueError:
        return None


__all__ = [
    "LIST_BATCH_COMMANDS",
    "LIST_PAGE",
    "ListReply",
    "build_list_batch",
    "chunk_ids",
    "list_command",
    "list_key",
    "list_select",
    "parse_list_batch",
    "select_query",
]
