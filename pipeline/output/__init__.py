"""Durable output: Hive-partitioned Parquet, an error sidecar, a manifest, exactly-once resume.

Layout of an output root (local path, `s3://bucket/prefix` or `gs://bucket/prefix`):

    DATE_CREATE_month=2024-08/part-000003-0.parquet     data: chunk 3, its 1st partition file
    DATE_CREATE_month=__HIVE_DEFAULT_PARTITION__/...    rows whose partition value is null
    part-r<runid>-000000-0.parquet                      (unpartitioned layout, or a retry chunk)
    _errors/chunk-000003.parquet                        sidecar rows of chunk 3 (fixed schema)
    _staging/000004/part-000004-0.parquet.staged        a chunk being written: moved into place
                                                        right after its checkpoint
    _checkpoints/chunk-000003.json                      commit record of chunk 3
    _run.json  _schema.json                             run metadata, schema snapshot
    _manifest.json  _SUCCESS                            written by a completed run, then:
    _deal_export/state.json                             its watermark and field list (last;
                                                        kept by overwrite until the next
                                                        run completes)
    _deal_export/input.parquet                          the IDs an incremental run discovered
    _lock                                               held while a run writes

With `existing_data_behavior = "new_run"` each run's files (all but `_deal_export/` and `_lock`)
sit in a `run_id=<id>/` directory of their own (`pipeline.output.runs`).

Every row carries `_run_id` and `_extracted_at` (`pipeline.output.lineage`).

Anything whose name starts with `_` or `.` is metadata or a temp file, never data: pyarrow's
dataset discovery skips it by default. DuckDB and Polars should read the glob
`<root>/**/part-*.parquet` (`DATASET_GLOB`) with hive partitioning on; it excludes `_errors/`.

Contract with the run (`pipeline.run`):

    with OutputRoot.open(config.output, run_id, input_fingerprint=fp) as out:
        skip = out.committed_chunks()              # resume: these chunks are already committed
        for index, ids in enumerate(chunks):       # deterministic chunking of the unique IDs
            if index in skip: continue
            out.write_chunk(index, table, error_rows, stats)   # staged, checkpoint, moved
        out.write_schema(schema_dict)
        out.finalize(counts=..., config=run_config, limits=..., watermark=...)

`write_chunk` is all-or-nothing per chunk: kill the process at any point and the next `open`
deletes whatever an uncommitted chunk left (or finishes moving a committed one into place), so
re-writing it cannot double a row, and no reader ever sees a file no checkpoint lists. File names
derive from the chunk index, so a re-run overwrites instead of duplicating; rewriting a chunk
that is already committed needs `replace=True`. From async code use `awrite_chunk` and
`aapply_retry` (same arguments; both run in a thread through `sink.in_thread`, and a cancel
waits for the commit to end). `chunk_size`, the
partitioning and the input fingerprint (`fingerprint_ids`) must match for a resume. `retry`:
`OutputRoot.open_existing(root, run_id)`, `retryable_ids()`, `apply_retry(data, errors)`,
`finalize()`. Run state: `read_state(root)`, `set_watermark(root, value, by=...)` (locked,
atomic). Failures to write (disk full, permissions, store unreachable) raise OutputError.

`OutputRoot` (alias `FolderSink`) is the one implementation of the `Sink` protocol
(`pipeline.output.sink`); run state sits behind `StateStore` (`pipeline.output.state`). Module
map: `opening` (lock, policy, recovery, session), `recovery` (existing-data policy, crash
debris), `chunks` (the one chunk-commit path and accounting), `encode` (Parquet bytes),
`records` (typed, versioned checkpoint, run metadata and manifest), `finalize` (manifest and
`_SUCCESS`), `retry_merge`, `state` (`_deal_export/`), `runs` (`new_run`), `lineage`,
`layout` (file names), `store` (the filesystem seam), `lock`, `partition`, `sidecar`,
`manifest` (fingerprints, masking).

What differs on object stores: no rename (each object is uploaded whole from memory, which is
atomic per object, and a staged object reaches its final key by a server-side copy), no fsync
(the store's durability applies), no empty directories, and the lock
is best effort (see `pipeline.output.lock`).
"""

from __future__ import annotations

from pipeline.output.manifest import (
    fingerprint_ids,
    mask_config,
    schema_fingerprint,
    snapshot_fingerprint,
)
from pipeline.output.partition import NULL_PARTITION, PartitionSpec
from pipeline.output.root import (
    DATASET_GLOB,
    FolderSink,
    OutputRoot,
    dataset_glob,
    holds_retryable_failures,
    read_pending_input,
    read_state,
    read_watermark,
    set_watermark,
)
from pipeline.output.sidecar import (
    SIDECAR_SCHEMA,
    failed_row,
    failed_table,
    invalid_input_row,
    record_error_row,
    sidecar_table,
    with_rows,
)
from pipeline.output.sink import Sink
from pipeline.output.state import StateStore
from pipeline.output.store import Store

__all__ = [
    "DATASET_GLOB",
    "NULL_PARTITION",
    "SIDECAR_SCHEMA",
    "FolderSink",
    "OutputRoot",
    "PartitionSpec",
    "Sink",
    "StateStore",
    "Store",
    "dataset_glob",
    "failed_row",
    "failed_table",
    "fingerprint_ids",
    "holds_retryable_failures",
    "invalid_input_row",
    "mask_config",
    "read_pending_input",
    "read_state",
    "read_watermark",
    "record_error_row",
    "schema_fingerprint",
    "set_watermark",
    "sidecar_table",
    "snapshot_fingerprint",
    "with_rows",
]
