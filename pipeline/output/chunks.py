"""Chunk commit and accounting: the one path that writes an export or retry chunk.

Also the in-memory ledger of the committed checkpoints of an open root.

A chunk is committed when its checkpoint exists; it is written after the chunk's data
files and sidecar file are written (and, locally, fsynced) under `_staging/<key>/`, names no
reader picks up; only then are they moved into place. So a crash or a full disk before the
checkpoint leaves nothing a reader sees (`recovery` deletes the staging area), and a crash after
it leaves a committed chunk whose moves `recovery` completes (`staged_path` derives each staged
name from the final one). Rewriting a chunk first deletes its checkpoint, so a crash
mid-rewrite leaves only debris for `recovery` to delete.

A chunk that takes long (a slow portal) is committed in pieces before it is complete: each
piece is a unit of its own whose checkpoint lists exactly the IDs it accounts for. A resumed run
skips those IDs, and the chunk's own commit holds the rest; no ID may be in two units.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from pipeline.errors import OutputError
from pipeline.output.encode import Encoding, decode, sha256
from pipeline.output.layout import (
    CHECKPOINT_DIR,
    ERRORS_DIR,
    STAGING_DIR,
    checkpoint_path,
    chunk_key,
    data_name,
    dumps,
    sidecar_path,
    staged_path,
    staging_dir,
)
from pipeline.output.lineage import without_lineage
from pipeline.output.manifest import schema_fingerprint
from pipeline.output.partition import PartitionSpec, iter_split
from pipeline.output.records import Checkpoint, ErrorRecord, FileRecord
from pipeline.output.sidecar import SIDECAR_SCHEMA, conform, summarise
from pipeline.output.store import Store, display_uri


@dataclass(frozen=True, slots=True)
class ChunkUnit:
    """What one commit writes: a chunk's data and sidecar rows, under its key."""

    key: str
    kind: str  # "chunk" or "retry"
    data: pa.Table
    errors: pa.Table  # already `conform`ed to SIDECAR_SCHEMA
    stats: Mapping[str, Any]
    retried_ids: tuple[int, ...] | None = None
    #: Pieces only: the run chunk and the IDs the piece accounts for (ascending).
    chunk: int | None = None
    ids: tuple[int, ...] | None = None


class Chunks:
    """The committed checkpoints of one open root, and the writes that change them."""

    def __init__(
        self,
        store: Store,
        spec: PartitionSpec,
        encoding: Encoding,
        *,
        run_id: str,
        id_column: str,
        now: Callable[[], datetime],
        before_change: Callable[[], None],
    ) -> None:
        self.store = store
        #: Called once the unit is known to be sound and before anything on disk changes.
        self._before_change = before_change
        self.spec = spec
        self.encoding = encoding
        self.run_id = run_id
        self.id_column = id_column
        self._now = now
        self._by_key: dict[str, Checkpoint] = {}

    def __contains__(self, key: object) -> bool:
        return key in self._by_key

    def __iter__(self) -> Iterator[Checkpoint]:
        """Checkpoints in key order (run chunks, then retry chunks)."""
        return iter([self._by_key[k] for k in sorted(self._by_key)])

    def __len__(self) -> int:
        return len(self._by_key)

    def get(self, key: str) -> Checkpoint | None:
        return self._by_key.get(key)

    def committed_keys(self) -> list[str]:
        return sorted(self._by_key)

    def run_unit(
        self,
        chunk_index: int,
        data: pa.Table,
        stats: Mapping[str, Any] | None,
        *,
        replace: bool,
    ) -> ChunkUnit:
        """A run's chunk, refused when already committed unless `replace`: a resuming run
        skips committed chunks, so anything else is a bug that would drop the chunk's rows."""
        if chunk_index < 0:
            raise OutputError("chunk_index must be >= 0")
        key = chunk_key(chunk_index)
        if key in self._by_key and not replace:
            raise OutputError(
                f"chunk {chunk_index} is already committed in {display_uri(self.store.uri)}; "
                "skip it (see committed_chunks()) or pass replace=True to rewrite it"
            )
        return ChunkUnit(key, "chunk", data, SIDECAR_SCHEMA.empty_table(), dict(stats or {}))

    def piece_unit(
        self,
        chunk_index: int,
        data: pa.Table,
        ids: tuple[int, ...],
        stats: Mapping[str, Any] | None,
    ) -> ChunkUnit:
        """Part of a run chunk that is not complete yet, under the chunk's next piece key."""
        if chunk_index < 0:
            raise OutputError("chunk_index must be >= 0")
        if chunk_key(chunk_index) in self._by_key:
            raise OutputError(f"chunk {chunk_index} is already committed; it takes no pieces")
        taken = {c.key for c in self.pieces_of(chunk_index)}
        n = len(taken)
        while piece_key(chunk_index, n) in taken:
            n += 1
        key = piece_key(chunk_index, n)
        return ChunkUnit(
            key,
            "piece",
            data,
            SIDECAR_SCHEMA.empty_table(),
            dict(stats or {}),
            chunk=chunk_index,
            ids=tuple(sorted(ids)),
        )

    def pieces_of(self, chunk_index: int) -> list[Checkpoint]:
        return [c for c in self._by_key.values() if c.is_piece and c.chunk == chunk_index]

    def piece_ids(self) -> dict[int, frozenset[int]]:
        """For each run chunk with committed pieces: the IDs those pieces account for."""
        found: dict[int, set[int]] = {}
        for ckpt in self._by_key.values():
            if ckpt.is_piece and ckpt.chunk is not None and ckpt.ids is not None:
                found.setdefault(ckpt.chunk, set()).update(ckpt.ids)
        return {index: frozenset(ids) for index, ids in found.items()}

    def adopt(self, ckpt: Checkpoint) -> None:
        """Take a checkpoint found on disk (by `recovery`) as committed."""
        self._by_key[ckpt.key] = ckpt

    def save(self, ckpt: Checkpoint) -> None:
        """Rewrite a committed checkpoint (atomically) and remember it."""
        self.store.write_atomic(checkpoint_path(ckpt.key), dumps(ckpt.to_json()))
        self._by_key[ckpt.key] = ckpt

    def vouched_paths(self) -> set[str]:
        paths: set[str] = set()
        for ckpt in self._by_key.values():
            paths.update(f.path for f in ckpt.files)
            if ckpt.errors is not None:
                paths.add(ckpt.errors.path)
        return paths

    # -- the commit path ------------------------------------------------------------------------

    def commit(self, unit: ChunkUnit) -> Checkpoint:
        """Stage the unit's data files and sidecar, write its checkpoint, then move the files
        into place. Readers never see a file its checkpoint does not list."""
        check_accounting(unit.key, unit.data, unit.errors, self.id_column)
        self._check_pieces(unit)
        self._before_change()
        old = self._by_key.pop(unit.key, None)
        if old is not None:
            self.store.delete(checkpoint_path(unit.key))

        files, error_record, moves = self._stage(unit)
        data = unit.data
        ckpt = Checkpoint(
            key=unit.key,
            kind=unit.kind,
            run_id=self.run_id,
            written_at=self._now().isoformat(),
            rows=sum(f.rows for f in files),
            files=tuple(files),
            errors=error_record,
            schema_fingerprint=(
                schema_fingerprint(without_lineage(data.schema)) if data.num_rows else None
            ),
            stats=dict(unit.stats),
            retried_ids=unit.retried_ids,
            sidecar_cleaned=False,
            chunk=unit.chunk,
            ids=unit.ids,
        )
        # The commit point: from here on the staged files belong to a committed chunk, and a
        # crash before they are all in place is rolled forward by `recovery`, never undone.
        self.save(ckpt)
        self.store.sync_dirs({CHECKPOINT_DIR})
        self._publish(unit.key, moves)
        if old is not None:
            self._delete_replaced(old, files, error_record)
        dirs = {""} | {f.partition for f in files}
        if error_record is not None:
            dirs.add(ERRORS_DIR)
        self.store.sync_dirs(dirs)
        return ckpt

    def _check_pieces(self, unit: ChunkUnit) -> None:
        """Exactly once across a chunk's units: a piece lists exactly what it holds, and no ID
        of a piece is in another piece or in the chunk's own commit."""
        if unit.kind == "piece":
            assert unit.chunk is not None
            assert unit.ids is not None
            index, claimed = unit.chunk, unit.ids
            held = _unit_ids(unit, self.id_column)
            if len(set(claimed)) != len(claimed) or len(held) != len(claimed):
                raise OutputError(
                    f"piece {unit.key}: lists {len(claimed)} IDs but holds {len(held)}"
                )
        elif unit.kind == "chunk" and self.pieces_of(int(unit.key)):
            index, claimed = int(unit.key), tuple(_unit_ids(unit, self.id_column))
        else:
            return
        done = set().union(*(c.ids or () for c in self.pieces_of(index) if c.key != unit.key))
        twice = done.intersection(claimed)
        if twice:
            raise OutputError(
                f"chunk {index}: deal {min(twice)} is already committed in a piece of it"
            )

    def _stage(
        self, unit: ChunkUnit
    ) -> tuple[list[FileRecord], ErrorRecord | None, list[tuple[str, str]]]:
        """Every file of the unit, written under `_staging/<key>/`: (records, moves to make).

        A failure (a full disk) frees what was staged before it propagates."""
        files: list[FileRecord] = []
        moves: list[tuple[str, str]] = []
        error_record: ErrorRecord | None = None
        try:
            for n, (directory, part) in enumerate(iter_split(unit.data, self.spec)):
                name = data_name(unit.key, n)
                rel = f"{directory}/{name}" if directory else name
                staged = staged_path(unit.key, name)
                files.append(self._write_data(staged, rel, part, directory))
                moves.append((staged, rel))
                # Before the next group is copied (`iter_split`): one group's rows at a time.
                del part
            if unit.errors.num_rows:
                final = sidecar_path(unit.key)
                staged = staged_path(unit.key, final.rsplit("/", 1)[-1])
                error_record = self._stage_sidecar(staged, final, unit.errors)
                moves.append((staged, final))
            self.store.sync_dirs({staging_dir(unit.key)})
        except BaseException:
            self._drop_staging(unit.key)
            raise
        return files, error_record, moves

    def _publish(self, key: str, moves: list[tuple[str, str]]) -> None:
        for staged, final in moves:
            self.store.move(staged, final)
        self._drop_staging(key)

    def _drop_staging(self, key: str) -> None:
        with contextlib.suppress(OSError):
            self.store.delete_dir(staging_dir(key))
            self.store.remove_dir_if_empty(STAGING_DIR)

    def _delete_replaced(
        self, old: Checkpoint, files: list[FileRecord], error_record: ErrorRecord | None
    ) -> None:
        # A rewrite's old files go too, also in partitions the new data does not touch.
        keep = {f.path for f in files}
        for f in old.files:
            if f.path not in keep:
                self.store.delete(f.path)
        if old.errors is not None and error_record is None:
            self.store.delete(old.errors.path)

    def _write_data(self, staged: str, rel: str, table: pa.Table, partition: str) -> FileRecord:
        buf = self.encoding.encode(table)
        self.store.write_atomic(staged, buf)
        return FileRecord(rel, table.num_rows, buf.size, sha256(buf), partition)

    def _stage_sidecar(self, staged: str, rel: str, table: pa.Table) -> ErrorRecord:
        buf = self.encoding.encode(table)
        self.store.write_atomic(staged, buf)
        return _error_record(rel, table, buf)

    def write_sidecar(self, rel: str, table: pa.Table) -> ErrorRecord:
        """Rewrite a committed sidecar in place (atomic per file: a retry's cleanup)."""
        buf = self.encoding.encode(table)
        self.store.write_atomic(rel, buf)
        return _error_record(rel, table, buf)

    def read_sidecar(self, rel: str) -> pa.Table:
        raw = self.store.read_bytes(rel)
        if raw is None:
            raise OutputError(f"sidecar file {rel} is missing from {self.store.uri}")
        return conform(decode(raw))


def piece_key(chunk_index: int, n: int) -> str:
    return f"{chunk_key(chunk_index)}-p{n:03d}"


def _unit_ids(unit: ChunkUnit, id_column: str) -> list[int]:
    """The deal IDs a unit accounts for: its data rows and its fetch failures."""
    ids: list[int] = []
    if id_column in unit.data.column_names:
        ids.extend(unit.data.column(id_column).to_pylist())
    stages = unit.errors.column("stage").to_pylist()
    ids.extend(
        i for s, i in zip(stages, unit.errors.column("id").to_pylist(), strict=True) if s == "fetch"
    )
    return ids


def _error_record(rel: str, table: pa.Table, buf: pa.Buffer) -> ErrorRecord:
    return ErrorRecord(
        path=rel, rows=table.num_rows, bytes=buf.size, sha256=sha256(buf), **summarise(table)
    )


def check_accounting(key: str, data: pa.Table, errors: pa.Table, id_column: str) -> None:
    """Within one chunk, every ID is in the data or in one fetch row, never both or twice."""
    if not _accounts_cleanly(data, errors, id_column):
        _accounting_problem(key, data, errors, id_column)


def _accounts_cleanly(data: pa.Table, errors: pa.Table, id_column: str) -> bool:
    """`check_accounting`'s rules judged in Arrow, a column at a time: True when they all hold.
    Only a chunk that breaks one (a bug) pays for finding which ID and saying so."""
    ids = data.column(id_column) if id_column in data.column_names else pa.array([], pa.int64())
    if ids.null_count or pc.count_distinct(ids).as_py() != len(ids):
        return False
    stage = errors.column("stage")
    fetch = errors.column("id").filter(pc.equal(stage, "fetch"))
    if fetch.null_count or pc.count_distinct(fetch).as_py() != len(fetch):
        return False
    if len(ids) and pc.any(pc.is_in(fetch, value_set=ids.combine_chunks())).as_py():
        return False
    lines = errors.column("line").filter(pc.equal(stage, "input"))
    if lines.null_count:
        return False
    if len(ids):
        named = errors.column("id").filter(pc.equal(stage, "normalise"))
        return len(named) == 0 or bool(
            pc.all(pc.is_in(named, value_set=ids.combine_chunks())).as_py()
        )
    return True


def _accounting_problem(key: str, data: pa.Table, errors: pa.Table, id_column: str) -> None:
    """The row by row check, for the message naming what is wrong."""
    data_ids: set[int] = set()
    if id_column in data.column_names:
        ids = data.column(id_column).to_pylist()
        data_ids = set(ids)
        if None in data_ids:
            raise OutputError(f"chunk {key}: the data has rows without {id_column}")
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
