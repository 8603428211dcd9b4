"""Retry merge: retryable IDs, a retry's results as a new chunk, old sidecar rows removed."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from pipeline.errors import OutputError
from pipeline.output.chunks import Chunks, ChunkUnit
from pipeline.output.sidecar import sidecar_table


def retryable_index(chunks: Chunks) -> dict[int, dict[str, Any]]:
    """The latest retryable fetch row of every ID, from the sidecars that hold any."""
    index: dict[int, dict[str, Any]] = {}
    for ckpt in chunks:
        err = ckpt.errors
        if err is None or not err.retryable:
            continue
        for row in chunks.read_sidecar(err.path).to_pylist():
            if row["stage"] == "fetch" and row["retryable"]:
                index[int(row["id"])] = row
    return index


def retry_unit(
    chunks: Chunks, data: pa.Table, errors: pa.Table, stats: Mapping[str, Any] | None
) -> ChunkUnit:
    """The chunk a retry commits: `data` holds the deals that now succeeded, `errors` the fetch
    rows of IDs that failed again (their `attempts` are added to the earlier ones, `first_seen`
    is kept) plus any normalise rows. Every ID in either must be a retryable sidecar entry."""
    id_column = chunks.id_column
    if data.num_rows and id_column not in data.column_names:
        raise OutputError(f"retry data has no {id_column} column")
    data_ids = set(data.column(id_column).to_pylist()) if data.num_rows else set()
    index = retryable_index(chunks)
    rows = errors.to_pylist()
    fetch_ids = set()
    for row in rows:
        if row["stage"] != "fetch":
            continue
        fetch_ids.add(row["id"])
        earlier = index.get(row["id"])
        if earlier is not None:
            row["first_seen"] = earlier["first_seen"] or row["first_seen"]
            row["attempts"] = (earlier["attempts"] or 0) + (row["attempts"] or 0)
    retried = data_ids | fetch_ids
    unknown = sorted(retried - index.keys())
    if unknown:
        raise OutputError(
            f"retry results for IDs that are not retryable sidecar entries: {unknown[:10]}"
        )
    return ChunkUnit(
        key=_next_key(chunks),
        kind="retry",
        data=data,
        errors=sidecar_table(rows),
        stats=dict(stats or {}),
        retried_ids=tuple(sorted(retried)),
    )


def _next_key(chunks: Chunks) -> str:
    # `r<run id>-<seq>`: never collides with run chunks or earlier retries.
    token = re.sub(r"[^0-9A-Za-z]", "", chunks.run_id)[:32] or "x"
    prefix = f"r{token}-"
    taken = [int(k[len(prefix) :]) for k in chunks.committed_keys() if k.startswith(prefix)]
    return f"{prefix}{1 + max(taken, default=-1):06d}"


def cleanup_after_retry(chunks: Chunks, key: str) -> None:
    """Drop the retried IDs' old fetch rows from every other sidecar. Idempotent.

    Runs right after the retry chunk commits, and again on the next open if a crash cut it
    short (`sidecar_cleaned` is still false). Each sidecar rewrite is atomic; a checkpoint
    always learns of an emptied sidecar BEFORE the file goes, so it never points at nothing.
    """
    ckpt = chunks.get(key)
    if ckpt is None:
        raise OutputError(f"retry chunk {key} is not committed")
    retried = pa.array(list(ckpt.retried_ids or ()), pa.int64())
    for other in chunks:
        err = other.errors
        if other.key == key or err is None:
            continue
        table = chunks.read_sidecar(err.path)
        hit = pc.and_(
            pc.equal(table.column("stage"), "fetch"),
            pc.is_in(table.column("id"), value_set=retried),
        )
        kept = table.filter(pc.invert(pc.fill_null(hit, False)))
        if kept.num_rows == table.num_rows and err.rows == table.num_rows:
            continue  # (a row-count mismatch means a crash between file and checkpoint)
        if kept.num_rows == 0:
            chunks.save(dataclasses.replace(other, errors=None))
            chunks.store.delete(err.path)
        else:
            record = chunks.write_sidecar(err.path, kept)
            chunks.save(dataclasses.replace(other, errors=record))
    chunks.save(dataclasses.replace(ckpt, sidecar_cleaned=True))
