"""The run state a Delta table carries in its own commits. Pure: it reads `history()` records.

Every commit the sink makes holds one JSON object under the commit's custom metadata key
`deal_export` (Delta `commitInfo`, written through deltalake's `CommitProperties`):

    kind          "chunk" (a chunk's deals merged) or "finalize" (the end of a session)
    run_id        the session that made the commit
    fingerprint   the input fingerprint (IDs and chunk size): which export the chunk belongs to
    chunk         the chunk key ("000003", or "r<run id>-000000" for a retry)
    index         the chunk index for run chunks, null for retry chunks
    counts        exported, failed_by_reason, normalise_errors, retryable of that chunk
    schema_fingerprint
    finalize only: completed, watermark, counts (the run's totals), schema (the snapshot)

So the data and its state are one commit: a run that dies leaves the table at its last commit,
and the next session reads what is done from the table's history, never from a side file that
could disagree with it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

METADATA_KEY = "deal_export"


@dataclass(frozen=True, slots=True)
class Commit:
    """One commit of this pipeline, as recorded in the table's history."""

    version: int
    record: dict[str, Any]

    @property
    def kind(self) -> str:
        return str(self.record.get("kind"))

    @property
    def completed(self) -> bool:
        return self.kind == "finalize" and self.record.get("completed") is True


def encode(record: Mapping[str, Any]) -> dict[str, str]:
    """The custom metadata of one commit."""
    return {METADATA_KEY: orjson.dumps(record, default=str).decode()}


def ours(history: Iterable[Mapping[str, Any]]) -> list[Commit]:
    """This pipeline's commits, newest first (other writers' commits are skipped)."""
    found: list[Commit] = []
    for entry in history:
        raw = entry.get(METADATA_KEY)
        if not isinstance(raw, str):
            continue
        try:
            record = orjson.loads(raw)
        except orjson.JSONDecodeError:
            continue
        if isinstance(record, dict):
            found.append(Commit(int(entry.get("version", -1)), record))
    found.sort(key=lambda c: c.version, reverse=True)
    return found


def last_completed(commits: list[Commit]) -> Commit | None:
    """The finalize commit of the last run that completed."""
    return next((c for c in commits if c.completed), None)


def since_completed(commits: list[Commit]) -> list[Commit]:
    """The commits after the last completed run, newest first: the unfinished work."""
    out: list[Commit] = []
    for commit in commits:
        if commit.completed:
            break
        out.append(commit)
    return out


def open_chunks(commits: list[Commit], fingerprint: str | None) -> list[Commit]:
    """Chunk and piece commits of the unfinished export with this input fingerprint, newest
    first (a piece is part of a chunk committed before the chunk was complete)."""
    if fingerprint is None:
        return []
    return [
        c
        for c in since_completed(commits)
        if c.kind in ("chunk", "piece") and c.record.get("fingerprint") == fingerprint
    ]


def run_totals(chunks: Iterable[Commit]) -> dict[str, Any]:
    """The output totals of an export from its chunk commits (one per chunk key: the newest)."""
    latest: dict[str, Commit] = {}
    for commit in chunks:
        latest.setdefault(str(commit.record.get("chunk")), commit)
    exported = errors = retryable = 0
    reasons: dict[str, Counter[str]] = {"permanent": Counter(), "retryable": Counter()}
    for commit in latest.values():
        counts = commit.record.get("counts") or {}
        exported += int(counts.get("exported", 0))
        errors += int(counts.get("normalise_errors", 0))
        retryable += int(counts.get("retryable", 0))
        for side, by in (counts.get("failed_by_reason") or {}).items():
            reasons.setdefault(side, Counter()).update({str(k): int(n) for k, n in by.items()})
    failed = sum(sum(c.values()) for c in reasons.values())
    return {
        "exported": exported,
        "failed": failed,
        "normalise_errors": errors,
        "retryable_failed": retryable,
        "failed_by_reason": {k: dict(v) for k, v in reasons.items()},
    }


def latest_value(commits: list[Commit], key: str) -> Any:
    """The newest non-null `key` of any finalize commit (a retry's finalize carries the run's
    watermark and schema over)."""
    for commit in commits:
        if commit.kind == "finalize" and commit.record.get(key) is not None:
            return commit.record[key]
    return None


__all__ = [
    "METADATA_KEY",
    "Commit",
    "encode",
    "last_completed",
    "latest_value",
    "open_chunks",
    "ours",
    "run_totals",
    "since_completed",
]
