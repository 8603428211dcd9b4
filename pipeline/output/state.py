"""Run state: the last completed run's watermark and schema, and a pending run's discovered IDs.

Kept as `_state.json` and `_input.parquet` in the folder root for now (format 2: the state is
written after that run's `_SUCCESS`, so its presence proves the run completed). `StateStore` is
what a run needs of it, so a table-format sink can keep the state in its commit metadata.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import pyarrow as pa
import pyarrow.fs as pafs

from pipeline.errors import OutputError
from pipeline.output.encode import INPUT_META_KEY, decode, encode_input
from pipeline.output.layout import (
    INPUT_FILE,
    MANIFEST_FILE,
    STATE_FILE,
    SUCCESS_FILE,
    dumps,
    is_ours,
)
from pipeline.output.lock import RunLock
from pipeline.output.store import Store, display_uri, json_object, os_errors

#: 2: `_state.json` is written after `_SUCCESS` and carries the run's schema snapshot.
STATE_FORMAT = 2


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class RunState:
    """What the next run needs from the last completed one."""

    run_id: str | None
    at: str | None
    watermark: Any
    schema: Mapping[str, Any] | None
    format: int = STATE_FORMAT
    #: Set when `set_watermark` moved the watermark by hand: who (a pseudo run id) and when.
    moved_by: str | None = None
    moved_at: str | None = None

    def to_json(self) -> dict[str, Any]:
        out = {
            "format": self.format,
            "run_id": self.run_id,
            "at": self.at,
            "watermark": self.watermark,
            "schema": None if self.schema is None else dict(self.schema),
        }
        if self.moved_by is not None or self.moved_at is not None:
            out |= {"moved_by": self.moved_by, "moved_at": self.moved_at}
        return out

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> RunState:
        fmt = raw.get("format")
        schema = raw.get("schema")
        return cls(
            run_id=raw.get("run_id"),
            at=raw.get("at"),
            watermark=raw.get("watermark"),
            schema=dict(schema) if isinstance(schema, dict) else None,
            format=fmt if isinstance(fmt, int) and not isinstance(fmt, bool) else 1,
            moved_by=raw.get("moved_by"),
            moved_at=raw.get("moved_at"),
        )


class StateStore(Protocol):
    """Where a sink keeps run state, apart from the dataset's files."""

    def read_completed(self) -> RunState | None:
        """The state of the last run that completed, or None."""
        ...

    def commit_after_finalize(
        self,
        run_id: str,
        at: str,
        watermark: Any,
        schema: Mapping[str, Any] | None,
        previous: RunState | None,
    ) -> RunState:
        """Record a run that has just completed; None values keep the previous run's."""
        ...


class FolderState:
    """`StateStore` on a folder root: `_state.json` beside the data."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def read_completed(self) -> RunState | None:
        """`_state.json` if it belongs to a run that completed, else None.

        From STATE_FORMAT 2 on the state is written after that run's `_SUCCESS`, so its presence
        is the proof. Format 1 wrote it before the manifest; such a state is only trusted while
        the root still shows that very run completed.
        """
        store = self._store
        raw = store.read_json(STATE_FILE)
        if raw is None:
            return None
        state = RunState.from_json(raw)
        if state.format >= STATE_FORMAT:
            return state
        manifest = store.read_json(MANIFEST_FILE) if store.exists(SUCCESS_FILE) else None
        if manifest is not None and manifest.get("run_id") == state.run_id:
            return state
        return None

    def commit_after_finalize(
        self,
        run_id: str,
        at: str,
        watermark: Any,
        schema: Mapping[str, Any] | None,
        previous: RunState | None,
    ) -> RunState:
        # Last of all: a stop before this write leaves the previous run's state in force, so
        # the next incremental run asks again for everything this one may not have finished.
        state = RunState(
            run_id=run_id,
            at=at,
            watermark=(previous.watermark if previous else None)
            if watermark is None
            else watermark,
            schema=schema or (previous.schema if previous else None),
        )
        self._store.write_atomic(STATE_FILE, dumps(state.to_json()))
        return state

    def write_pending_input(self, ids: pa.Array, meta: Mapping[str, Any]) -> None:
        """Keep the ID list of a run whose input cannot be read again (incremental discovery
        answers differently a minute later), with `meta` saying how it was obtained."""
        self._store.write_atomic(INPUT_FILE, encode_input(ids, meta))

    def read_pending_input(self) -> tuple[pa.Array, dict[str, Any]] | None:
        """The stored ID list of an UNFINISHED run, or None: a completed output's list is
        history, not work to resume."""
        store = self._store
        if store.exists(SUCCESS_FILE):
            return None
        raw = store.read_bytes(INPUT_FILE)
        if raw is None:
            return None
        table = decode(raw)
        meta = json_object((table.schema.metadata or {}).get(INPUT_META_KEY))
        if meta is None or "ID" not in table.column_names:
            return None
        return table.column("ID").combine_chunks(), meta


def read_watermark(root: str, filesystem: pafs.FileSystem | None = None) -> Any:
    """The watermark of the last completed run into `root` (no lock needed), or None."""
    state = FolderState(Store.from_root(root, filesystem)).read_completed()
    return None if state is None else state.watermark


def read_state(root: str, filesystem: pafs.FileSystem | None = None) -> dict[str, Any] | None:
    """The run state (`_state.json`) of the last completed run into `root`, or None."""
    store = Store.from_root(root, filesystem)
    store.refuse_a_file()
    if store.local and not os.path.isdir(store.base):
        raise OutputError(f"output root {display_uri(store.uri)} does not exist")
    state = FolderState(store).read_completed()
    return None if state is None else state.to_json()


@os_errors
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
    foreign = [e.path for e in store.list_files() if not is_ours(e.path)]
    if foreign:
        raise OutputError(
            f"output root {display_uri(store.uri)} holds files deal-export did not write "
            f"(e.g. {foreign[0]}); not touching its state"
        )
    lock = RunLock(store, by)
    lock.acquire()
    try:
        previous = FolderState(store).read_completed()
        state = RunState(
            run_id=None if previous is None else previous.run_id,
            at=None if previous is None else previous.at,
            watermark=watermark,
            schema=None if previous is None else previous.schema,
            moved_by=by,
            moved_at=now().isoformat(),
        )
        store.write_atomic(STATE_FILE, dumps(state.to_json()))
        return state.to_json()
    finally:
        lock.release()


def read_pending_input(
    root: str, filesystem: pafs.FileSystem | None = None
) -> tuple[pa.Array, dict[str, Any]] | None:
    """The stored ID list of an UNFINISHED run into `root` (no lock needed), or None.

    A completed output's list is history, not work to resume, so it is not returned.
    """
    return FolderState(Store.from_root(root, filesystem)).read_pending_input()
