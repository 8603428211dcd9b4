"""`DeltaSink`: the `Sink` protocol over one Delta table of deals keyed by `ID`.

    PATH/_delta_log/...            the data table's log; every commit carries the run state
    PATH/<key>=<value>/part-...    data files (Delta's own names), partitioned like the folder sink
    PATH/_errors/                  the errors table: the current failures (`errors_table`)
    PATH/_lock                     held while a run writes (`pipeline.output.lock`)

A chunk commits in two steps: its failures into the errors table, then its deals into the data
table in one commit that also records the chunk as done. A kill between the two leaves the
chunk unrecorded, so the next session redoes it, and both steps replay harmlessly (the errors
table replaces the chunk's IDs, the data table merges on `ID`). Readers only ever see committed
versions: Delta readers ignore files no commit added.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from pipeline.config import OutputConfig
from pipeline.errors import OutputError
from pipeline.normalise import DealSchema, compare_snapshots
from pipeline.output.chunks import piece_key
from pipeline.output.delta import columns, commits, contract, errors_table, table
from pipeline.output.delta.commits import Commit
from pipeline.output.delta.location import ERRORS_DIR, DeltaLocation, locate
from pipeline.output.layout import chunk_key
from pipeline.output.lock import RunLock
from pipeline.output.manifest import mask_config, snapshot_fingerprint
from pipeline.output.partition import PartitionSpec
from pipeline.output.sidecar import as_sidecar, fetch_rows, summarise
from pipeline.output.sink import Rows, in_thread
from pipeline.output.store import Store, display_uri, os_errors


def _utc_now() -> datetime:
    return datetime.now(UTC)


class DeltaSink:
    """A Delta output opened by one run (`open`) or one retry (`open_existing`); a `Sink`."""

    def __init__(
        self,
        where: DeltaLocation,
        lock: RunLock,
        config: OutputConfig,
        run_id: str,
        *,
        fingerprint: str | None,
        now: Callable[[], datetime] = _utc_now,
        entity: str | None = None,
    ) -> None:
        self.where = where
        #: The CRM entity of the rows, in every commit: `retry` must fetch the same kind.
        self.entity = entity
        self.errors = where.child(ERRORS_DIR)
        self._lock = lock
        self.config = config
        self.spec = PartitionSpec.from_config(config)
        self.run_id = run_id
        self._fingerprint = fingerprint
        self._now = now
        self._schema: dict[str, Any] | None = None
        self._schema_unrecorded = False
        self._retry_seq = 0
        self._closed = False
        self._writer = table.Writer(config.compression, config.max_rows_per_group)
        current = table.open_table(where)
        self._check_layout(current)
        #: Both tables stay open for the session (`table.OpenTable`).
        self._data = table.OpenTable(where, current)
        self._failures: errors_table.Failures | None = None
        self._commits = commits.ours(current.history()) if current is not None else []
        if current is not None and self._commits:
            # A table an earlier version of this tool made: readers need to know its file
            # stats cover ID only (`files.STATS_PROPERTIES`).
            table.declare_stats(current)
        #: Nothing in the table can collide with this session's rows: append, do not merge.
        self._append_ok = current is None or current.count() == 0
        self._previous = commits.last_completed(self._commits)
        self.resumed = bool(commits.open_chunks(self._commits, fingerprint))

    # -- opening --------------------------------------------------------------------------------

    @classmethod
    @os_errors
    @table.delta_errors
    def open(
        cls,
        config: OutputConfig,
        run_id: str,
        *,
        input_fingerprint: str | None = None,
        lock_settle_s: float = 0.2,
        now: Callable[[], datetime] = _utc_now,
        entity: str | None = None,
    ) -> DeltaSink:
        """Lock the table at `config.root` (created by the first commit) for `run_id`."""
        if config.existing_data_behavior == "overwrite":
            raise OutputError(
                "a Delta output is merged into, never replaced: existing_data_behavior "
                "'overwrite' does not apply (remove the table or choose another --out to start "
                "over)"
            )
        lock = lock_root(config.root, run_id, lock_settle_s)
        try:
            where = locate(config.root)
            return cls(
                where, lock, config, run_id, fingerprint=input_fingerprint, now=now, entity=entity
            )
        except BaseException:
            lock.release()
            raise

    @classmethod
    @os_errors
    @table.delta_errors
    def open_existing(cls, root: str, run_id: str, *, lock_settle_s: float = 0.2) -> DeltaSink:
        """Open a Delta output a run wrote, with that run's settings (for `retry`)."""
        where = locate(root)
        current = table.open_table(where)
        found = commits.ours(current.history()) if current is not None else []
        settings = next((c.record.get("output") for c in found if c.record.get("output")), None)
        if not isinstance(settings, dict):
            raise OutputError(f"{display_uri(root)} holds no Delta table written by deal-export")
        config = OutputConfig(
            root=root,
            partition_by=settings.get("partition_by"),
            partition_transform=settings.get("partition_transform", "none"),
            chunk_size=int(settings.get("chunk_size", 10_000)),
            compression=str(settings.get("compression", "zstd")),
            table_format="delta",
            schema_contract=settings.get("schema_contract", "add-columns"),
        )
        lock = lock_root(root, run_id, lock_settle_s)
        try:
            return cls(where, lock, config, run_id, fingerprint=None, entity=entity_of(found))
        except BaseException:
            lock.release()
            raise

    def _check_layout(self, current: Any) -> None:
        if current is None:
            return
        have = list(current.metadata().partition_columns)
        want = [self.spec.key] if self.spec.key else []
        if have != want:
            raise OutputError(
                f"{self.uri} is a Delta table partitioned by {have or 'nothing'}, but this run "
                f"asks for {want or 'no partitioning'}: use the table's partitioning "
                "(--partition-by/--partition-transform) or another --out"
            )

    # -- the Sink protocol ----------------------------------------------------------------------

    @property
    def uri(self) -> str:
        return display_uri(self.config.root)

    def recover(self) -> None:
        """Nothing to clean: files of a commit that never happened are invisible to readers,
        and `deal-export compact` (vacuum) deletes them."""

    def committed_chunks(self) -> set[int]:
        return {
            int(c.record["index"])
            for c in commits.open_chunks(self._commits, self._fingerprint)
            if c.kind == "chunk" and c.record.get("index") is not None
        }

    def committed_pieces(self) -> dict[int, frozenset[int]]:
        """For each chunk not committed whole: the IDs its committed pieces account for."""
        whole = self.committed_chunks()
        found: dict[int, set[int]] = {}
        for c in commits.open_chunks(self._commits, self._fingerprint):
            index = c.record.get("index")
            if c.kind == "piece" and index is not None and int(index) not in whole:
                found.setdefault(int(index), set()).update(int(i) for i in c.record["ids"])
        return {index: frozenset(ids) for index, ids in found.items()}

    def file_groups(self, data: pa.Table) -> pa.Array | None:
        """None: a Delta commit keeps ID order (its merge and its files' numbering take the
        rows as given)."""
        return None

    def write_piece(
        self,
        chunk_index: int,
        data: pa.Table,
        ids: tuple[int, ...],
        errors: Rows = None,
        stats: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Commit part of a chunk that is not complete yet: one merge commit whose metadata
        lists exactly the IDs it accounts for, which a resumed run skips."""
        if chunk_index in self.committed_chunks():
            raise OutputError(f"chunk {chunk_index} is already committed; it takes no pieces")
        taken = {
            str(c.record.get("chunk"))
            for c in commits.open_chunks(self._commits, self._fingerprint)
            if c.kind == "piece"
        }
        n = 0
        while piece_key(chunk_index, n) in taken:
            n += 1
        return self._commit(
            piece_key(chunk_index, n), chunk_index, data, errors, kind="piece", ids=ids
        )

    async def awrite_piece(
        self,
        chunk_index: int,
        data: pa.Table,
        ids: tuple[int, ...],
        errors: Rows = None,
        stats: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        return await in_thread(self.write_piece, chunk_index, data, ids, errors, stats)

    def checkpoint(self, chunk_index: int) -> dict[str, Any] | None:
        key = chunk_key(chunk_index)
        found = commits.open_chunks(self._commits, self._fingerprint)
        return next((dict(c.record) for c in found if c.record.get("chunk") == key), None)

    def write_chunk(
        self,
        chunk_index: int,
        data: pa.Table,
        errors: Rows = None,
        stats: Mapping[str, Any] | None = None,
        *,
        replace: bool = False,
    ) -> dict[str, Any]:
        if chunk_index in self.committed_chunks() and not replace:
            raise OutputError(f"chunk {chunk_index} is already committed to {self.uri}")
        return self._commit(chunk_key(chunk_index), chunk_index, data, errors)

    async def awrite_chunk(
        self,
        chunk_index: int,
        data: pa.Table,
        errors: Rows = None,
        stats: Mapping[str, Any] | None = None,
        *,
        replace: bool = False,
    ) -> dict[str, Any]:
        return await in_thread(self.write_chunk, chunk_index, data, errors, stats, replace=replace)

    @table.delta_errors
    def retryable_ids(self) -> list[int]:
        return errors_table.retryable_ids(self.errors)

    @property
    def failures(self) -> errors_table.Failures:
        """The errors table, opened at the first commit that needs it."""
        if self._failures is None:
            self._failures = errors_table.Failures(self.errors)
        return self._failures

    @table.delta_errors
    def settle_failures(self, ids: Iterable[int]) -> None:
        """Drop the errors-table rows of `ids`: deals found deleted are no longer failures
        (their rows are marked, or removed, in the data table)."""
        self.failures.replace(set(ids), as_sidecar(None))

    def apply_retry(
        self, data: pa.Table, errors: Rows = None, stats: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        key = f"r{self.run_id}-{self._retry_seq:06d}"
        self._retry_seq += 1
        return self._commit(key, None, data, errors)

    async def aapply_retry(
        self, data: pa.Table, errors: Rows = None, stats: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        return await in_thread(self.apply_retry, data, errors, stats)

    def write_input(self, ids: pa.Array, meta: Mapping[str, Any]) -> None:
        """Not kept: a session that resumes after a crash discovers again and re-merges what
        is already in the table (merging on `ID` is idempotent), and the watermark only moves
        with a completed run."""

    @table.delta_errors
    def write_schema(self, schema: Mapping[str, Any]) -> None:
        """Apply the schema contract to the change since the last completed run (refuse, or
        rewrite the table for an evolved type); the snapshot rides on the next commit."""
        previous = self.previous_schema()
        if previous is not None:
            drift = compare_snapshots(previous, schema)
            contract.check(self.config.schema_contract, drift)
            if drift.type_changed:
                self._evolve_types(schema, [c.name for c in drift.type_changed])
        self._schema = dict(schema)
        self._schema_unrecorded = True

    def read_schema(self) -> dict[str, Any] | None:
        if self._schema is not None:
            return dict(self._schema)
        for commit in commits.open_chunks(self._commits, self._fingerprint):
            if isinstance(commit.record.get("schema"), dict):
                return dict(commit.record["schema"])
        found = commits.latest_value(self._commits, "schema")
        return dict(found) if isinstance(found, dict) else None

    def read_watermark(self) -> Any:
        return read_watermark_of(self._commits)

    def previous_schema(self) -> dict[str, Any] | None:
        """The schema the table was last brought to: by a completed run, or by a type
        evolution whose run then died (the table already holds the new types)."""
        settled = [c for c in self._commits if c.completed or c.kind == "evolve"]
        for commit in settled:
            if isinstance(commit.record.get("schema"), dict):
                return dict(commit.record["schema"])
        return None

    def heartbeat(self) -> None:
        self._lock.heartbeat()

    @table.delta_errors
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
        """One commit that ends the session: the run's totals and, for a completed run, its
        watermark (taken over from the previous run when None, as for a retry)."""
        mine = self._session_chunks()
        totals = {**(counts or {}), **commits.run_totals(mine)}
        if watermark is None:
            watermark = self.read_watermark()
        schema = self.read_schema()
        record = self._record("finalize", None, None, totals)
        record.update(
            completed=completed,
            watermark=watermark if completed else None,
            schema=schema,
            schema_drift=dict(schema_drift or {}),
            limits=dict(limits or {}),
            config=mask_config(config) if config is not None else None,
        )
        if schema_fingerprint is not None:
            record["schema_fingerprint"] = schema_fingerprint
        current = self._current()
        if current is None:
            # Nothing was ever committed (no IDs at all): the run state still needs a table.
            empty = columns.delta_rows(_empty_deals(schema), self.spec, self.run_id, self._now())
            table.create(self.where, empty, self._partition_by(), record, self._writer)
            self._data.reopen()
        else:
            table.mark(current, record)
        self._remember(record)
        return {"counts": totals, "completed": completed, "watermark": record["watermark"]}

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._lock.release()

    def __enter__(self) -> DeltaSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals -------------------------------------------------------------------------

    def _session_chunks(self) -> list[Commit]:
        if self._fingerprint is not None:
            return commits.open_chunks(self._commits, self._fingerprint)
        return [
            c
            for c in commits.since_completed(self._commits)
            if c.kind in ("chunk", "piece") and c.record.get("run_id") == self.run_id
        ]

    def _current(self) -> Any:
        """The data table at its newest version: a commit of our own through
        `create_write_transaction` leaves the object where it was, and `detect_deletes` commits
        to the table through an object of its own."""
        return self._data.current()

    def _partition_by(self) -> list[str]:
        return [self.spec.key] if self.spec.key else []

    def _record(
        self, kind: str, key: str | None, index: int | None, counts: Mapping[str, Any]
    ) -> dict[str, Any]:
        record: dict[str, Any] = {
            "kind": kind,
            "run_id": self.run_id,
            "fingerprint": self._fingerprint,
            "chunk": key,
            "index": index,
            "counts": dict(counts),
            "schema_fingerprint": snapshot_fingerprint(self._schema) if self._schema else None,
            "committed_at": self._now().isoformat(),
            "entity": self.entity,
            "output": {
                **self.spec.as_dict(),
                "chunk_size": self.config.chunk_size,
                "compression": self.config.compression,
                "schema_contract": self.config.schema_contract,
            },
        }
        if self._schema_unrecorded and self._schema is not None:
            record["schema"] = self._schema
        return record

    def _remember(self, record: dict[str, Any]) -> None:
        self._schema_unrecorded = False
        version = self._commits[0].version + 1 if self._commits else 0
        self._commits.insert(0, Commit(version, record))

    @table.delta_errors
    def _commit(
        self,
        key: str,
        index: int | None,
        data: pa.Table,
        errors: Rows,
        *,
        kind: str = "chunk",
        ids: tuple[int, ...] | None = None,
    ) -> dict[str, Any]:
        rows = as_sidecar(errors)
        fetch = fetch_rows(rows)
        covered = {int(i) for i in data.column(table.ID_COLUMN).to_pylist()}
        covered |= {int(i) for i in fetch.column("id").to_pylist() if i is not None}
        self.failures.replace(covered, rows)
        summary = summarise(rows)
        counts = {
            "exported": data.num_rows,
            "normalise_errors": int(summary["by_stage"].get("normalise", 0)),
            "retryable": int(summary["retryable"]),
            "failed_by_reason": summary["failed_by_reason"],
        }
        record = self._record(kind, key, index, counts)
        if ids is not None:
            if covered != set(ids):
                raise OutputError(f"BUG: piece {key} holds other IDs than it lists")
            record["ids"] = sorted(ids)
        deals = columns.delta_rows(data, self.spec, self.run_id, self._now())
        self._write_deals(deals, record)
        self._remember(record)
        return dict(record)

    def _write_deals(self, deals: pa.Table, record: Mapping[str, Any]) -> None:
        new_columns = contract.accepts_new_columns(self.config.schema_contract)
        current = self._current()
        if current is None:
            table.create(self.where, deals, self._partition_by(), record, self._writer)
            self._data.reopen()
        elif deals.num_rows == 0:
            table.mark(current, record)
        elif self._append_ok:
            table.append(current, deals, record, new_columns=new_columns, writer=self._writer)
        else:
            table.upsert(current, deals, record, new_columns=new_columns, writer=self._writer)

    def _evolve_types(self, schema: Mapping[str, Any], names: list[str]) -> None:
        """Rewrite the table once with the changed columns cast to their new types."""
        current = self._current()
        if current is None:
            return
        wanted = {c.name: c.kind.arrow_type for c in DealSchema.from_snapshot(schema).columns}
        data = current.to_pyarrow_table()
        for name in names:
            if name not in data.column_names or name not in wanted:
                continue
            try:
                cast = pc.cast(data.column(name), wanted[name])
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise OutputError(
                    f"cannot evolve column {name} to {wanted[name]}: {exc}; nothing was written"
                ) from None
            data = data.set_column(data.column_names.index(name), name, cast)
        record = self._record("evolve", None, None, {})
        record["evolved"] = names
        record["schema"] = dict(schema)
        table.rewrite(current, data, record, self._writer)
        self._remember(record)


def read_watermark_of(found: list[Commit]) -> Any:
    """The watermark of the last completed run (a retry's finalize carries it over)."""
    return commits.latest_value([c for c in found if c.completed], "watermark")


def entity_of(found: list[Commit]) -> str | None:
    """The entity the newest commit that names one records; else the one a completed run's
    configuration names (tables written before commits named it); None: not recorded."""
    for commit in found:
        if isinstance(commit.record.get("entity"), str):
            return str(commit.record["entity"])
    config = commits.latest_value(found, "config")
    name = config.get("entity") if isinstance(config, dict) else None
    return name if isinstance(name, str) else None


def _empty_deals(schema: Mapping[str, Any] | None) -> pa.Table:
    if schema is None:
        return pa.table({table.ID_COLUMN: pa.array([], pa.int64())})
    return DealSchema.from_snapshot(schema).arrow_schema.empty_table()


def lock_root(root: str, run_id: str, settle_s: float = 0.2) -> RunLock:
    """Hold the output's run lock (`_lock`, which Delta readers and vacuum skip)."""
    store = Store.from_root(root)
    store.ensure_root()
    lock = RunLock(store, run_id, settle_s=settle_s)
    lock.acquire()
    return lock


__all__ = ["DeltaSink", "entity_of", "lock_root", "read_watermark_of"]
