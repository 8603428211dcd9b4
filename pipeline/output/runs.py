"""`existing_data_behavior = "new_run"`: one directory per run, so no night replaces another.

    OUT/_lock                                   one writer at a time, for the whole output
    OUT/_deal_export/state.json                 the watermark of the last completed run
    OUT/run_id=<id>/DATE_CREATE_month=.../part-*.parquet    that run's delta, a root of its own
    OUT/run_id=<id>/_errors/  _checkpoints/  _manifest.json  _SUCCESS ...

Each run directory is a complete folder export (`recovery`'s rules apply inside it). A reader of
`OUT` with Hive partitioning sees every night, with `run_id` as a column. A run that opens `OUT`
continues the unfinished run directory of the same input and layout (the one a crash or a kill
left) and otherwise starts a new one; an unfinished directory of another input is discarded,
which loses nothing: its run never completed, so the watermark still points before it.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from pipeline.config import OutputConfig
from pipeline.errors import OutputError
from pipeline.output.layout import (
    MANIFEST_FILE,
    RUN_FILE,
    SUCCESS_FILE,
    is_ours_in_runs,
    is_run_dir,
    run_dir_name,
)
from pipeline.output.lock import LOCK_NAME
from pipeline.output.records import RunMeta
from pipeline.output.recovery import decide, layout_of, same_input_and_layout
from pipeline.output.store import Store, display_uri

log = logging.getLogger(__name__)


def run_dirs(top: Store) -> list[str]:
    return sorted(d for d in top.list_dirs() if is_run_dir(d))


def check_runs_root(top: Store) -> None:
    """Refuse an output that is not (or not only) one directory per run."""
    where = display_uri(top.uri)
    entries = [e.path for e in top.list_files() if e.path != LOCK_NAME]
    foreign = [p for p in entries if not is_ours_in_runs(p)]
    if not foreign:
        return
    if any("/" not in p and p in (RUN_FILE, MANIFEST_FILE) for p in foreign):
        raise OutputError(
            f"output root {where} holds a single export, not one directory per run; use "
            "existing_data_behavior 'overwrite', 'resume' or 'error' there, or choose a new "
            "root for 'new_run'"
        )
    raise OutputError(
        f"output root {where} holds files deal-export did not write (e.g. {foreign[0]}); "
        "choose an empty directory or a new root"
    )


def open_run_dir(
    top: Store,
    config: OutputConfig,
    run_id: str,
    fingerprint: str | None,
    now: Callable[[], datetime],
    *,
    run_dir: str | None = None,
) -> tuple[Store, RunMeta, bool]:
    """The run directory this run writes (resumed or new): (its store, metadata, resumed).

    With `run_dir` (a `retry` of that directory) exactly that one is opened."""
    check_runs_root(top)
    resume = dataclasses.replace(config, existing_data_behavior="resume")
    if run_dir is not None:
        child = top.child(run_dir)
        meta, resumed = decide(child, resume, run_id, fingerprint, now)
        return child, meta, resumed
    layout = layout_of(config)
    chosen: str | None = None
    for name in run_dirs(top):
        child = top.child(name)
        if child.exists(SUCCESS_FILE):
            continue
        if chosen is None and _continues(child, layout, fingerprint):
            chosen = name
            continue
        log.warning(
            "discarding %s: an unfinished run of another input or layout (its deals come "
            "again, since the watermark never moved past that run)",
            display_uri(child.uri),
        )
        top.delete_dir(name)
    child = top.child(chosen or run_dir_name(run_id))
    meta, resumed = decide(child, resume, run_id, fingerprint, now)
    return child, meta, resumed


def _continues(child: Store, layout: Mapping[str, Any], fingerprint: str | None) -> bool:
    raw = child.read_json(RUN_FILE)
    if raw is None:
        return False
    meta = RunMeta.from_json(raw, f"{display_uri(child.uri)}/{RUN_FILE}")
    return all(same_input_and_layout(meta, layout, fingerprint))


def latest_completed(top: Store) -> str:
    """The run directory `retry` works on: the last completed one (by its end time)."""
    where = display_uri(top.uri)
    best: tuple[str, str] | None = None
    for name in run_dirs(top):
        child = top.child(name)
        manifest = child.read_json(MANIFEST_FILE)
        if not child.exists(SUCCESS_FILE) or manifest is None:
            raise OutputError(
                f"the run {name} in {where} did not complete; run the same export command "
                "again to resume it before retrying failed IDs"
            )
        key = (str(manifest.get("ended_at", "")), name)
        best = key if best is None or key > best else best
    if best is None:
        raise OutputError(f"{where} is not a finished deal-export output")
    return best[1]


__all__ = ["check_runs_root", "latest_completed", "open_run_dir", "run_dirs"]
