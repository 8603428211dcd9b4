"""Run state: the last completed run's watermark and schema, and a pending run's discovered IDs.

Kept apart from the dataset's files, in `_deal_export/state.json` and `_deal_export/input.parquet`
at the top of the output (the folder the user names), so neither a wipe nor a reader of the data
ever meets it, and one state serves every run directory of a `new_run` output. Format 2: the
state is written after that run's `_SUCCESS`, so its presence proves the run completed.
Outputs written before the move kept `_state.json` and `_input.parquet` in the root: they are
read from there, and moved on the next open under the lock (`FolderState.migrate`).
`StateStore` is what a run needs of it, so a table-format sink can keep the state in its commit
metadata.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

import pyarrow as pa

from pipeline.errors import OutputError
from pipeline.output.encode import INPUT_META_KEY, decode, encode_input
from pipeline.output.layout import (
    LEGACY_INPUT_FILE,
    LEGACY_STATE_FILE,
    MANIFEST_FILE,
    PENDING_INPUT_PATH,
    STATE_PATH,
    SUCCESS_FILE,
    dumps,
    holds_run_dirs,
    is_ours,
    is_ours_in_runs,
)
from pipeline.output.lock import RunLock
from pipeline.output.store import Store, display_uri, json_object, os_errors

if TYPE_CHECKING:
    import pyarrow.fs as pafs

#: 2: the state is written after `_SUCCESS` and carries the run's schema snapshot.
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
    """`StateStore` on a folder output: `_deal_export/` at the top of `store`."""

    #: The key of the pending input's metadata naming the directory whose `_SUCCESS` ends it.
    DATA_DIR_KEY = "data_dir"

    def __init__(self, store: Store) -> None:
        self._store = store

    def read_completed(self) -> RunState | None:
        """The state of the last run that completed, or None (from an older output's
        `_state.json` while it has not been migrated)."""
        raw = self._store.read_json(STATE_PATH)
        if raw is None:
            raw = self._store.read_json(LEGACY_STATE_FILE)
        return None if raw is None else self._trusted(RunState.from_json(raw))

    def _trusted(self, state: RunState) -> RunState | None:
        """`state` if it belongs to a run that completed, else None.

        From STATE_FORMAT 2 on the state is written after that run's `_SUCCESS`, so its presence
        is the proof. Format 1 wrote it before the manifest; such a state is only trusted while
        the root still shows that very run completed.
        """
        if state.format >= STATE_FORMAT:
            return state
        store = self._store
        manifest = store.read_json(MANIFEST_FILE) if store.exists(SUCCESS_FILE) else None
        if manifest is not None and manifest.get("run_id") == state.run_id:
            return state
        return None

    def migrate(self) -> None:
        """Move an older output's `_state.json` and `_input.parquet` into `_deal_export/`.

        Called under the lock before anything else changes, so the wipe of an `overwrite` can
        never take the watermark with it. The new file is written before the old one goes."""
        store = self._store
        raw_state = store.read_json(LEGACY_STATE_FILE)
        if raw_state is not None or store.exists(LEGACY_STATE_FILE):
            legacy = None if raw_state is None else self._trusted(RunState.from_json(raw_state))
            if legacy is not None and not store.exists(STATE_PATH):
                self.write_state(dataclasses.replace(legacy, format=STATE_FORMAT))
            store.delete(LEGACY_STATE_FILE)
        raw = store.read_bytes(LEGACY_INPUT_FILE)
        if raw is not None:
            if not store.exists(SUCCESS_FILE) and not store.exists(PENDING_INPUT_PATH):
                store.write_atomic(PENDING_INPUT_PATH, raw)
            store.delete(LEGACY_INPUT_FILE)

    def write_state(self, state: RunState) -> None:
        self._store.write_atomic(STATE_PATH, dumps(state.to_json()))

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
        self.write_state(state)
        return state

    def write_pending_input(
        self, ids: pa.Array, meta: Mapping[str, Any], data_dir: str = ""
    ) -> None:
        """Keep the ID list of a run whose input cannot be read again (incremental discovery
        answers differently a minute later), with `meta` saying how it was obtained and
        `data_dir` which directory (relative to the output) that run writes."""
        meta = {**meta, self.DATA_DIR_KEY: data_dir}
        self._store.write_atomic(PENDING_INPUT_PATH, encode_input(ids, meta))

    def discard_pending_input(self) -> None:
        """A run that starts afresh drops the list an earlier unfinished run left."""
        self._store.delete(PENDING_INPUT_PATH)

    def read_pending_input(self) -> tuple[pa.Array, dict[str, Any]] | None:
        """The stored ID list of an UNFINISHED run, or None: a completed run's list is
        history, not work to resume."""
        store = self._store
        raw = store.read_bytes(PENDING_INPUT_PATH)
        if raw is None:
            raw = None if store.exists(SUCCESS_FILE) else store.read_bytes(LEGACY_INPUT_FILE)
            if raw is None:
                return None
        table = decode(raw)
        meta = json_object((table.schema.metadata or {}).get(INPUT_META_KEY))
        if meta is None or "ID" not in table.column_names:
            return None
        data_dir = str(meta.pop(self.DATA_DIR_KEY, "") or "")
        if store.exists(f"{data_dir}/{SUCCESS_FILE}" if data_dir else SUCCESS_FILE):
            return None
        return table.column("ID").combine_chunks(), meta


def _is_ours_anywhere(paths: list[str]) -> list[str]:
    """The paths neither layout (one export, or one directory per run) would have written."""
    check = is_ours_in_runs if holds_run_dirs(paths) else is_ours
    return [p for p in paths if not check(p)]


def read_watermark(root: str, filesystem: pafs.FileSystem | None = None) -> Any:
    """The watermark of the last completed run into `root` (no lock needed), or None."""
    state = FolderState(Store.from_root(root, filesystem)).read_completed()
    return None if state is None else state.watermark


def read_state(root: str, filesystem: pafs.FileSystem | None = None) -> dict[str, Any] | None:
    """The run state (`_deal_export/state.json`) of the last completed run into `root`, or
    None."""
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
    foreign = _is_ours_anywhere([e.path for e in store.list_files()])
    if foreign:
        raise OutputError(
            f"output root {display_uri(store.uri)} holds files deal-export did not write "
            f"(e.g. {foreign[0]}); not touching its state"
        )
    lock = RunLock(store, by)
    lock.acquire()
    try:
        folder = FolderState(store)
        folder.migrate()
        previous = folder.read_completed()
        state = RunState(
            run_id=None if previous is None else previous.run_id,
            at=None if previous is None else previous.at,
            watermark=watermark,
            schema=None if previous is None else previous.schema,
            moved_by=by,
            moved_at=now().isoformat(),
        )
        folder.write_state(state)
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
