"""Run state after the data: `_state.json` is the last write, carries the schema, and is only
believed when its run completed; failure reasons and the schema fingerprint survive sessions."""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType
from typing import Any

from pipeline.config import OutputConfig
from pipeline.output import OutputRoot, read_watermark, snapshot_fingerprint

SCHEMA_V1 = {
    "format": 1,
    "columns": [
        {"name": "ID", "bitrix_type": "integer", "is_multiple": False, "arrow_type": "int64",
         "title": "ID"},
        {"name": "TITLE", "bitrix_type": "string", "is_multiple": False, "arrow_type": "string",
         "title": "Название"},
    ],
    "extra_column": "_extra",
}  # fmt: skip


def _open(root: Path, run_id: str, **kw: Any) -> OutputRoot:
    return OutputRoot.open(
        OutputConfig(root=str(root), **kw), run_id, input_fingerprint="fp", lock_settle_s=0
    )


def test_a_run_without_a_watermark_keeps_the_previous_one_and_records_its_schema(
    tmp_path: Path, synth: ModuleType
) -> None:
    with _open(tmp_path, "run-1") as out:
        out.write_schema(SCHEMA_V1)
        out.write_chunk(0, *synth.chunk(0))
        out.finalize(watermark="2026-11-30T00:00:00+00:00")
    with _open(tmp_path, "run-2", existing_data_behavior="overwrite") as out:
        assert out.previous_schema() == SCHEMA_V1
        out.write_schema({**SCHEMA_V1, "columns": SCHEMA_V1["columns"][:1]})
        out.write_chunk(0, *synth.chunk(0))
        out.finalize()
    state = json.loads((tmp_path / "_deal_export" / "state.json").read_text())
    assert state["run_id"] == "run-2"
    assert state["watermark"] == "2026-11-30T00:00:00+00:00"
    assert state["schema"]["columns"] == SCHEMA_V1["columns"][:1]
    assert read_watermark(str(tmp_path)) == "2026-11-30T00:00:00+00:00"


def test_an_unfinished_run_writes_no_state(tmp_path: Path, synth: ModuleType) -> None:
    with _open(tmp_path, "run-1") as out:
        out.write_chunk(0, *synth.chunk(0))
        out.finalize(watermark="w1", completed=False)
    assert not (tmp_path / "_deal_export" / "state.json").exists()
    assert read_watermark(str(tmp_path)) is None


def test_schema_fingerprint_names_the_schema_not_the_titles_or_the_session(
    tmp_path: Path, synth: ModuleType
) -> None:
    renamed = {
        **SCHEMA_V1,
        "columns": [{**c, "title": "другое"} for c in SCHEMA_V1["columns"]],
    }
    assert snapshot_fingerprint(renamed) == snapshot_fingerprint(SCHEMA_V1)
    retyped = {
        **SCHEMA_V1,
        "columns": [SCHEMA_V1["columns"][0], {**SCHEMA_V1["columns"][1], "is_multiple": True}],
    }
    assert snapshot_fingerprint(retyped) != snapshot_fingerprint(SCHEMA_V1)
    with _open(tmp_path, "run-1") as out:
        out.write_schema(SCHEMA_V1)
        out.write_chunk(0, *synth.chunk(0))
        first = out.finalize()
    with _open(tmp_path, "run-1b", existing_data_behavior="resume") as out:
        out.write_chunk(1, *synth.chunk(1))
        second = out.finalize()
    assert first["schema_fingerprint"] == snapshot_fingerprint(SCHEMA_V1)
    assert second["schema_fingerprint"] == first["schema_fingerprint"]


def test_failure_reasons_are_exact_whichever_session_wrote_the_chunk(
    tmp_path: Path, synth: ModuleType
) -> None:
    with _open(tmp_path, "run-1") as out:
        out.write_chunk(0, *synth.chunk(0))
        out.finalize(completed=False)
    # An older checkpoint without reasons is read back from its sidecar file.
    ckpt_path = tmp_path / "_checkpoints" / "chunk-000000.json"
    ckpt = json.loads(ckpt_path.read_text())
    del ckpt["errors"]["failed_by_reason"]
    ckpt_path.write_text(json.dumps(ckpt))
    with _open(tmp_path, "run-1", existing_data_behavior="resume") as out:
        out.write_chunk(1, *synth.chunk(1))
        manifest = out.finalize()
    failed = [i for c in (0, 1) for i in synth.chunk_ids(c) if i % synth.FAIL_EVERY == 0]
    reasons = manifest["counts"]["failed_by_reason"]
    assert reasons == {
        "permanent": {"NOT_FOUND": sum(1 for i in failed if i % 2 == 0)},
        "retryable": {"INTERNAL_SERVER_ERROR": sum(1 for i in failed if i % 2)},
    }
