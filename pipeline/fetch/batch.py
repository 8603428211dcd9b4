"""Building `batch` requests of get commands (`Entity.get_method`) and splitting the answers per
ID. Pure.

Keys are `d<ID>`: PHP turns sequential integer keys (and numeric strings) into a JSON list, so a
non-numeric key keeps `result` an object keyed by the key we sent (docs `batch.md`; b24pysdk
`call_batches.py` `_force_dict` handles both shapes). Shapes we
accept anyway, because the portal produces them:

* a section that is `[]` (PHP's empty array) or missing -> empty;
* a section that is a non-empty list -> entries keyed by command position (PHP list quirk);
* a failed command has no `result_time` entry;
* a key sent but absent from both `result` and `result_error` was not executed (e.g. after a
  halt): it is reported as `missing` so the caller re-queues it, never drops it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pipeline.entity import DEAL, Entity

#: The deal get method (kept for importers; a run uses its entity's `get_method`).
DEAL_GET = DEAL.get_method


def command_key(deal_id: int) -> str:
    """The batch key for one record: non-numeric so PHP keeps the section an object."""
    return f"d{deal_id}"


def deal_get_command(deal_id: int, entity: Entity = DEAL) -> str:
    """One `cmd` entry: the method plus its URL-encoded query (the server `parse_str`s it)."""
    return entity.get_command(deal_id)


def build_batch(ids: Sequence[int], entity: Entity = DEAL) -> dict[str, Any]:
    """The JSON body of a `batch` call fetching `ids` (distinct, 1..50 of them), `halt=0`."""
    if not 1 <= len(ids) <= 50:
        raise ValueError("a batch carries 1..50 commands")
    cmd = {command_key(i): entity.get_command(i) for i in ids}
    if len(cmd) != len(ids):
        raise ValueError("duplicate IDs in one batch")
    return {"halt": 0, "cmd": cmd}


def as_section(value: Any, keys: Sequence[str]) -> dict[str, Any]:
    """Normalise one section of a batch result to a dict keyed by command key.

    A list is keyed by command position (`keys[i]`); entries past the sent keys are dropped.
    Anything that is neither dict nor list (null, a scalar) counts as empty.
    """
    if isinstance(value, dict):
        return {str(k): v for k, v in value.items()}
    if isinstance(value, list):
        return {keys[i]: v for i, v in enumerate(value) if i < len(keys)}
    return {}


@dataclass(frozen=True, slots=True)
class CommandError:
    """One command's entry in `result_error` (or a plain get's per-ID error, with its
    status: inside a batch a command's error has none of its own)."""

    code: str
    description: str
    http_status: int | None = None


@dataclass(slots=True)
class BatchReply:
    """A batch answer split per sent ID. Every sent ID is in exactly one of the three fields."""

    deals: dict[int, dict[str, Any]] = field(default_factory=dict)
    errors: dict[int, CommandError] = field(default_factory=dict)
    missing: list[int] = field(default_factory=list)
    #: Operating seconds the answer reports, and for how many commands (see `batch_cost`).
    cost_s: float = 0.0
    costed: int = 0


def parse_batch(result: Any, ids: Sequence[int], entity: Entity = DEAL) -> BatchReply:
    """Split the top-level `result` of a batch answer into per-ID outcomes.

    A `result` entry that is not an object, or whose `ID` names another record, is reported as
    an error with code `BAD_PAYLOAD` (the caller treats unknown codes as transient).
    """
    id_field = entity.id_field
    keys = [f"d{i}" for i in ids]  # command_key, inlined: 50 per answer
    body = result if isinstance(result, dict) else {}
    results = as_section(body.get("result"), keys)
    errors = as_section(body.get("result_error"), keys)
    reply = BatchReply()
    for deal_id, key in zip(ids, keys, strict=True):
        if key in results and results[key] is not None:
            payload = entity.unwrap(results[key])
            if not isinstance(payload, dict):
                reply.errors[deal_id] = CommandError(
                    "BAD_PAYLOAD", f"{entity.name} is not a JSON object"
                )
            elif id_field in payload and str(payload[id_field]) != str(deal_id):
                reply.errors[deal_id] = CommandError(
                    "BAD_PAYLOAD", f"answer for ID {deal_id} carries ID {payload[id_field]!r}"
                )
            else:
                reply.deals[deal_id] = payload
        elif key in errors:
            reply.errors[deal_id] = parse_error(errors[key])
        else:
            reply.missing.append(deal_id)
    return reply


def batch_timings(result: Any) -> list[Mapping[str, Any]]:
    """The `result_time` entries of a batch answer's `result` (a dict or a PHP list), for the
    pacer. Failed commands carry none, so an all-failed batch yields [] (which teaches nothing,
    and must not be mistaken for an on-premise portal without counters)."""
    times = result.get("result_time") if isinstance(result, dict) else None
    values = times.values() if isinstance(times, dict) else times
    return [t for t in values or () if isinstance(t, dict)]


def batch_cost(result: Any) -> tuple[float, int]:
    """(operating seconds, commands) the `result_time` entries of a batch answer report: the
    `processing` time is what `operating` accumulates (REST docs `limits.md`)."""
    entries = batch_timings(result)
    total = 0.0
    for entry in entries:
        value = entry.get("processing")
        if isinstance(value, int | float) and not isinstance(value, bool):
            total += float(value)
    return total, len(entries)


def parse_error(entry: Any) -> CommandError:
    """An error object (`{"error": ..., "error_description": ...}`) as a CommandError."""
    if isinstance(entry, dict):
        code = entry.get("error")
        desc = entry.get("error_description")
        return CommandError(
            code if isinstance(code, str) else ("" if code is None else str(code)),
            desc if isinstance(desc, str) else ("" if desc is None else str(desc)),
        )
    return CommandError("", "" if entry is None else str(entry))


__all__ = [
    "DEAL_GET",
    "BatchReply",
    "CommandError",
    "as_section",
    "batch_cost",
    "batch_timings",
    "build_batch",
    "command_key",
    "deal_get_command",
    "parse_batch",
    "parse_error",
]
