"""Typed, versioned records: they read today's on-disk JSON and write exactly it back; a root
written in today's format (files laid down by hand here, not by the code under test) resumes,
finalizes and retries; a newer or damaged record is one clear error; a retry commit is shielded
from cancellation like an export chunk."""

from __future__ import annotations

import asyncio
import hashlib
import json
from pathlib import Path
from types import ModuleType
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.config import OutputConfig
from pipeline.errors import OutputError
from pipeline.output import OutputRoot, read_watermark, sidecar_table
from pipeline.output.records import Checkpoint, Manifest, RunMeta
from pipeline.output.state import RunState

LAYOUT = {
    "chunk_size": 10000,
    "compression": "zstd",
    "max_rows_per_group": 65536,
    "partition_by": None,
    "partition_transform": "none",
}


def _open(root: Path, run_id: str, **kw: Any) -> OutputRoot:
    config = OutputConfig(root=str(root), partition_by=None, **kw)
    return OutputRoot.open(config, run_id, input_fingerprint="fp-1", lock_settle_s=0)


def _parquet(root: Path, rel: str, table: pa.Table) -> dict[str, Any]:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
    raw = path.read_bytes()
    return {"path": rel, "rows": table.num_rows, "bytes": len(raw),
            "sha256": hashlib.sha256(raw).hexdigest()}  # fmt: skip


def _json(root: Path, rel: str, value: dict[str, Any]) -> None:
    (root / rel).parent.mkdir(parents=True, exist_ok=True)
    (root / rel).write_text(json.dumps(value, indent=2, sort_keys=True))


def _temp_files(root: Path) -> list[Path]:
    return list(root.glob("**/.*.tmp"))


def _todays_root(root: Path, synth: ModuleType, *, completed: bool) -> None:
    """One committed chunk (0) in the on-disk format of deal-export before the typed records:
    checkpoint, run metadata, manifest, and for a completed run `_SUCCESS` and a format-2 state."""
    data, errors = synth.chunk(0)
    file = _parquet(root, "part-000000-0.parquet", data) | {"partition": ""}
    err = _parquet(root, "_errors/chunk-000000.parquet", sidecar_table(errors))
    fetch = [r for r in errors if r["stage"] == "fetch"]
    retryable = [r for r in fetch if r["retryable"]]
    err |= {
        "by_stage": {"fetch": len(fetch)},
        "failed_by_class": {"permanent": len(fetch) - len(retryable), "transient": len(retryable)},
        "failed_by_reason": {
            "permanent": {"NOT_FOUND": len(fetch) - len(retryable)},
            "retryable": {"INTERNAL_SERVER_ERROR": len(retryable)},
        },
        "retryable": len(retryable),
    }
    _json(root, "_checkpoints/chunk-000000.json", {
        "errors": err, "files": [file], "format": 1, "key": "000000", "kind": "chunk",
        "rows": data.num_rows, "run_id": "run-1", "schema_fingerprint": "sha256:abc",
        "stats": {"requested": synth.ROWS_PER_CHUNK},
        "written_at": "2026-11-30T01:00:00+00:00",
    })  # fmt: skip
    sessions = [{"opened_at": "2026-11-30T01:00:00+00:00", "run_id": "run-1"}]
    _json(root, "_run.json", {
        "format": 1, "input_fingerprint": "fp-1", "layout": LAYOUT,
        "run_counts": {"requested": 2 * synth.ROWS_PER_CHUNK}, "run_id": "run-1",
        "sessions": sessions, "started_at": "2026-11-30T01:00:00+00:00",
    })  # fmt: skip
    _json(root, "_manifest.json", {
        "chunk_stats": {"requested": synth.ROWS_PER_CHUNK}, "chunks": 1, "completed": completed,
        "config": {}, "counts": {"exported": data.num_rows, "failed": len(fetch)},
        "dataset_glob": "**/part-*.parquet", "ended_at": "2026-11-30T01:01:00+00:00",
        "error_files": [], "files": [], "input_fingerprint": "fp-1",
        "layout": LAYOUT | {"partition_key": None}, "limits": {}, "root": str(root),
        "run_id": "run-1", "schema_drift": None, "schema_fingerprint": None,
        "schema_fingerprints": ["sha256:abc"], "sessions": sessions,
        "started_at": "2026-11-30T01:00:00+00:00",
    })  # fmt: skip
    if completed:
        (root / "_SUCCESS").write_bytes(b"")
        _json(root, "_state.json", {
            "at": "2026-11-30T01:01:00+00:00", "format": 2, "run_id": "run-1",
            "schema": None, "watermark": "2026-11-30T00:00:00+00:00",
        })  # fmt: skip


def test_records_write_back_exactly_the_json_they_read(tmp_path: Path, synth: ModuleType) -> None:
    with _open(tmp_path, "run-1") as out:
        out.write_chunk(0, *synth.chunk(0), {"requested": synth.ROWS_PER_CHUNK})
        out.finalize(counts={"requested": synth.ROWS_PER_CHUNK}, watermark="W")
    with OutputRoot.open_existing(str(tmp_path), "retry-1") as out:
        out.apply_retry(synth.deals(out.retryable_ids()), [])
        out.finalize()
    read = {p.name: json.loads(p.read_text()) for p in tmp_path.glob("**/*.json")}
    # The run state moved out of the dataset's files, to `_deal_export/state.json`.
    assert {"chunk-000000.json", "_run.json", "_manifest.json", "state.json"} <= set(read)
    retry = [n for n in read if n.startswith("chunk-r")]
    assert len(retry) == 1
    assert read[retry[0]]["retried_ids"]
    assert read[retry[0]]["sidecar_cleaned"] is True
    for name in ("chunk-000000.json", retry[0]):
        assert Checkpoint.from_json(read[name], name).to_json() == read[name]
    assert RunMeta.from_json(read["_run.json"], "run").to_json() == read["_run.json"]
    assert Manifest.from_json(read["_manifest.json"], "m").to_json() == read["_manifest.json"]
    assert RunState.from_json(read["state.json"]).to_json() == read["state.json"]


def test_an_unfinished_root_in_todays_format_resumes(tmp_path: Path, synth: ModuleType) -> None:
    _todays_root(tmp_path, synth, completed=False)
    with _open(tmp_path, "run-1", existing_data_behavior="error") as out:
        assert out.resumed
        assert out.committed_chunks() == {0}
        ckpt = out.checkpoint(0)
        assert ckpt is not None
        assert ckpt["stats"] == {"requested": synth.ROWS_PER_CHUNK}
        out.write_chunk(1, *synth.chunk(1))
        manifest = out.finalize(watermark="W2")
    ids = pq.read_table(tmp_path, columns=["ID"]).column("ID").to_pylist()
    expected = [i for c in (0, 1) for i in synth.chunk_ids(c) if i % synth.FAIL_EVERY]
    assert sorted(ids) == expected
    assert manifest["counts"]["requested"] == 2 * synth.ROWS_PER_CHUNK  # kept from _run.json
    assert manifest["counts"]["exported"] == len(expected)
    assert [s["run_id"] for s in manifest["sessions"]] == ["run-1", "run-1"]
    assert read_watermark(str(tmp_path)) == "W2"


def test_a_completed_root_in_todays_format_is_retried_and_keeps_its_watermark(
    tmp_path: Path, synth: ModuleType
) -> None:
    _todays_root(tmp_path, synth, completed=True)
    assert read_watermark(str(tmp_path)) == "2026-11-30T00:00:00+00:00"
    retryable = [i for i in synth.chunk_ids(0) if i % synth.FAIL_EVERY == 0 and i % 2]
    with OutputRoot.open_existing(str(tmp_path), "retry-1") as out:
        assert out.retryable_ids() == retryable
        out.apply_retry(synth.deals(retryable), [])
        manifest = out.finalize()
    assert manifest["counts"]["retryable_failed"] == 0
    assert manifest["counts"]["failed_by_reason"]["retryable"] == {}
    assert read_watermark(str(tmp_path)) == "2026-11-30T00:00:00+00:00"


def test_a_checkpoint_of_a_newer_format_is_refused(tmp_path: Path, synth: ModuleType) -> None:
    _todays_root(tmp_path, synth, completed=False)
    path = tmp_path / "_checkpoints" / "chunk-000000.json"
    path.write_text(json.dumps(json.loads(path.read_text()) | {"format": 99}))
    with pytest.raises(OutputError, match=r"format 99, newer than this deal-export reads \(1\)"):
        _open(tmp_path, "run-1")


def test_a_checkpoint_without_its_file_list_is_a_clear_error(
    tmp_path: Path, synth: ModuleType
) -> None:
    _todays_root(tmp_path, synth, completed=False)
    path = tmp_path / "_checkpoints" / "chunk-000000.json"
    raw = json.loads(path.read_text())
    del raw["files"]
    path.write_text(json.dumps(raw))
    with pytest.raises(OutputError, match="is damaged: field 'files' is missing") as caught:
        _open(tmp_path, "run-1")
    assert "\n" not in str(caught.value)


def test_a_manifest_without_the_newer_keys_reads_with_defaults() -> None:
    manifest = Manifest.from_json({"format": 1, "run_id": "r", "completed": True}, "m")
    assert manifest.completed
    assert manifest.run_id == "r"
    assert manifest.files == ()
    assert manifest.schema_drift is None
    assert manifest.counts == {}


async def test_a_cancelled_retry_commit_finishes_before_cancellation_propagates(
    tmp_path: Path, synth: ModuleType
) -> None:
    with _open(tmp_path, "run-1") as out:
        out.write_chunk(0, *synth.chunk(0))
        out.finalize()
    with OutputRoot.open_existing(str(tmp_path), "retry-1") as out:
        ids = out.retryable_ids()
        task = asyncio.create_task(out.aapply_retry(synth.deals(ids), []))
        await asyncio.sleep(0)  # let the worker thread start
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert out.retryable_ids() == []  # the commit and its sidecar cleanup completed
        assert not _temp_files(tmp_path)
