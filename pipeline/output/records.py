"""Typed, versioned records of a root: chunk checkpoints, run metadata and the manifest.

Each record reads the current on-disk JSON (`from_json`) and writes exactly it back
(`to_json`), so roots written before these types existed stay readable. A `format` newer than
this code knows is refused: its meaning may have changed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pipeline.errors import OutputError

#: Checkpoints, `_run.json` and `_manifest.json`.
FORMAT = 1

Json = dict[str, Any]


def _format(raw: Mapping[str, Any], what: str, newest: int = FORMAT) -> int:
    fmt = raw.get("format", 1)
    if not isinstance(fmt, int) or isinstance(fmt, bool):
        raise OutputError(f"{what} has a format that is not a number: {fmt!r}")
    if fmt > newest:
        raise OutputError(f"{what} has format {fmt}, newer than this deal-export reads ({newest})")
    return fmt


def _need(raw: Mapping[str, Any], name: str, kind: type | tuple[type, ...], what: str) -> Any:
    value = raw.get(name)
    if not isinstance(value, kind) or (isinstance(value, bool) and bool not in _types(kind)):
        raise OutputError(f"{what} is damaged: field {name!r} is missing or of the wrong type")
    return value


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _plain_fields(value)
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    return value


def _plain_fields(record: Any) -> Json:
    """A record as JSON values: tuples become lists, nested records objects."""
    return {f.name: _plain(getattr(record, f.name)) for f in dataclasses.fields(record)}


def _types(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


@dataclass(frozen=True, slots=True)
class FileRecord:
    """One data file of a chunk, as committed."""

    path: str
    rows: int
    bytes: int
    sha256: str
    partition: str

    def to_json(self) -> Json:
        return _plain_fields(self)

    @classmethod
    def from_json(cls, raw: Any, what: str) -> FileRecord:
        if not isinstance(raw, Mapping):
            raise OutputError(f"{what} is damaged: a file entry is not an object")
        return cls(
            path=_need(raw, "path", str, what),
            rows=_need(raw, "rows", int, what),
            bytes=_need(raw, "bytes", int, what),
            sha256=str(raw.get("sha256", "")),
            partition=str(raw.get("partition") or ""),
        )


@dataclass(frozen=True, slots=True)
class ErrorRecord:
    """A chunk's sidecar file and what it holds (by stage, class, and exact reason)."""

    path: str
    rows: int
    bytes: int
    sha256: str
    by_stage: Mapping[str, int]
    failed_by_class: Mapping[str, int]
    retryable: int
    #: None in checkpoints written before reasons were recorded: read them from the file.
    failed_by_reason: Mapping[str, Mapping[str, int]] | None = None

    def to_json(self) -> Json:
        out = _plain_fields(self)
        if self.failed_by_reason is None:
            del out["failed_by_reason"]
        return out

    @classmethod
    def from_json(cls, raw: Any, what: str) -> ErrorRecord:
        if not isinstance(raw, Mapping):
            raise OutputError(f"{what} is damaged: its errors entry is not an object")
        reasons = raw.get("failed_by_reason")
        return cls(
            path=_need(raw, "path", str, what),
            rows=_need(raw, "rows", int, what),
            bytes=_need(raw, "bytes", int, what),
            sha256=str(raw.get("sha256", "")),
            by_stage=dict(_need(raw, "by_stage", dict, what)),
            failed_by_class=dict(_need(raw, "failed_by_class", dict, what)),
            retryable=int(raw.get("retryable") or 0),
            failed_by_reason=(
                {k: dict(v) for k, v in reasons.items() if k in ("permanent", "retryable")}
                if isinstance(reasons, dict)
                else None
            ),
        )


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """The commit record of one chunk (`_checkpoints/chunk-<key>.json`), written last.

    A "piece" holds part of a run chunk that was not complete when the run committed it (work
    is committed at least once a minute); `ids` are exactly the IDs it accounts for, which a
    resumed run skips. The chunk's own checkpoint then holds the rest of its IDs.
    """

    key: str
    kind: str  # "chunk" (a run's chunk), "piece" (part of one) or "retry" (a retry's chunk)
    run_id: str
    written_at: str
    rows: int
    files: tuple[FileRecord, ...]
    errors: ErrorRecord | None
    schema_fingerprint: str | None
    stats: Mapping[str, Any] = field(default_factory=dict)
    #: Retry chunks only: the IDs it re-fetched, and whether their old sidecar rows are gone.
    retried_ids: tuple[int, ...] | None = None
    sidecar_cleaned: bool = False
    format: int = FORMAT
    #: Pieces only: the run chunk it belongs to and the IDs it accounts for, ascending.
    chunk: int | None = None
    ids: tuple[int, ...] | None = None

    @property
    def is_retry(self) -> bool:
        return self.kind == "retry"

    @property
    def is_piece(self) -> bool:
        return self.kind == "piece"

    def to_json(self) -> Json:
        out = _plain_fields(self)
        if self.retried_ids is None:  # only retry chunks carry these two
            del out["retried_ids"], out["sidecar_cleaned"]
        if self.ids is None:  # only pieces carry these two
            del out["chunk"], out["ids"]
        return out

    @classmethod
    def from_json(cls, raw: Mapping[str, Any], what: str) -> Checkpoint:
        fmt = _format(raw, what)
        files = _need(raw, "files", list, what)
        errors = raw.get("errors")
        retried = raw.get("retried_ids")
        stats = raw.get("stats")
        ids = raw.get("ids")
        kind = str(raw.get("kind", "chunk"))
        if kind == "piece" and (not isinstance(ids, list) or not isinstance(raw.get("chunk"), int)):
            raise OutputError(f"{what} is damaged: a piece without its chunk and IDs")
        return cls(
            key=_need(raw, "key", str, what),
            kind=kind,
            run_id=str(raw.get("run_id", "")),
            written_at=str(raw.get("written_at", "")),
            rows=_need(raw, "rows", int, what),
            files=tuple(FileRecord.from_json(f, what) for f in files),
            errors=None if not errors else ErrorRecord.from_json(errors, what),
            schema_fingerprint=raw.get("schema_fingerprint") or None,
            stats=dict(stats) if isinstance(stats, dict) else {},
            retried_ids=None if retried is None else tuple(int(i) for i in retried),
            sidecar_cleaned=bool(raw.get("sidecar_cleaned", False)),
            format=fmt,
            chunk=int(raw["chunk"]) if kind == "piece" else None,
            ids=tuple(int(i) for i in ids) if kind == "piece" and isinstance(ids, list) else None,
        )


@dataclass(frozen=True, slots=True)
class RunMeta:
    """`_run.json`: who writes the root, with which input and layout, and the run's totals."""

    run_id: str
    started_at: str
    input_fingerprint: str | None
    layout: Mapping[str, Any]
    sessions: tuple[Mapping[str, Any], ...] = ()
    #: Set by `finalize`; None until then, and then kept for the next finalize (`retry`).
    run_counts: Mapping[str, Any] | None = None
    config: Mapping[str, Any] | None = None
    limits: Mapping[str, Any] | None = None
    schema_drift: Mapping[str, Any] | None = None
    format: int = FORMAT

    def finalized(
        self,
        *,
        run_counts: Mapping[str, Any] | None,
        config: Mapping[str, Any] | None,
        limits: Mapping[str, Any] | None,
        schema_drift: Mapping[str, Any] | None,
    ) -> RunMeta:
        """With what a finalize was given; None keeps the previous finalize's (`retry`)."""
        return dataclasses.replace(
            self,
            run_counts=self.run_counts if run_counts is None else run_counts,
            config=self.config if config is None else config,
            limits=self.limits if limits is None else limits,
            schema_drift=self.schema_drift if schema_drift is None else schema_drift,
        )

    def to_json(self) -> Json:
        out = _plain_fields(self)
        for name in ("run_counts", "config", "limits", "schema_drift"):
            if out[name] is None:  # absent until the first finalize
                del out[name]
        return out

    @classmethod
    def from_json(cls, raw: Mapping[str, Any], what: str) -> RunMeta:
        fmt = _format(raw, what)
        sessions = raw.get("sessions")
        layout = raw.get("layout")

        def optional(name: str) -> Mapping[str, Any] | None:
            value = raw.get(name)
            return dict(value) if isinstance(value, dict) else None

        return cls(
            run_id=str(raw.get("run_id", "")),
            started_at=str(raw.get("started_at", "")),
            input_fingerprint=raw.get("input_fingerprint"),
            layout=dict(layout) if isinstance(layout, dict) else {},
            sessions=tuple(dict(s) for s in sessions or () if isinstance(s, dict)),
            run_counts=optional("run_counts"),
            config=optional("config"),
            limits=optional("limits"),
            schema_drift=optional("schema_drift"),
            format=fmt,
        )


@dataclass(frozen=True, slots=True)
class Manifest:
    """`_manifest.json`: what the dataset holds, written after every chunk, before `_SUCCESS`."""

    run_id: str
    started_at: str
    ended_at: str
    completed: bool
    root: str
    input_fingerprint: str | None
    layout: Mapping[str, Any]
    dataset_glob: str
    schema_fingerprint: str | None
    counts: Mapping[str, Any]
    chunks: int
    sessions: tuple[Mapping[str, Any], ...] = ()
    config: Mapping[str, Any] = field(default_factory=dict)
    schema_fingerprints: tuple[str, ...] = ()
    schema_drift: Mapping[str, Any] | None = None
    chunk_stats: Mapping[str, float] = field(default_factory=dict)
    limits: Mapping[str, Any] = field(default_factory=dict)
    files: tuple[Mapping[str, Any], ...] = ()
    error_files: tuple[Mapping[str, Any], ...] = ()
    format: int = FORMAT

    def to_json(self) -> Json:
        return _plain_fields(self)

    @classmethod
    def from_json(cls, raw: Mapping[str, Any], what: str) -> Manifest:
        fmt = _format(raw, what)

        def mapping(name: str) -> dict[str, Any]:
            value = raw.get(name)
            return dict(value) if isinstance(value, dict) else {}

        def rows(name: str) -> tuple[dict[str, Any], ...]:
            return tuple(dict(r) for r in raw.get(name) or () if isinstance(r, dict))

        drift = raw.get("schema_drift")
        return cls(
            run_id=str(raw.get("run_id", "")),
            started_at=str(raw.get("started_at", "")),
            ended_at=str(raw.get("ended_at", "")),
            completed=bool(raw.get("completed")),
            root=str(raw.get("root", "")),
            input_fingerprint=raw.get("input_fingerprint"),
            layout=mapping("layout"),
            dataset_glob=str(raw.get("dataset_glob", "")),
            schema_fingerprint=raw.get("schema_fingerprint"),
            counts=mapping("counts"),
            chunks=int(raw.get("chunks") or 0),
            sessions=rows("sessions"),
            config=mapping("config"),
            schema_fingerprints=tuple(str(s) for s in raw.get("schema_fingerprints") or ()),
            schema_drift=dict(drift) if isinstance(drift, dict) else None,
            chunk_stats=mapping("chunk_stats"),
            limits=mapping("limits"),
            files=rows("files"),
            error_files=rows("error_files"),
            format=fmt,
        )


__all__ = ["FORMAT", "Checkpoint", "ErrorRecord", "FileRecord", "Manifest", "RunMeta"]
