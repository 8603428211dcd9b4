"""`OutputRoot`: the folder sink (partitioned Parquet, local or object store), locked for one run.

It ties the pieces together: `recovery` (existing-data policy, crash debris), `chunks` (the one
commit path), `retry_merge`, `finalize` (manifest and `_SUCCESS`) and `state` (`_state.json`).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, ParamSpec, TypeVar

import pyarrow as pa
import pyarrow.fs as pafs

from pipeline.config import OutputConfig
from pipeline.errors import OutputError
from pipeline.output.chunks import Chunks, ChunkUnit
from pipeline.output.encode import Encoding
from pipeline.output.finalize import build_manifest, write_manifest
from pipeline.output.layout import (
    DATASET_GLOB,
    MANIFEST_FILE,
    RUN_FILE,
    SCHEMA_FILE,
    STATE_FILE,
    SUCCESS_FILE,
    chunk_key,
    dataset_glob,
    dumps,
)
from pipeline.output.lock import RunLock
from pipeline.output.manifest import mask_config
from pipeline.output.partition import PartitionSpec
from pipeline.output.records import ErrorRecord, RunMeta
from pipeline.output.recovery import decide, recover
from pipeline.output.retry_merge import cleanup_after_retry, retry_unit, retryable_index
from pipeline.output.sidecar import conform, failure_reasons, fetch_rows, sidecar_table
from pipeline.output.sink import Rows, in_thread
from pipeline.output.state import (
    STATE_FORMAT,
    FolderState,
    RunState,
    read_pending_input,
    read_watermark,
)
from pipeline.output.store import Store, display_uri


def _utc_now() -> datetime:
    return datetime.now(UTC)


_P = ParamSpec("_P")
_R = TypeVar("_R")


def _os_errors(fn: Callable[_P, _R]) -> Callable[_P, _R]:
    """Disk full, permission denied, store unreachable: an OutputError, never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return fn(*args, **kwargs)
        except OSError as exc:
            first = args[0] if args else None
            where = first.uri if isinstance(first, OutputRoot) else "the output root"
            raise OutputError(f"cannot write {where}: {exc}") from exc

    return wrapper


class OutputRoot:
    """An output root opened for writing by one run; a `Sink`. Use as a context manager
    (releases the lock). Build with `OutputRoot.open(...)` (a run) or
    `OutputRoot.open_existing(...)` (`retry`)."""

    def __init__(
        self,
        store: Store,
        lock: RunLock,
        config: OutputConfig,
        run_id: str,
        meta: RunMeta,
        *,
        resumed: bool,
        id_column: str,
        now: Callable[[], datetime],
        previous_state: RunState | None = None,
    ) -> None:
        self._store = store
        self._lock = lock
        self.config = config
        self.spec = PartitionSpec.from_config(config)
        self.run_id = run_id
        self._meta = meta
        self.resumed = resumed
        self._now = now
        self._state = FolderState(store)
        #: `_state.json` of the last run that completed before this one opened the root.
        self._previous_state = previous_state
        self._chunks = Chunks(
            store,
            self.spec,
            Encoding(config.compression, config.max_rows_per_group),
            run_id=run_id,
            id_column=id_column,
            now=now,
            before_change=self._invalidate_success,
        )
        self._success_cleared = False
        self._closed = False

    # -- opening --------------------------------------------------------------------------------

    @classmethod
    @_os_errors
    def open(
        cls,
        config: OutputConfig,
        run_id: str,
        *,
        input_fingerprint: str | None = None,
        filesystem: pafs.FileSystem | None = None,
        id_column: str = "ID",
        now: Callable[[], datetime] = _utc_now,
        lock_stale_after_s: float = 600.0,
        lock_settle_s: float = 0.2,
    ) -> OutputRoot:
        """Lock `config.root` for `run_id`, decide what to do with what is there, clean up debris.

        * empty or missing root: a fresh output.
        * an unfinished output (checkpoints, no `_SUCCESS`) of the same input (equal
          `input_fingerprint`, or either is None) and the same partition layout: resumed, whatever
          `existing_data_behavior` says; `committed_chunks()` lists what to skip.
        * an unfinished output of a different input or layout: OutputError, unless "overwrite".
        * a completed output (`_SUCCESS`): "error" refuses, "overwrite" deletes our files and
          starts fresh, "resume" continues it (same input and layout only).
        * a root holding files deal-export did not write: always refused.
        * a root locked by a live run: refused (OutputError).
        """
        store = Store.from_root(config.root, filesystem)
        store.ensure_root()
        lock = RunLock(store, run_id, stale_after_s=lock_stale_after_s, settle_s=lock_settle_s)
        lock.acquire()
        try:
            # Read before `decide` may wipe the markers a format-1 state is checked against.
            previous = FolderState(store).read_completed()
            meta, resumed = decide(store, config, run_id, input_fingerprint, now)
            root = cls(
                store,
                lock,
                config,
                run_id,
                meta,
                resumed=resumed,
                id_column=id_column,
                now=now,
                previous_state=previous,
            )
            root.recover()
            session = {"run_id": run_id, "opened_at": now().isoformat()}
            root._save_meta(dataclasses.replace(meta, sessions=(*meta.sessions, session)))
        except BaseException:
            lock.release()
            raise
        return root

    @classmethod
    @_os_errors
    def open_existing(
        cls,
        root: str,
        run_id: str,
        *,
        filesystem: pafs.FileSystem | None = None,
        id_column: str = "ID",
        now: Callable[[], datetime] = _utc_now,
    ) -> OutputRoot:
        """Open a finished output for `retry`, with the layout it was written with."""
        store = Store.from_root(root, filesystem)
        raw_meta = store.read_json(RUN_FILE)
        manifest = store.read_json(MANIFEST_FILE)
        if raw_meta is None or manifest is None:
            raise OutputError(f"{display_uri(store.uri)} is not a finished deal-export output")
        if not manifest.get("completed"):
            raise OutputError(
                f"the export in {display_uri(store.uri)} did not complete; run the same export "
                "command again to resume it before retrying failed IDs"
            )
        meta = RunMeta.from_json(raw_meta, f"{display_uri(store.uri)}/{RUN_FILE}")
        layout = meta.layout
        config = OutputConfig(
            root=root,
            partition_by=layout.get("partition_by"),
            partition_transform=layout.get("partition_transform", "none"),
            existing_data_behavior="resume",
            chunk_size=int(layout.get("chunk_size", 10_000)),
            max_rows_per_group=int(layout.get("max_rows_per_group", 64 * 1024)),
            compression=str(layout.get("compression", "zstd")),
        )
        return cls.open(
            config,
            run_id,
            input_fingerprint=meta.input_fingerprint,
            filesystem=filesystem,
            id_column=id_column,
            now=now,
        )

    def recover(self) -> None:
        """Load the checkpoints, delete what none vouches for, finish cut-short retry merges."""
        for key in recover(self._chunks):
            self._cleanup_after_retry(key)
        self._store.remove_empty_dirs()

    def _save_meta(self, meta: RunMeta) -> None:
        self._meta = meta
        self._store.write_atomic(RUN_FILE, dumps(meta.to_json()))

    # -- state ----------------------------------------------------------------------------------

    @property
    def uri(self) -> str:
        return display_uri(self._store.uri)

    def committed_chunks(self) -> set[int]:
        """Indices of the chunks whose checkpoint exists: skip these when resuming."""
        return {int(c.key) for c in self._chunks if c.kind == "chunk"}

    def checkpoint(self, chunk_index: int) -> dict[str, Any] | None:
        """The committed record of a chunk (files, counts, stats), or None."""
        ckpt = self._chunks.get(chunk_key(chunk_index))
        return None if ckpt is None else ckpt.to_json()

    def heartbeat(self) -> None:
        """Keep an object-store lock fresh during long waits (no-op locally).

        Writes refresh it anyway; call this from the run when a chunk can take longer than a
        quarter of `lock_stale_after_s` (e.g. while paused on the operating-time limit).
        """
        self._check_open()

    def _check_open(self) -> None:
        if self._closed:
            raise OutputError("output root is closed")
        self._lock.heartbeat()

    def _invalidate_success(self) -> None:
        # `_SUCCESS` promises that the data equals the manifest; the first change breaks that.
        if not self._success_cleared:
            self._store.delete(SUCCESS_FILE)
            self._success_cleared = True

    # -- writing chunks -------------------------------------------------------------------------

    @_os_errors
    def write_chunk(
        self,
        chunk_index: int,
        data: pa.Table,
        errors: Rows = None,
        stats: Mapping[str, Any] | None = None,
        *,
        replace: bool = False,
    ) -> dict[str, Any]:
        """Write one chunk's data and sidecar rows, then commit it with its checkpoint.

        A committed chunk is only rewritten with `replace=True` (a resuming run skips committed
        chunks, so anything else is a bug that would drop the chunk's rows); its old files then
        go, also in partitions the new data does not touch. Returns the checkpoint record.
        """
        if chunk_index < 0:
            raise OutputError("chunk_index must be >= 0")
        key = chunk_key(chunk_index)
        if key in self._chunks and not replace:
            raise OutputError(
                f"chunk {chunk_index} is already committed in {self.uri}; skip it "
                "(see committed_chunks()) or pass replace=True to rewrite it"
            )
        self._check_open()
        errors_t = _sidecar(errors)
        return self._commit(ChunkUnit(key, "chunk", data, errors_t, dict(stats or {})))

    async def awrite_chunk(
        self,
        chunk_index: int,
        data: pa.Table,
        errors: Rows = None,
        stats: Mapping[str, Any] | None = None,
        *,
        replace: bool = False,
    ) -> dict[str, Any]:
        """`write_chunk` in a worker thread (`sink.in_thread`: a cancel waits for the write)."""
        return await in_thread(self.write_chunk, chunk_index, data, errors, stats, replace=replace)

    def _commit(self, unit: ChunkUnit) -> dict[str, Any]:
        """The one commit path of export and retry chunks."""
        return self._chunks.commit(unit).to_json()

    # -- retry ----------------------------------------------------------------------------------

    @_os_errors
    def retryable_ids(self) -> list[int]:
        """IDs whose fetch failure is retryable, ascending: what `deal-export retry` re-fetches."""
        self._check_open()
        return sorted(retryable_index(self._chunks))

    @_os_errors
    def apply_retry(
        self,
        data: pa.Table,
        errors: Rows = None,
        stats: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Commit re-fetched deals as a new chunk and take their IDs out of the old sidecars.

        `data` holds the deals that now succeeded, `errors` the fetch rows of IDs that failed
        again (their `attempts` are added to the earlier ones, `first_seen` is kept) plus any
        normalise rows. Every ID in either must be a retryable sidecar entry. May be called
        several times per session; call `finalize()` afterwards. The new chunk is named
        `r<run id>-<seq>` so it never collides with run chunks or earlier retries.
        """
        self._check_open()
        unit = retry_unit(self._chunks, data, _sidecar(errors), stats)
        ckpt = self._commit(unit)
        self._cleanup_after_retry(unit.key)
        latest = self._chunks.get(unit.key)
        return ckpt if latest is None else latest.to_json()

    async def aapply_retry(
        self,
        data: pa.Table,
        errors: Rows = None,
        stats: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """`apply_retry` in a worker thread, shielded like `awrite_chunk`."""
        return await in_thread(self.apply_retry, data, errors, stats)

    def _cleanup_after_retry(self, key: str) -> None:
        cleanup_after_retry(self._chunks, key)

    # -- metadata -------------------------------------------------------------------------------

    @_os_errors
    def write_input(self, ids: pa.Array, meta: Mapping[str, Any]) -> None:
        """Keep the ID list of a run whose input cannot be read again (incremental discovery
        answers differently a minute later), with `meta` saying how it was obtained."""
        self._check_open()
        self._state.write_pending_input(ids, meta)

    @_os_errors
    def write_schema(self, schema: Mapping[str, Any]) -> None:
        """Store the schema snapshot (`_schema.json`) the normaliser derived from the portal."""
        self._check_open()
        self._store.write_atomic(SCHEMA_FILE, dumps(dict(schema)))

    def read_schema(self) -> dict[str, Any] | None:
        return self._store.read_json(SCHEMA_FILE)

    def read_watermark(self) -> Any:
        """The watermark of the last run that completed before this one opened the root."""
        state = self._previous_state
        return None if state is None else state.watermark

    def previous_schema(self) -> dict[str, Any] | None:
        """The schema snapshot of the last run that completed before this one opened the root
        (kept across `overwrite`), or None: what schema drift is measured against."""
        state = self._previous_state
        return None if state is None or state.schema is None else dict(state.schema)

    @_os_errors
    def finalize(
        self,
        *,
        counts: Mapping[str, Any] | None = None,
        config: Mapping[str, Any] | Any = None,
        limits: Mapping[str, Any] | None = None,
        completed: bool = True,
        watermark: Any = None,
        schema_fingerprint: str | None = None,
        schema_drift: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Write `_manifest.json` (atomically, after everything else), then `_SUCCESS`, then the
        run state `_state.json`.

        `counts` are the run's own totals (requested, unique, duplicates_dropped, ...); the
        output's totals (exported, failed, failed_by_class, invalid_input_lines,
        normalise_errors, retryable_failed) are computed from the checkpoints and win on a name
        clash. `config` is masked (`mask_config`); `limits` is what the portal's limits cost.
        With `completed=False` the manifest records progress and no `_SUCCESS` is written.
        `watermark` (any JSON value) goes to `_state.json` only for a completed run, and only
        after `_SUCCESS`, together with the schema snapshot (`previous_schema()` of the next run).
        `schema_fingerprint` defaults to a hash of the stored schema snapshot, so it names the
        schema alone, whichever session or `retry` finalizes. `schema_drift` is what changed
        since the previous completed run. Values left as None are carried over from the previous
        finalize (so `retry` keeps the run's counts).
        """
        self._check_open()
        meta = self._meta
        changes: dict[str, Any] = {
            "run_counts": None if counts is None else dict(counts),
            "config": None if config is None else mask_config(config),
            "limits": None if limits is None else dict(limits),
            "schema_drift": None if schema_drift is None else dict(schema_drift),
        }
        meta = dataclasses.replace(meta, **{k: v for k, v in changes.items() if v is not None})
        self._save_meta(meta)
        snapshot = self.read_schema()
        manifest = build_manifest(
            meta,
            self._chunks,
            self._failure_reasons,
            run_id=self.run_id,
            root=self.uri,
            partition_key=self.spec.key,
            ended_at=self._now().isoformat(),
            completed=completed,
            snapshot=snapshot,
            schema_fingerprint=schema_fingerprint,
        )
        write_manifest(self._store, manifest)
        if completed:
            self._success_cleared = False
            self._state.commit_after_finalize(
                self.run_id, manifest.ended_at, watermark, snapshot, self._previous_state
            )
        return manifest.to_json()

    def _failure_reasons(self, err: ErrorRecord) -> Mapping[str, Mapping[str, int]]:
        """Exact failure reasons of one sidecar file: from its record, or (checkpoints written
        before records carried them) from the file itself."""
        if err.failed_by_reason is not None:
            return err.failed_by_reason
        return failure_reasons(fetch_rows(self._chunks.read_sidecar(err.path)))

    # -- closing --------------------------------------------------------------------------------

    def close(self) -> None:
        """Release the lock. Idempotent; the output stays resumable if not finalized."""
        if not self._closed:
            self._closed = True
            self._lock.release()

    def __enter__(self) -> OutputRoot:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


#: The name of the one `Sink` implementation so far.
FolderSink = OutputRoot


def _sidecar(errors: Rows) -> pa.Table:
    return conform(errors if isinstance(errors, pa.Table) else sidecar_table(errors or []))


__all__ = [
    "DATASET_GLOB",
    "STATE_FILE",
    "STATE_FORMAT",
    "FolderSink",
    "OutputRoot",
    "dataset_glob",
    "read_pending_input",
    "read_watermark",
]
