"""Crash recovery and the existing-data policy: what an opening run does with what a root holds.

The invariant that makes runs exactly-once and resumable:

    the data files of the dataset are exactly the files listed by the checkpoints
    `_checkpoints/chunk-<key>.json`, and so are the sidecar files under `_errors/`.

Anything else that looks like ours (a `part-*.parquet` no checkpoint lists, a sidecar no
checkpoint lists, a hidden temp file, anything under `_staging/`) is debris of a crash and is
deleted on the next open, before any new write.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from pipeline.config import OutputConfig
from pipeline.errors import OutputError
from pipeline.output.chunks import Chunks
from pipeline.output.layout import (
    CHECKPOINT_DIR,
    CHECKPOINT_RE,
    ERRORS_DIR,
    LEGACY_INPUT_FILE,
    LEGACY_STATE_FILE,
    MANIFEST_FILE,
    RUN_FILE,
    SCHEMA_FILE,
    STAGING_DIR,
    SUCCESS_FILE,
    checkpoint_path,
    holds_run_dirs,
    is_data_path,
    is_ours,
    is_sidecar_path,
    staged_path,
)
from pipeline.output.lock import LOCK_NAME
from pipeline.output.partition import PartitionSpec
from pipeline.output.records import Checkpoint, Manifest, RunMeta
from pipeline.output.store import Store, display_uri, is_temp_name

if TYPE_CHECKING:
    import pyarrow.fs as pafs

#: What a resume must share with the run it continues. chunk_size decides which IDs a chunk
#: index stands for: resuming with another size would skip or double IDs.
_CHECKED_LAYOUT = ("partition_by", "partition_transform", "chunk_size")


def layout_of(config: OutputConfig) -> dict[str, Any]:
    return {
        **PartitionSpec.from_config(config).as_dict(),
        "chunk_size": config.chunk_size,
        "compression": config.compression,
        "max_rows_per_group": config.max_rows_per_group,
    }


def same_input_and_layout(
    meta: RunMeta, layout: Mapping[str, Any], fingerprint: str | None
) -> tuple[bool, bool]:
    """Whether a run of `fingerprint` with `layout` may continue the one `meta` describes."""
    theirs = meta.input_fingerprint
    same_input = fingerprint is None or theirs is None or fingerprint == theirs
    return same_input, all(meta.layout.get(k) == layout[k] for k in _CHECKED_LAYOUT)


def is_finished(store: Store) -> bool:
    """The root holds run metadata and a manifest of a completed run."""
    manifest = store.read_json(MANIFEST_FILE)
    return store.read_json(RUN_FILE) is not None and bool(manifest and manifest.get("completed"))


def holds_retryable_failures(
    config: OutputConfig, input_fingerprint: str | None, filesystem: pafs.FileSystem | None = None
) -> bool:
    """True when `config.root` holds a completed export of this very input and layout whose
    sidecar lists failures a retry may fix: running the same command again then retries
    exactly those, as `deal-export retry` does (no lock needed; retry takes it)."""
    store = Store.from_root(config.root, filesystem)
    if (store.local and not os.path.isdir(store.base)) or not store.exists(SUCCESS_FILE):
        return False
    raw_meta = store.read_json(RUN_FILE)
    raw_manifest = store.read_json(MANIFEST_FILE)
    if raw_meta is None or raw_manifest is None or not raw_manifest.get("completed"):
        return False
    where = display_uri(store.uri)
    meta = RunMeta.from_json(raw_meta, f"{where}/{RUN_FILE}")
    manifest = Manifest.from_json(raw_manifest, f"{where}/{MANIFEST_FILE}")
    same_input, same_layout = same_input_and_layout(meta, layout_of(config), input_fingerprint)
    retryable = manifest.counts.get("retryable_failed", 0)
    return same_input and same_layout and isinstance(retryable, int) and retryable > 0


def finished_config(store: Store, root: str) -> tuple[OutputConfig, str | None]:
    """The layout and input fingerprint a finished output was written with (for `retry`)."""
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
    return config, meta.input_fingerprint


def decide(
    store: Store,
    config: OutputConfig,
    run_id: str,
    fingerprint: str | None,
    now: Callable[[], datetime],
) -> tuple[RunMeta, bool]:
    """Apply `existing_data_behavior` to what the root holds; returns (run metadata, resumed).

    * empty or missing root: a fresh output.
    * an unfinished output (checkpoints, no `_SUCCESS`) of the same input (equal
      `input_fingerprint`, or either is None) and the same partition layout: resumed, whatever
      `existing_data_behavior` says; `committed_chunks()` lists what to skip.
    * an unfinished output of a different input or layout: OutputError, unless "overwrite".
    * a completed output (`_SUCCESS`): "error" refuses, "overwrite" deletes our files and
      starts fresh, "resume" continues it (same input and layout only).
    * a root holding files deal-export did not write: always refused.
    (A root locked by a live run never gets here: the lock refuses it first.)
    """
    layout = layout_of(config)
    where = display_uri(store.uri)
    behavior = config.existing_data_behavior
    entries = [e.path for e in store.list_files() if e.path != LOCK_NAME]
    if holds_run_dirs(entries):
        raise OutputError(
            f"output root {where} holds one directory per run (written with "
            "existing_data_behavior 'new_run'); keep using 'new_run' there, or choose a new root"
        )
    foreign = [p for p in entries if not is_ours(p)]
    if foreign:
        raise OutputError(
            f"output root {where} holds files deal-export did not write (e.g. {foreign[0]}); "
            "choose an empty directory or a new root"
        )
    raw = store.read_json(RUN_FILE)
    fresh = RunMeta(run_id, now().isoformat(), fingerprint, layout)
    if raw is None:
        if entries:  # debris of an interrupted overwrite: nothing vouches for it
            wipe(store)
        return fresh, False
    meta = RunMeta.from_json(raw, f"{where}/{RUN_FILE}")

    completed = store.exists(SUCCESS_FILE)
    same_input, same_layout = same_input_and_layout(meta, layout, fingerprint)
    what = "a completed export" if completed else "an unfinished export"
    if completed and behavior == "error":
        raise OutputError(
            f"output root {where} already holds {what} (run {raw.get('run_id')}). "
            "Set existing_data_behavior to 'overwrite' to replace it, 'resume' to continue it "
            "with the same input, or choose a new output root."
        )
    if completed and behavior == "overwrite":
        wipe(store)
        return fresh, False
    if not (same_input and same_layout):
        if behavior == "overwrite":
            wipe(store)
            return fresh, False
        differs = "input" if not same_input else "layout (partitioning or chunk_size)"
        raise OutputError(
            f"output root {where} holds {what} of a different {differs} "
            f"(run {raw.get('run_id')}). Run again with the original input and settings to "
            "resume it, set existing_data_behavior to 'overwrite' to discard it, or choose a "
            "new output root."
        )
    return dataclasses.replace(meta, layout=layout), True


def wipe(store: Store) -> None:
    """Delete our files only; commit markers first, run metadata last (a crash stays safe)."""
    for name in (SUCCESS_FILE, MANIFEST_FILE):
        store.delete(name)
    store.delete_dir(CHECKPOINT_DIR)
    store.delete_dir(STAGING_DIR)
    for entry in store.list_files():
        if is_data_path(entry.path) or is_temp_name(entry.path.rsplit("/", 1)[-1]):
            store.delete(entry.path)
    store.delete_dir(ERRORS_DIR)
    # The run state lives in `_deal_export/`, which is not ours to wipe; the legacy state files
    # were migrated there when the root was opened (`FolderState.migrate`).
    for name in (SCHEMA_FILE, LEGACY_INPUT_FILE, LEGACY_STATE_FILE, RUN_FILE):
        store.delete(name)
    store.remove_empty_dirs()


def recover(chunks: Chunks) -> list[str]:
    """Load the checkpoints into `chunks` and delete everything of ours that none vouches for.

    Returns the keys of retry chunks whose sidecar cleanup a crash cut short, in order: the
    caller rolls them forward (and then removes empty directories).
    """
    store = chunks.store
    entries = store.list_files()
    sizes = {e.path: e.size for e in entries}
    for e in entries:
        if is_temp_name(e.path.rsplit("/", 1)[-1]):
            store.delete(e.path)
    checkpoints = _load_checkpoints(store, [e.path for e in entries])
    staged = {p: n for p, n in sizes.items() if p.startswith(STAGING_DIR + "/")}
    if staged:
        for ckpt in checkpoints:
            _roll_forward(store, ckpt, staged, sizes)
        # What is left is a chunk that never reached its commit.
        store.delete_dir(STAGING_DIR)
    damaged = [c for c in checkpoints if not _adopt(chunks, c, sizes)]
    if damaged:
        _drop_damaged(chunks, damaged)
    vouched = chunks.vouched_paths()
    for e in entries:
        if e.path not in vouched and (is_data_path(e.path) or is_sidecar_path(e.path)):
            store.delete(e.path)
    return [c.key for c in chunks if c.is_retry and not c.sidecar_cleaned]


def _roll_forward(
    store: Store, ckpt: Checkpoint, staged: dict[str, int], sizes: dict[str, int]
) -> None:
    """Finish the moves of a committed chunk that a crash cut short (see `chunks`)."""
    wanted = [(f.path, f.bytes) for f in ckpt.files]
    if ckpt.errors is not None:
        wanted.append((ckpt.errors.path, ckpt.errors.bytes))
    for final, size in wanted:
        source = staged_path(ckpt.key, final.rsplit("/", 1)[-1])
        if staged.get(source) == size:  # still staged: the move never happened
            store.move(source, final)
            sizes[final] = size


def _load_checkpoints(store: Store, paths: list[str]) -> list[Checkpoint]:
    found: list[Checkpoint] = []
    for path in paths:
        match = CHECKPOINT_RE.match(path.rsplit("/", 1)[-1])
        if not path.startswith(CHECKPOINT_DIR + "/") or not match:
            continue
        raw = store.read_json(path)
        if raw is None or raw.get("key") != match["key"]:
            store.delete(path)
            continue
        found.append(Checkpoint.from_json(raw, f"checkpoint {path} in {display_uri(store.uri)}"))
    return found


def _adopt(chunks: Chunks, ckpt: Checkpoint, sizes: dict[str, int]) -> bool:
    intact = all(sizes.get(f.path) == f.bytes for f in ckpt.files) and (
        ckpt.errors is None or ckpt.errors.path in sizes
    )
    if intact:
        chunks.adopt(ckpt)
    return intact


def _drop_damaged(chunks: Chunks, damaged: list[Checkpoint]) -> None:
    # Our own writes never leave a checkpoint without its files; only outside damage does.
    # Redoing a damaged chunk is safe unless a retry has since moved some of its IDs into a
    # retry chunk: then redoing it would write those deals twice.
    if any(c.is_retry for c in chunks) or any(c.is_retry for c in damaged):
        raise OutputError(
            f"output {display_uri(chunks.store.uri)} is damaged: files of chunk "
            f"{damaged[0].key} are missing or changed and retries have run since; "
            "restore the files or overwrite the output"
        )
    for ckpt in damaged:
        chunks.store.delete(checkpoint_path(ckpt.key))
