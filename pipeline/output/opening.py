"""Opening a folder root: lock, previous state, existing-data policy, recovery, session.

The steps run in this order, and a failure in any of them releases the lock."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from pipeline.config import OutputConfig
from pipeline.output.layout import RUN_FILE, dumps
from pipeline.output.lock import LOCK_NAME, RunLock
from pipeline.output.recovery import decide, finished_config, is_finished
from pipeline.output.runs import latest_completed, open_run_dir, run_dirs
from pipeline.output.state import FolderState
from pipeline.output.store import Store, os_errors

if TYPE_CHECKING:
    import pyarrow.fs as pafs

    from pipeline.output.root import OutputRoot


def _utc_now() -> datetime:
    return datetime.now(UTC)


@os_errors
def open_root(
    cls: type[OutputRoot],
    config: OutputConfig,
    run_id: str,
    *,
    input_fingerprint: str | None = None,
    filesystem: pafs.FileSystem | None = None,
    id_column: str = "ID",
    now: Callable[[], datetime] = _utc_now,
    lock_stale_after_s: float = 600.0,
    lock_settle_s: float = 0.2,
    run_dir: str | None = None,
) -> OutputRoot:
    """`OutputRoot.open`: lock `config.root` for `run_id`, decide what to do with what is
    there (`recovery.decide`: fresh, resumed, wiped or refused; with `new_run`, which run
    directory, `runs.open_run_dir`), clean up debris. `run_dir` opens exactly that run
    directory of a `new_run` output (`retry`)."""
    top = Store.from_root(config.root, filesystem)
    top.ensure_root()
    lock = RunLock(top, run_id, stale_after_s=lock_stale_after_s, settle_s=lock_settle_s)
    lock.acquire()
    try:
        state = FolderState(top)
        # Before `decide` may wipe the markers a format-1 state is checked against.
        state.migrate()
        previous = state.read_completed()
        if config.existing_data_behavior == "new_run":
            store, meta, resumed = open_run_dir(
                top, config, run_id, input_fingerprint, now, run_dir=run_dir
            )
        else:
            store = top
            meta, resumed = decide(store, config, run_id, input_fingerprint, now)
        if not resumed:
            state.discard_pending_input()
        session = {"run_id": run_id, "opened_at": now().isoformat()}
        meta = dataclasses.replace(meta, sessions=(*meta.sessions, session))
        root = cls(
            store,
            lock,
            config,
            run_id,
            meta,
            resumed=resumed,
            id_column=id_column,
            now=now,
            state=state,
            data_dir="" if store is top else store.base[len(top.base) :].strip("/"),
            previous_state=previous,
        )
        root.recover()
        store.write_atomic(RUN_FILE, dumps(meta.to_json()))
    except BaseException:
        lock.release()
        raise
    return root


@os_errors
def open_finished(
    cls: type[OutputRoot],
    root: str,
    run_id: str,
    *,
    filesystem: pafs.FileSystem | None = None,
    id_column: str = "ID",
    now: Callable[[], datetime] = _utc_now,
) -> OutputRoot:
    """`OutputRoot.open_existing`: open a finished output for `retry`, with the layout it was
    written with."""
    store = Store.from_root(root, filesystem)
    store.refuse_a_file()
    run_dir = None
    if run_dirs(store):
        _refuse_if_locked(store, run_id)
        run_dir = latest_completed(store)
        config, fingerprint = finished_config(store.child(run_dir), root)
        config = dataclasses.replace(config, existing_data_behavior="new_run")
    else:
        if not is_finished(store):
            # A run still writing has no (completed) manifest yet: say "locked", not "no
            # export".
            _refuse_if_locked(store, run_id)
        config, fingerprint = finished_config(store, root)
    return open_root(
        cls,
        config,
        run_id,
        input_fingerprint=fingerprint,
        filesystem=filesystem,
        id_column=id_column,
        now=now,
        run_dir=run_dir,
    )


def _refuse_if_locked(store: Store, run_id: str) -> None:
    """Raise the lock's refusal if a run holds `store`'s lock; otherwise change nothing."""
    if not store.exists(LOCK_NAME):
        return
    probe = RunLock(store, run_id)
    probe.acquire()
    probe.release()
