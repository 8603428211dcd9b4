"""`OutputRoot`: the folder sink (partitioned Parquet, local or object store), locked for one run.

It ties the pieces together: `recovery` (existing-data policy, crash debris), `chunks` (the one
commit path), `retry_merge`, `finalize` (manifest and `_SUCCESS`) and `state`
(`_deal_export/state.json`, at the top of the output).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from pipeline.config import OutputConfig
from pipeline.errors import OutputError
from pipeline.output import recovery
from pipeline.output.chunks import Chunks, ChunkUnit
from pipeline.output.encode import Encoding
from pipeline.output.finalize import build_manifest, reasons_from, write_manifest
from pipeline.output.layout import (
    DATASET_GLOB,
    RUN_FILE,
    SCHEMA_FILE,
    STATE_PATH,
    SUCCESS_FILE,
    chunk_key,
    dataset_glob,
    dumps,
)
from pipeline.output.lock import RunLock
from pipeline.output.manifest import mask_config
from pipeline.output.opening import open_finished, open_root
from pipeline.output.partition import PartitionSpec, directory_codes
from pipeline.output.records import RunMeta
from pipeline.output.recovery import holds_retryable_failures
from pipeline.output.retry_merge import cleanup_after_retry, retry_unit, retryable_index
from pipeline.output.sidecar import as_sidecar
from pipeline.output.sink import Rows, Sink, in_thread
from pipeline.output.state import (
    STATE_FORMAT,
    FolderState,
    RunState,
    read_pending_input,
    read_state,
    read_watermark,
    set_watermark,
)
from pipeline.output.store import Store, display_uri, os_errors


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
        state: FolderState | None = None,
        data_dir: str = "",
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
        self._state = FolderState(store) if state is None else state
        #: Where `store` sits in the output, relative to its top (a `new_run` run directory).
        self._data_dir = data_dir
        #: The state of the last run that completed before this one opened the output.
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

    # -- opening (`opening.py`) ------------------------------------------------------------------

    open = classmethod(open_root)
    open_existing = classmethod(open_finished)

    def recover(self) -> None:
        """Load the checkpoints, delete what none vouches for, finish cut-short retry merges."""
        for key in recovery.recover(self._chunks):
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

    @os_errors
    def write_chunk(
        self,
        chunk_index: int,
        data: pa.Table,
        errors: Rows = None,
        stats: Mapping[str, Any] | None = None,
        *,
        replace: bool = False,
    ) -> dict[str, Any]:
        """Commit one chunk (see `Sink.write_chunk`); returns its checkpoint record."""
        unit = self._chunks.run_unit(chunk_index, data, stats, replace=replace)
        self._check_open()
        return self._commit(dataclasses.replace(unit, errors=as_sidecar(errors)))

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

    @os_errors
    def write_piece(
        self,
        chunk_index: int,
        data: pa.Table,
        ids: tuple[int, ...],
        errors: Rows = None,
        stats: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Commit part of a chunk that is not complete yet; `ids` are exactly the IDs it
        accounts for (its data rows and fetch failures), which a resumed run skips."""
        unit = self._chunks.piece_unit(chunk_index, data, ids, stats)
        self._check_open()
        return self._commit(dataclasses.replace(unit, errors=as_sidecar(errors)))

    async def awrite_piece(
        self,
        chunk_index: int,
        data: pa.Table,
        ids: tuple[int, ...],
        errors: Rows = None,
        stats: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """`write_piece` in a worker thread, shielded like `awrite_chunk`."""
        return await in_thread(self.write_piece, chunk_index, data, ids, errors, stats)

    def committed_pieces(self) -> dict[int, frozenset[int]]:
        """For each chunk not committed whole: the IDs its committed pieces account for."""
        return self._chunks.piece_ids()

    def file_groups(self, data: pa.Table) -> pa.Array | None:
        """Each row's partition directory, by position in the order they are written (see
        `Sink.file_groups`): a commit copied the rows of an ID-ordered chunk group by group,
        up to SLAB_BYTES at a time, which was alive at the commit's peak next to the chunk."""
        return directory_codes(data, self.spec)

    def _commit(self, unit: ChunkUnit) -> dict[str, Any]:
        """The one commit path of export and retry chunks."""
        return self._chunks.commit(unit).to_json()

    # -- retry ----------------------------------------------------------------------------------

    @os_errors
    def retryable_ids(self) -> list[int]:
        """IDs whose fetch failure is retryable, ascending: what `deal-export retry` re-fetches."""
        self._check_open()
        return sorted(retryable_index(self._chunks))

    @os_errors
    def apply_retry(
        self,
        data: pa.Table,
        errors: Rows = None,
        stats: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Commit a retry's results as a new chunk (see `Sink.apply_retry`)."""
        self._check_open()
        unit = retry_unit(self._chunks, data, as_sidecar(errors), stats)
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

    @os_errors
    def write_input(self, ids: pa.Array, meta: Mapping[str, Any]) -> None:
        """Keep the ID list of a run whose input cannot be read again (incremental discovery
        answers differently a minute later), with `meta` saying how it was obtained."""
        self._check_open()
        self._state.write_pending_input(ids, meta, self._data_dir)

    @os_errors
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

    @os_errors
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
        """`_manifest.json`, `_SUCCESS`, then the run state (see `Sink.finalize`)."""
        self._check_open()
        meta = self._meta.finalized(
            run_counts=None if counts is None else dict(counts),
            config=None if config is None else mask_config(config),
            limits=None if limits is None else dict(limits),
            schema_drift=None if schema_drift is None else dict(schema_drift),
        )
        self._save_meta(meta)
        snapshot = self.read_schema()
        manifest = build_manifest(
            meta,
            self._chunks,
            reasons_from(self._chunks),
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


#: Where the run state lives, relative to the output's top (for tests and tools).
STATE_FILE = STATE_PATH

#: The name of the one `Sink` implementation so far.
FolderSink = OutputRoot

if TYPE_CHECKING:  # mypy proves the folder sink keeps to the protocol
    _CONFORMS: type[Sink] = OutputRoot


__all__ = [
    "DATASET_GLOB",
    "STATE_FILE",
    "STATE_FORMAT",
    "FolderSink",
    "OutputRoot",
    "dataset_glob",
    "holds_retryable_failures",
    "read_pending_input",
    "read_state",
    "read_watermark",
    "set_watermark",
]
