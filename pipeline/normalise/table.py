"""Deal payloads (as `crm.deal.get` returns them) into one typed Arrow table plus record errors."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pyarrow as pa

from pipeline.normalise.convert import ConversionError, Failure, json_text, scalar_int
from pipeline.normalise.schema import DealSchema
from pipeline.outcomes import RecordError


def _extra(payloads: Sequence[Mapping[str, Any]], known: frozenset[str]) -> pa.Array:
    texts: list[str | None] = []
    for payload in payloads:
        if payload.keys() <= known:
            texts.append(None)
        else:
            texts.append(json_text({k: v for k, v in payload.items() if k not in known}))
    return pa.array(texts, type=pa.string())


def _payload_id(payload: Mapping[str, Any]) -> int:
    try:
        return scalar_int(payload.get("ID")) or 0
    except ConversionError:
        return 0


def normalise_deals(
    payloads: Sequence[Mapping[str, Any]],
    schema: DealSchema,
    *,
    ids: Sequence[int] | None = None,
) -> tuple[pa.Table, list[RecordError]]:
    """Convert deal payloads column by column into a table with `schema.arrow_schema`.

    Contract: exactly one row per payload, in input order; never raises for bad values. A value
    that cannot be converted is null in its row and yields exactly one RecordError (for a list,
    one per bad element). Keys the schema does not know are kept as JSON text in `_extra`.

    `ids` are the requested deal IDs, one per payload (pass them from DealFetched.id); without
    them the IDs are read from each payload's "ID" (0 when it has none that parses). Column-wise
    work has a fixed cost per call, so pass chunks of thousands of deals, not single batches.
    """
    if ids is not None and len(ids) != len(payloads):
        raise ValueError(f"{len(ids)} ids for {len(payloads)} payloads")
    arrays: list[pa.Array] = []
    failures: list[tuple[int, int, Failure]] = []
    for position, column in enumerate(schema.columns):
        name = column.name
        values = [payload.get(name) for payload in payloads]
        array, column_failures = column.kind.convert(values)
        arrays.append(array)
        failures.extend((failure.row, position, failure) for failure in column_failures)
    known = frozenset(schema.column_names)
    arrays.append(_extra(payloads, known))
    table = pa.Table.from_arrays(arrays, schema=schema.arrow_schema)

    errors: list[RecordError] = []
    if failures:
        failures.sort(key=lambda item: (item[0], item[1]))
        for row, position, failure in failures:
            deal_id = ids[row] if ids is not None else _payload_id(payloads[row])
            errors.append(
                RecordError(
                    id=deal_id,
                    field=schema.columns[position].name,
                    raw_value=json_text(failure.raw),
                    reason=failure.reason,
                )
            )
    return table, errors


__all__ = ["normalise_deals"]
