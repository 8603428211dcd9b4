"""`OutputRoot`: one locked output root, written chunk by chunk with a checkpoint per chunk.

The invariant that makes runs exactly-once and resumable:

    the data files of the dataset are exactly the files listed by the checkpoints
    `_checkpoints/chunk-<key>.json`, and so are the sidecar files under `_errors/`.

A chunk is committed when its checkpoint exists; it is written LAST, after the chunk's data files
and sidecar file are in place (and, locally, fsynced). Anything else that looks like ours (a
`part-*.parquet` no checkpoint lists, a sidecar no checkpoint lists, a hidden temp file) is debris
of a crash and is deleted on the next `open`, before any new write. Rewriting a chunk first
deletes its checkpoint, so a crash mid-rewrite also leaves only debris.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import os
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, ParamSpec, TypeAlias, TypeVar

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from pipeline.config import OutputConfig
from pipeline.errors import OutputError
from pipeline.output.lock import LOCK_NAME, RunLock
from pipeline.output.manifest import mask_config, schema_fingerprint, snapshot_fingerprint
from pipeline.output.partition import PartitionSpec, split
from pipeline.output.sidecar import conform, sidecar_table
from pipeline.output.store import Store, display_uri, is_temp_name, json_object

FORMAT = 1
#: 2: `_state.json` is written after `_SUCCESS` and carries the run's schema snapshot.
STATE_FORMAT = 2
RUN_FILE = "_run.json"
MANIFEST_FILE = "_manifest.json"
SUCCESS_FILE = "_SUCCESS"
SCHEMA_FILE = "_schema.json"
STATE_FILE = "_state.json"
#: The IDs an incremental run discovered, kept so that resuming it exports the same set.
INPUT_FILE = "_input.parquet"
CHECKPOINT_DIR = "_checkpoints"
ERRORS_DIR = "_errors"

#: The glob DuckDB and Polars users should read (relative to the root): it matches data files
#: in any partition layout and never `_errors/*.parquet` or hidden temp files.
DATASET_GLOB = "**/part-*.parquet"

_KEY = r"(?:\d{6,}|r[0-9A-Za-z]+-\d{6,})"
_DATA_RE = re.compile(rf"^part-(?P<key>{_KEY})-(?P<n>\d+)\.parquet$")
_SIDECAR_RE = re.compile(rf"^chunk-(?P<key>{_KEY})\.parquet$")
_CHECKPOINT_RE = re.compile(rf"^chunk-(?P<key>{_KEY})\.json$")
_METADATA_FILES = {
    RUN_FILE,
    MANIFEST_FILE,
    SUCCESS_FILE,
    SCHEMA_FILE,
    STATE_FILE,
    INPUT_FILE,
    LOCK_NAME,
}

Rows: TypeAlias = pa.Table | Iterable[Mapping[str, Any]] | None


def dataset_glob(root: str) -> str:
    """The recommended glob for `read_parquet(..., hive_partitioning=true)` / `pl.scan_parquet`."""
    return root.rstrip("/") + "/" + DATASET_GLOB


def _dumps(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS)


def _is_data_path(path: str) -> bool:
    parts = path.split("/")
    if not _DATA_RE.match(parts[-1]):
        return False
    return len(parts) == 1 or (len(parts) == 2 and "=" in parts[0] and parts[0][0] not in "._")


def _is_ours(path: str) -> bool:
    parts = path.split("/")
    if is_temp_name(parts[-1]) or _is_data_path(path):
        return True
    if len(parts) == 1:
        return path in _METADATA_FILES
    return len(parts) == 2 and (
        (parts[0] == CHECKPOINT_DIR and bool(_CHECKPOINT_RE.match(parts[1])))
        or (parts[0] == ERRORS_DIR and bool(_SIDECAR_RE.match(parts[1])))
    )


def _checkpoint_path(key: str) -> str:
    return f"{CHECKPOINT_DIR}/chunk-{key}.json"


def _sidecar_path(key: str) -> str:
    return f"{ERRORS_DIR}/chunk-{key}.parquet"


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
    """An output root opened for writing by one run. Use as a context manager (releases the lock).

    Build with `OutputRoot.open(...)` (a run) or `OutputRoot.open_existing(...)` (`retry`).
    """

    def __init__(
        self,
        store: Store,
        lock: RunLock,
        config: OutputConfig,
        run_id: str,
        meta: dict[str, Any],
        *,
        resumed: bool,
        id_column: str,
        now: Callable[[], datetime],
    ) -> None:
        self._store = store
        self._lock = lock
        self.config = config
        self.spec = PartitionSpec.from_config(config)
        self.run_id = run_id
        self._meta = meta
        self.resumed = resumed
        self._id_column = id_column
        self._now = now
        self._checkpoints: dict[str, dict[str, Any]] = {}
        self._success_cleared = False
        self._closed = False
        #: `_state.json` of the last run that completed before this one opened the root.
        self._previous_state: dict[str, Any] | None = None

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
            # Read before `_decide` may wipe the markers a format-1 state is checked against.
            previous = _completed_state(store)
            meta, resumed = _decide(store, config, run_id, input_fingerprint, now)
            root = cls(
                store, lock, config, run_id, meta, resumed=resumed, id_column=id_column, now=now
            )
            root._previous_state = previous
            root._recover()
            meta.setdefault("sessions", []).append(
                {"run_id": run_id, "opened_at": now().isoformat()}
            )
            store.write_atomic(RUN_FILE, _dumps(meta))
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
        store.refuse_a_file()
        meta = store.read_json(RUN_FILE)
        manifest = store.read_json(MANIFEST_FILE)
        if meta is None or manifest is None or not manifest.get("completed"):
            # A run still writing has no (completed) manifest yet: say "locked", not "no export".
            _refuse_if_locked(store, run_id)
        if meta is None or manifest is None:
            raise OutputError(f"{display_uri(store.uri)} is not a finished deal-export output")
        if not manifest.get("completed"):
            raise OutputError(
                f"the export in {display_uri(store.uri)} did not complete; run the same export "
                "command again to resume it before retrying failed IDs"
            )
        layout = meta["layout"]
        config = OutputConfig(
            root=root,
            partition_by=layout["partition_by"],
            partition_transform=layout["partition_transform"],
            existing_data_behavior="resume",
            chunk_size=int(layout.get("chunk_size", 10_000)),
            max_rows_per_group=int(layout.get("max_rows_per_group", 64 * 1024)),
            compression=str(layout.get("compression", "zstd")),
        )
        return cls.open(
            config,
            run_id,
            input_fingerprint=meta.get("input_fingerprint"),
            filesystem=filesystem,
            id_column=id_column,
            now=now,
        )

    def _recover(self) -> None:
        """Load the checkpoints and delete everything of ours that no checkpoint vouches for."""
        store = self._store
        entries = store.list_files()
        sizes = {e.path: e.size for e in entries}
        damaged: list[dict[str, Any]] = []
        for e in entries:
            if is_temp_name(e.path.rsplit("/", 1)[-1]):
                store.delete(e.path)
        for e in entries:
            name = e.path.rsplit("/", 1)[-1]
            match = _CHECKPOINT_RE.match(name)
            if not e.path.startswith(CHECKPOINT_DIR + "/") or not match:
                continue
            ckpt = store.read_json(e.path)
            if ckpt is None or ckpt.get("key") != match["key"]:
                store.delete(e.path)
                continue
            intact = all(sizes.get(f["path"]) == f["bytes"] for f in ckpt["files"]) and (
                ckpt.get("errors") is None or ckpt["errors"]["path"] in sizes
            )
            if intact:
                self._checkpoints[ckpt["key"]] = ckpt
            else:
                damaged.append(ckpt)
        if damaged:
            # Our own writes never leave a checkpoint without its files; only outside damage
            # does. Redoing a damaged chunk is safe unless a retry has since moved some of its
            # IDs into a retry chunk: then redoing it would write those deals twice.
            retries = [k for k, c in self._checkpoints.items() if c.get("kind") == "retry"]
            retries += [c["key"] for c in damaged if c.get("kind") == "retry"]
            if retries:
                raise OutputError(
                    f"output {display_uri(store.uri)} is damaged: files of chunk "
                    f"{damaged[0]['key']} are missing or changed and retries have run since; "
                    "restore the files or overwrite the output"
                )
            for ckpt in damaged:
                store.delete(_checkpoint_path(ckpt["key"]))
        vouched = self._vouched_paths()
        for e in entries:
            if e.path in vouched:
                continue
            parts = e.path.split("/")
            orphan_sidecar = len(parts) == 2 and parts[0] == ERRORS_DIR
            if _is_data_path(e.path) or (orphan_sidecar and _SIDECAR_RE.match(parts[1])):
                store.delete(e.path)
        for key in sorted(self._checkpoints):
            ckpt = self._checkpoints[key]
            if ckpt.get("kind") == "retry" and not ckpt.get("sidecar_cleaned"):
                self._cleanup_after_retry(key)
        store.remove_empty_dirs()

    def _vouched_paths(self) -> set[str]:
        paths: set[str] = set()
        for ckpt in self._checkpoints.values():
            paths.update(f["path"] for f in ckpt["files"])
            if ckpt.get("errors"):
                paths.add(ckpt["errors"]["path"])
        return paths

    # -- state ----------------------------------------------------------------------------------

    @property
    def uri(self) -> str:
        return display_uri(self._store.uri)

    def committed_chunks(self) -> set[int]:
        """Indices of the chunks whose checkpoint exists: skip these when resuming."""
        return {int(k) for k, c in self._checkpoints.items() if c.get("kind") == "chunk"}

    def checkpoint(self, chunk_index: int) -> dict[str, Any] | None:
        """The committed record of a chunk (files, counts, stats), or None."""
        return self._checkpoints.get(f"{chunk_index:06d}")

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
        key = f"{chunk_index:06d}"
        if key in self._checkpoints and not replace:
            raise OutputError(
                f"chunk {chunk_index} is already committed in {self.uri}; skip it "
                "(see committed_chunks()) or pass replace=True to rewrite it"
            )
        return self._write_unit(key, "chunk", data, errors, stats)

    async def awrite_chunk(
        self,
        chunk_index: int,
        data: pa.Table,
        errors: Rows = None,
        stats: Mapping[str, Any] | None = None,
        *,
        replace: bool = False,
    ) -> dict[str, Any]:
        """`write_chunk` in a worker thread, so encoding and fsync never block the event loop.

        Cancellation waits for the write to finish (it is bounded and all-or-nothing) and then
        propagates, so the caller never closes the root under a write still in flight.
        """
        task = asyncio.ensure_future(
            asyncio.to_thread(self.write_chunk, chunk_index, data, errors, stats, replace=replace)
        )
        cancelled = False
        while True:
            try:
                result = await asyncio.shield(task)
            except asyncio.CancelledError:
                if task.done():
                    raise
                cancelled = True
                continue
            if cancelled:
                raise asyncio.CancelledError
            return result

    def _write_unit(
        self,
        key: str,
        kind: str,
        data: pa.Table,
        errors: Rows,
        stats: Mapping[str, Any] | None,
        retried_ids: list[int] | None = None,
    ) -> dict[str, Any]:
        self._check_open()
        errors_t = errors if isinstance(errors, pa.Table) else sidecar_table(errors or [])
        errors_t = conform(errors_t)
        self._check_accounting(key, data, errors_t)
        self._invalidate_success()

        old = self._checkpoints.pop(key, None)
        if old is not None:
            self._store.delete(_checkpoint_path(key))

        files: list[dict[str, Any]] = []
        dirs: set[str] = {""}
        for n, (directory, part) in enumerate(split(data, self.spec)):
            name = f"part-{key}-{n}.parquet"
            rel = f"{directory}/{name}" if directory else name
            record = self._write_parquet(rel, part)
            record["partition"] = directory
            files.append(record)
            dirs.add(directory)

        error_record: dict[str, Any] | None = None
        if errors_t.num_rows:
            error_record = self._write_sidecar(_sidecar_path(key), errors_t)
            dirs.add(ERRORS_DIR)

        if old is not None:
            keep = {f["path"] for f in files}
            for f in old["files"]:
                if f["path"] not in keep:
                    self._store.delete(f["path"])
            if old.get("errors") and error_record is None:
                self._store.delete(old["errors"]["path"])

        self._store.sync_dirs(dirs)
        ckpt: dict[str, Any] = {
            "format": FORMAT,
            "key": key,
            "kind": kind,
            "run_id": self.run_id,
            "written_at": self._now().isoformat(),
            "rows": sum(f["rows"] for f in files),
            "files": files,
            "errors": error_record,
            "schema_fingerprint": schema_fingerprint(data.schema) if data.num_rows else None,
            "stats": dict(stats or {}),
        }
        if retried_ids is not None:
            ckpt["retried_ids"] = retried_ids
            ckpt["sidecar_cleaned"] = False
        self._store.write_atomic(_checkpoint_path(key), _dumps(ckpt))
        self._store.sync_dirs({CHECKPOINT_DIR})
        self._checkpoints[key] = ckpt
        return ckpt

    def _check_accounting(self, key: str, data: pa.Table, errors: pa.Table) -> None:
        """Within one chunk, every ID is in the data or in one fetch row, never both or twice."""
        data_ids: set[int] = set()
        if self._id_column in data.column_names:
            ids = data.column(self._id_column).to_pylist()
            data_ids = set(ids)
            if None in data_ids:
                raise OutputError(f"chunk {key}: the data has rows without {self._id_column}")
            if len(data_ids) != len(ids):
                dup = next(i for i, c in Counter(ids).items() if c > 1)
                raise OutputError(f"chunk {key}: deal {dup} appears twice in the data")
        stage = errors.column("stage").to_pylist()
        err_ids = errors.column("id").to_pylist()
        lines = errors.column("line").to_pylist()
        fetch_ids: set[int] = set()
        for s, i, line in zip(stage, err_ids, lines, strict=True):
            if s == "fetch":
                if i is None:
                    raise OutputError(f"chunk {key}: a fetch error row has no id")
                if i in fetch_ids or i in data_ids:
                    raise OutputError(f"chunk {key}: deal {i} is accounted for twice")
                fetch_ids.add(i)
            elif s == "input" and line is None:
                raise OutputError(f"chunk {key}: an input error row has no line number")
            elif s == "normalise" and data_ids and i not in data_ids:
                raise OutputError(f"chunk {key}: normalise error for deal {i} not in the data")

    def _parquet_bytes(self, table: pa.Table) -> pa.Buffer:
        # Built in memory: one chunk is bounded (chunk_size rows), and a whole buffer is what
        # makes an object-store upload all-or-nothing.
        sink = pa.BufferOutputStream()
        pq.write_table(
            table,
            sink,
            compression=self.config.compression,
            row_group_size=self.config.max_rows_per_group,
        )
        return sink.getvalue()

    def _write_parquet(self, rel: str, table: pa.Table) -> dict[str, Any]:
        buf = self._parquet_bytes(table)
        self._store.write_atomic(rel, buf)
        return {
            "path": rel,
            "rows": table.num_rows,
            "bytes": buf.size,
            "sha256": hashlib.sha256(buf).hexdigest(),
        }

    def _write_sidecar(self, rel: str, table: pa.Table) -> dict[str, Any]:
        record = self._write_parquet(rel, table)
        stages = Counter(table.column("stage").to_pylist())
        fetch = table.filter(pc.equal(table.column("stage"), "fetch"))
        record["by_stage"] = dict(stages)
        record["failed_by_class"] = dict(
            Counter(str(c) for c in fetch.column("error_class").to_pylist())
        )
        record["retryable"] = sum(1 for r in fetch.column("retryable").to_pylist() if r)
        record["failed_by_reason"] = _reasons(fetch)
        return record

    def _failure_reasons(self, err: Mapping[str, Any]) -> dict[str, dict[str, int]]:
        """Exact failure reasons of one sidecar file: from its record, or (checkpoints written
        before records carried them) from the file itself."""
        reasons = err.get("failed_by_reason")
        if isinstance(reasons, dict):
            return {k: dict(v) for k, v in reasons.items() if k in ("permanent", "retryable")}
        table = self._read_sidecar(err["path"])
        return _reasons(table.filter(pc.equal(table.column("stage"), "fetch")))

    def _read_sidecar(self, rel: str) -> pa.Table:
        raw = self._store.read_bytes(rel)
        if raw is None:
            raise OutputError(f"sidecar file {rel} is missing from {self.uri}")
        return conform(pq.read_table(pa.BufferReader(raw)))

    # -- metadata -------------------------------------------------------------------------------

    @_os_errors
    def write_input(self, ids: pa.Array, meta: Mapping[str, Any]) -> None:
        """Keep the ID list of a run whose input cannot be read again (incremental discovery
        answers differently a minute later), with `meta` saying how it was obtained."""
        self._check_open()
        table = pa.table({"ID": ids.cast(pa.int64())}).replace_schema_metadata(
            {"deal_export": _dumps(dict(meta))}
        )
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink, compression="zstd")
        self._store.write_atomic(INPUT_FILE, sink.getvalue())

    @_os_errors
    def write_schema(self, schema: Mapping[str, Any]) -> None:
        """Store the schema snapshot (`_schema.json`) the normaliser derived from the portal."""
        self._check_open()
        self._store.write_atomic(SCHEMA_FILE, _dumps(dict(schema)))

    def read_schema(self) -> dict[str, Any] | None:
        return self._store.read_json(SCHEMA_FILE)

    def read_watermark(self) -> Any:
        """The watermark of the last run that completed before this one opened the root."""
        state = self._previous_state
        return None if state is None else state.get("watermark")

    def previous_schema(self) -> dict[str, Any] | None:
        """The schema snapshot of the last run that completed before this one opened the root
        (kept across `overwrite`), or None: what schema drift is measured against."""
        state = self._previous_state
        schema = None if state is None else state.get("schema")
        return schema if isinstance(schema, dict) else None

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
        if counts is not None:
            meta["run_counts"] = dict(counts)
        if config is not None:
            meta["config"] = mask_config(config)
        if limits is not None:
            meta["limits"] = dict(limits)
        if schema_drift is not None:
            meta["schema_drift"] = dict(schema_drift)
        self._store.write_atomic(RUN_FILE, _dumps(meta))

        files: list[dict[str, Any]] = []
        error_files: list[dict[str, Any]] = []
        by_stage: Counter[str] = Counter()
        by_class: Counter[str] = Counter()
        by_reason: dict[str, Counter[str]] = {"permanent": Counter(), "retryable": Counter()}
        retryable = 0
        chunk_stats: dict[str, float] = {}
        fingerprints: set[str] = set()
        for key in sorted(self._checkpoints):
            ckpt = self._checkpoints[key]
            files.extend({**f, "chunk": key} for f in ckpt["files"])
            if ckpt.get("schema_fingerprint"):
                fingerprints.add(ckpt["schema_fingerprint"])
            err = ckpt.get("errors")
            if err:
                error_files.append(
                    {k: err[k] for k in ("path", "rows", "bytes", "sha256")} | {"chunk": key}
                )
                by_stage.update(err["by_stage"])
                by_class.update(err["failed_by_class"])
                retryable += int(err["retryable"])
                for kind, reasons in self._failure_reasons(err).items():
                    by_reason[kind].update(reasons)
            for name, value in ckpt.get("stats", {}).items():
                if isinstance(value, int | float) and not isinstance(value, bool):
                    chunk_stats[name] = chunk_stats.get(name, 0) + value
        derived = {
            "exported": sum(f["rows"] for f in files),
            "failed": by_stage.get("fetch", 0),
            "failed_by_class": dict(sorted(by_class.items())),
            "failed_by_reason": {k: dict(sorted(v.items())) for k, v in by_reason.items()},
            "invalid_input_lines": by_stage.get("input", 0),
            "normalise_errors": by_stage.get("normalise", 0),
            "retryable_failed": retryable,
        }
        snapshot = self.read_schema()
        if schema_fingerprint is None and snapshot is not None:
            schema_fingerprint = snapshot_fingerprint(snapshot)
        if schema_fingerprint is None and len(fingerprints) == 1:
            schema_fingerprint = next(iter(fingerprints))
        manifest = {
            "format": FORMAT,
            "run_id": self.run_id,
            "started_at": meta["started_at"],
            "ended_at": self._now().isoformat(),
            "completed": completed,
            "sessions": meta.get("sessions", []),
            "root": self.uri,
            "input_fingerprint": meta.get("input_fingerprint"),
            "layout": meta["layout"] | {"partition_key": self.spec.key},
            "dataset_glob": DATASET_GLOB,
            "config": meta.get("config", {}),
            "schema_fingerprint": schema_fingerprint,
            "schema_fingerprints": sorted(fingerprints),
            "schema_drift": meta.get("schema_drift"),
            "counts": {**meta.get("run_counts", {}), **derived},
            "chunk_stats": dict(chunk_stats),
            "limits": meta.get("limits", {}),
            "chunks": len(self._checkpoints),
            "files": files,
            "error_files": error_files,
        }
        self._store.write_atomic(MANIFEST_FILE, _dumps(manifest))
        if completed:
            self._store.sync_dirs({""})
            self._store.write_atomic(SUCCESS_FILE, b"")
            self._success_cleared = False
            # `_SUCCESS`'s rename must be durable before the state that trusts it exists: a
            # power loss must never keep the new `_state.json` and lose `_SUCCESS`.
            self._store.sync_dirs({""})
            # Last of all: a stop before this line leaves the previous run's state in force, so
            # the next incremental run asks again for everything this one may not have finished.
            self._commit_state(watermark, manifest["ended_at"])
        return manifest

    def _commit_state(self, watermark: Any, at: str) -> None:
        previous = self._previous_state or {}
        state = {
            "format": STATE_FORMAT,
            "run_id": self.run_id,
            "at": at,
            "watermark": previous.get("watermark") if watermark is None else watermark,
            "schema": self.read_schema() or previous.get("schema"),
        }
        self._store.write_atomic(STATE_FILE, _dumps(state))

    # -- retry ----------------------------------------------------------------------------------

    def _retryable_index(self) -> dict[int, dict[str, Any]]:
        index: dict[int, dict[str, Any]] = {}
        for key in sorted(self._checkpoints):
            err = self._checkpoints[key].get("errors")
            if not err or not err.get("retryable"):
                continue
            for row in self._read_sidecar(err["path"]).to_pylist():
                if row["stage"] == "fetch" and row["retryable"]:
                    index[int(row["id"])] = row
        return index

    @_os_errors
    def retryable_ids(self) -> list[int]:
        """IDs whose fetch failure is retryable, ascending: what `deal-export retry` re-fetches."""
        self._check_open()
        return sorted(self._retryable_index())

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
        if data.num_rows and self._id_column not in data.column_names:
            raise OutputError(f"retry data has no {self._id_column} column")
        errors_t = errors if isinstance(errors, pa.Table) else sidecar_table(errors or [])
        errors_t = conform(errors_t)
        data_ids = set(data.column(self._id_column).to_pylist()) if data.num_rows else set()
        index = self._retryable_index()
        rows = errors_t.to_pylist()
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
        token = re.sub(r"[^0-9A-Za-z]", "", self.run_id)[:32] or "x"
        prefix = f"r{token}-"
        taken = [int(k[len(prefix) :]) for k in self._checkpoints if k.startswith(prefix)]
        seq = 1 + max(taken, default=-1)
        key = f"{prefix}{seq:06d}"
        ckpt = self._write_unit(
            key, "retry", data, sidecar_table(rows), stats, retried_ids=sorted(retried)
        )
        self._cleanup_after_retry(key)
        return self._checkpoints.get(key, ckpt)

    def _cleanup_after_retry(self, key: str) -> None:
        """Drop the retried IDs' old fetch rows from every other sidecar. Idempotent.

        Runs right after the retry chunk commits, and again on the next open if a crash cut it
        short (`sidecar_cleaned` is still false). Each sidecar rewrite is atomic; a checkpoint
        always learns of an emptied sidecar BEFORE the file goes, so it never points at nothing.
        """
        ckpt = self._checkpoints[key]
        retried = pa.array(ckpt["retried_ids"], pa.int64())
        for other_key in sorted(self._checkpoints):
            other = self._checkpoints[other_key]
            err = other.get("errors")
            if other_key == key or not err:
                continue
            table = self._read_sidecar(err["path"])
            hit = pc.and_(
                pc.equal(table.column("stage"), "fetch"),
                pc.is_in(table.column("id"), value_set=retried),
            )
            keep = pc.invert(pc.fill_null(hit, False))
            kept = table.filter(keep)
            if kept.num_rows == table.num_rows and err["rows"] == table.num_rows:
                continue  # (a row-count mismatch means a crash between file and checkpoint)
            if kept.num_rows == 0:
                updated = {**other, "errors": None}
                self._store.write_atomic(_checkpoint_path(other_key), _dumps(updated))
                self._store.delete(err["path"])
            else:
                record = self._write_sidecar(err["path"], kept)
                updated = {**other, "errors": record}
                self._store.write_atomic(_checkpoint_path(other_key), _dumps(updated))
            self._checkpoints[other_key] = updated
        ckpt = {**ckpt, "sidecar_cleaned": True}
        self._store.write_atomic(_checkpoint_path(key), _dumps(ckpt))
        self._checkpoints[key] = ckpt

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


def _refuse_if_locked(store: Store, run_id: str) -> None:
    """Raise the lock's refusal if a run holds `store`'s lock; otherwise change nothing."""
    if not store.exists(LOCK_NAME):
        return
    probe = RunLock(store, run_id)
    probe.acquire()
    probe.release()


def _layout(config: OutputConfig) -> dict[str, Any]:
    return {
        **PartitionSpec.from_config(config).as_dict(),
        "chunk_size": config.chunk_size,
        "compression": config.compression,
        "max_rows_per_group": config.max_rows_per_group,
    }


def _same_input_and_layout(
    meta: Mapping[str, Any], layout: Mapping[str, Any], fingerprint: str | None
) -> tuple[bool, bool]:
    theirs = meta.get("input_fingerprint")
    same_input = fingerprint is None or theirs is None or fingerprint == theirs
    old_layout = meta.get("layout", {})
    # chunk_size decides which IDs a chunk index stands for: resuming with another size would
    # skip or double IDs, so it is part of the layout.
    checked = ("partition_by", "partition_transform", "chunk_size")
    return same_input, all(old_layout.get(k) == layout[k] for k in checked)


def holds_retryable_failures(
    config: OutputConfig, input_fingerprint: str | None, filesystem: pafs.FileSystem | None = None
) -> bool:
    """True when `config.root` holds a completed export of this very input and layout whose
    sidecar lists failures a retry may fix: running the same command again then retries
    exactly those, as `deal-export retry` does (no lock needed; retry takes it)."""
    store = Store.from_root(config.root, filesystem)
    if (store.local and not os.path.isdir(store.base)) or not store.exists(SUCCESS_FILE):
        return False
    meta = store.read_json(RUN_FILE)
    manifest = store.read_json(MANIFEST_FILE)
    if meta is None or manifest is None or not manifest.get("completed"):
        return False
    same_input, same_layout = _same_input_and_layout(meta, _layout(config), input_fingerprint)
    retryable = manifest.get("counts", {}).get("retryable_failed", 0)
    return same_input and same_layout and isinstance(retryable, int) and retryable > 0


def _decide(
    store: Store,
    config: OutputConfig,
    run_id: str,
    fingerprint: str | None,
    now: Callable[[], datetime],
) -> tuple[dict[str, Any], bool]:
    """Apply `existing_data_behavior` to what the root holds; returns (run metadata, resumed)."""
    layout = _layout(config)
    where = display_uri(store.uri)
    behavior = config.existing_data_behavior
    entries = [e.path for e in store.list_files() if e.path != LOCK_NAME]
    foreign = [p for p in entries if not _is_ours(p)]
    if foreign:
        raise OutputError(
            f"output root {where} holds files deal-export did not write (e.g. {foreign[0]}); "
            "choose an empty directory or a new root"
        )
    meta = store.read_json(RUN_FILE)
    fresh = {
        "format": FORMAT,
        "run_id": run_id,
        "started_at": now().isoformat(),
        "input_fingerprint": fingerprint,
        "layout": layout,
        "sessions": [],
    }
    if meta is None:
        if entries:  # debris of an interrupted overwrite: nothing vouches for it
            _wipe(store)
        return fresh, False

    completed = store.exists(SUCCESS_FILE)
    same_input, same_layout = _same_input_and_layout(meta, layout, fingerprint)
    what = "a completed export" if completed else "an unfinished export"
    if completed and behavior == "error":
        raise OutputError(
            f"output root {where} already holds {what} (run {meta.get('run_id')}). "
            "Set existing_data_behavior to 'overwrite' to replace it, 'resume' to continue it "
            "with the same input, or choose a new output root."
        )
    if completed and behavior == "overwrite":
        _wipe(store)
        return fresh, False
    if not (same_input and same_layout):
        if behavior == "overwrite":
            _wipe(store)
            return fresh, False
        differs = "input" if not same_input else "layout (partitioning or chunk_size)"
        raise OutputError(
            f"output root {where} holds {what} of a different {differs} "
            f"(run {meta.get('run_id')}). Run again with the original input and settings to "
            "resume it, set existing_data_behavior to 'overwrite' to discard it, or choose a "
            "new output root."
        )
    meta["layout"] = layout
    return meta, True


def _wipe(store: Store) -> None:
    """Delete our files only; commit markers first, run metadata last (a crash stays safe)."""
    for name in (SUCCESS_FILE, MANIFEST_FILE):
        store.delete(name)
    store.delete_dir(CHECKPOINT_DIR)
    for entry in store.list_files():
        if _is_data_path(entry.path) or is_temp_name(entry.path.rsplit("/", 1)[-1]):
            store.delete(entry.path)
    for name in (ERRORS_DIR,):
        store.delete_dir(name)
    # `_state.json` (the incremental watermark) survives: a nightly run that replaces last
    # night's delta and then dies must still know where the previous successful run ended.
    for name in (SCHEMA_FILE, INPUT_FILE, RUN_FILE):
        store.delete(name)
    store.remove_empty_dirs()


def _reasons(fetch_rows: pa.Table) -> dict[str, dict[str, int]]:
    """Fetch failures by exact reason (the portal's code, else its message), split by whether a
    retry may pass: what the run's verdict needs, whichever session wrote the chunk."""
    out: dict[str, Counter[str]] = {"permanent": Counter(), "retryable": Counter()}
    rows = zip(
        fetch_rows.column("code").to_pylist(),
        fetch_rows.column("message").to_pylist(),
        fetch_rows.column("retryable").to_pylist(),
        strict=True,
    )
    for code, message, retryable in rows:
        out["retryable" if retryable else "permanent"][str(code or message or "")] += 1
    return {k: dict(v) for k, v in out.items()}


def _completed_state(store: Store) -> dict[str, Any] | None:
    """`_state.json` if it belongs to a run that completed, else None.

    From STATE_FORMAT 2 on the state is written after that run's `_SUCCESS`, so its presence is
    the proof. Format 1 wrote it before the manifest; such a state is only trusted while the
    root still shows that very run completed.
    """
    state = store.read_json(STATE_FILE)
    if state is None:
        return None
    fmt = state.get("format")
    if isinstance(fmt, int) and fmt >= STATE_FORMAT:
        return state
    manifest = store.read_json(MANIFEST_FILE) if store.exists(SUCCESS_FILE) else None
    if manifest is not None and manifest.get("run_id") == state.get("run_id"):
        return state
    return None


def read_watermark(root: str, filesystem: pafs.FileSystem | None = None) -> Any:
    """The watermark of the last completed run into `root` (no lock needed), or None."""
    state = _completed_state(Store.from_root(root, filesystem))
    return None if state is None else state.get("watermark")


def read_state(root: str, filesystem: pafs.FileSystem | None = None) -> dict[str, Any] | None:
    """The run state (`_state.json`) of the last completed run into `root`, or None."""
    store = Store.from_root(root, filesystem)
    store.refuse_a_file()
    if store.local and not os.path.isdir(store.base):
        raise OutputError(f"output root {display_uri(store.uri)} does not exist")
    return _completed_state(store)


@_os_errors
def set_watermark(
    root: str,
    watermark: str | None,
    *,
    by: str,
    filesystem: pafs.FileSystem | None = None,
    now: Callable[[], datetime] = _utc_now,
) -> dict[str, Any]:
    """Move (or, with None, clear) the watermark the next `--since-last-run` starts from.

    Takes the root's lock, so it is refused while a run writes there, and replaces the state in
    one atomic write; the field list kept for drift reports stays. `by` names who moved it (a
    pseudo run id) in the state and the lock. Returns the new state.
    """
    store = Store.from_root(root, filesystem)
    store.refuse_a_file()
    if not store.exists(""):
        raise OutputError(f"output root {display_uri(store.uri)} does not exist")
    foreign = [e.path for e in store.list_files() if not _is_ours(e.path)]
    if foreign:
        raise OutputError(
            f"output root {display_uri(store.uri)} holds files deal-export did not write "
            f"(e.g. {foreign[0]}); not touching its state"
        )
    lock = RunLock(store, by)
    lock.acquire()
    try:
        previous = _completed_state(store) or {}
        state = {
            "format": STATE_FORMAT,
            "run_id": previous.get("run_id"),
            "at": previous.get("at"),
            "watermark": watermark,
            "schema": previous.get("schema"),
            "moved_by": by,
            "moved_at": now().isoformat(),
        }
        store.write_atomic(STATE_FILE, _dumps(state))
        return state
    finally:
        lock.release()


def read_pending_input(
    root: str, filesystem: pafs.FileSystem | None = None
) -> tuple[pa.Array, dict[str, Any]] | None:
    """The stored ID list of an UNFINISHED run into `root` (no lock needed), or None.

    A completed output's list is history, not work to resume, so it is not returned.
    """
    store = Store.from_root(root, filesystem)
    if store.exists(SUCCESS_FILE):
        return None
    raw = store.read_bytes(INPUT_FILE)
    if raw is None:
        return None
    table = pq.read_table(pa.BufferReader(raw))
    meta = json_object((table.schema.metadata or {}).get(b"deal_export"))
    if meta is None or "ID" not in table.column_names:
        return None
    return table.column("ID").combine_chunks(), meta


__all__ = [
    "DATASET_GLOB",
    "OutputRoot",
    "dataset_glob",
    "holds_retryable_failures",
    "read_pending_input",
    "read_state",
    "read_watermark",
    "set_watermark",
]
