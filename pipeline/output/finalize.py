"""Finalize: the manifest computed from the committed checkpoints, and the completion marker."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pipeline.output.chunks import Chunks
from pipeline.output.layout import DATASET_GLOB, MANIFEST_FILE, SUCCESS_FILE, dumps
from pipeline.output.manifest import snapshot_fingerprint
from pipeline.output.records import Checkpoint, ErrorRecord, Manifest, RunMeta
from pipeline.output.sidecar import failure_reasons, fetch_rows
from pipeline.output.store import Store

#: A sidecar's exact failure reasons (from its record, or read back from its file).
ReasonsOf = Callable[[ErrorRecord], Mapping[str, Mapping[str, int]]]


@dataclass
class _Totals:
    files: list[dict[str, Any]] = field(default_factory=list)
    error_files: list[dict[str, Any]] = field(default_factory=list)
    by_stage: Counter[str] = field(default_factory=Counter)
    by_class: Counter[str] = field(default_factory=Counter)
    by_reason: dict[str, Counter[str]] = field(
        default_factory=lambda: {"permanent": Counter(), "retryable": Counter()}
    )
    retryable: int = 0
    chunk_stats: dict[str, float] = field(default_factory=dict)
    fingerprints: set[str] = field(default_factory=set)

    def add(self, ckpt: Checkpoint, reasons_of: ReasonsOf) -> None:
        self.files.extend({**f.to_json(), "chunk": ckpt.key} for f in ckpt.files)
        if ckpt.schema_fingerprint:
            self.fingerprints.add(ckpt.schema_fingerprint)
        err = ckpt.errors
        if err is not None:
            self.error_files.append(
                {"path": err.path, "rows": err.rows, "bytes": err.bytes, "sha256": err.sha256}
                | {"chunk": ckpt.key}
            )
            self.by_stage.update(err.by_stage)
            self.by_class.update(err.failed_by_class)
            self.retryable += int(err.retryable)
            for kind, reasons in reasons_of(err).items():
                self.by_reason[kind].update(reasons)
        for name, value in ckpt.stats.items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                self.chunk_stats[name] = self.chunk_stats.get(name, 0) + value

    def derived(self) -> dict[str, Any]:
        """The output's own counts: they win over the run's on a name clash."""
        return {
            "exported": sum(f["rows"] for f in self.files),
            "failed": self.by_stage.get("fetch", 0),
            "failed_by_class": dict(sorted(self.by_class.items())),
            "failed_by_reason": {k: dict(sorted(v.items())) for k, v in self.by_reason.items()},
            "invalid_input_lines": self.by_stage.get("input", 0),
            "normalise_errors": self.by_stage.get("normalise", 0),
            "retryable_failed": self.retryable,
        }


def reasons_from(chunks: Chunks) -> ReasonsOf:
    """Exact failure reasons of one sidecar file: from its record, or (checkpoints written
    before records carried them) from the file itself."""

    def reasons(err: ErrorRecord) -> Mapping[str, Mapping[str, int]]:
        if err.failed_by_reason is not None:
            return err.failed_by_reason
        return failure_reasons(fetch_rows(chunks.read_sidecar(err.path)))

    return reasons


def build_manifest(
    meta: RunMeta,
    checkpoints: Iterable[Checkpoint],
    reasons_of: ReasonsOf,
    *,
    run_id: str,
    root: str,
    partition_key: str | None,
    ended_at: str,
    completed: bool,
    snapshot: Mapping[str, Any] | None,
    schema_fingerprint: str | None,
) -> Manifest:
    """The manifest of what the checkpoints hold, as written by `run_id` (a retry's own id, not
    the run's that `meta` names). `schema_fingerprint` defaults to a hash of
    the schema snapshot, else to the data's one schema fingerprint if all chunks agree."""
    totals = _Totals()
    chunks = 0
    for ckpt in checkpoints:
        totals.add(ckpt, reasons_of)
        chunks += 1
    if schema_fingerprint is None and snapshot is not None:
        schema_fingerprint = snapshot_fingerprint(snapshot)
    if schema_fingerprint is None and len(totals.fingerprints) == 1:
        schema_fingerprint = next(iter(totals.fingerprints))
    return Manifest(
        run_id=run_id,
        started_at=meta.started_at,
        ended_at=ended_at,
        completed=completed,
        sessions=meta.sessions,
        root=root,
        input_fingerprint=meta.input_fingerprint,
        layout=dict(meta.layout) | {"partition_key": partition_key},
        dataset_glob=DATASET_GLOB,
        config=meta.config or {},
        schema_fingerprint=schema_fingerprint,
        schema_fingerprints=tuple(sorted(totals.fingerprints)),
        schema_drift=meta.schema_drift,
        counts={**(meta.run_counts or {}), **totals.derived()},
        chunk_stats=dict(totals.chunk_stats),
        limits=meta.limits or {},
        chunks=chunks,
        files=tuple(totals.files),
        error_files=tuple(totals.error_files),
    )


def write_manifest(store: Store, manifest: Manifest) -> None:
    """`_manifest.json`, then (for a completed run) `_SUCCESS`, each durable before the next."""
    store.write_atomic(MANIFEST_FILE, dumps(manifest.to_json()))
    if manifest.completed:
        store.sync_dirs({""})
        store.write_atomic(SUCCESS_FILE, b"")
        # `_SUCCESS`'s rename must be durable before the state that trusts it exists: a
        # power loss must never keep the new run state and lose `_SUCCESS`.
        store.sync_dirs({""})
