"""A session checkpoints its data and errors tables itself (`table.CHECKPOINT_EVERY`): the log
gains checkpoints, never a version, and what the versions hold stays the same."""

from __future__ import annotations

from pathlib import Path

from deltalake import DeltaTable

from pipeline.config import OutputConfig
from pipeline.output.delta import DeltaSink
from pipeline.output.delta.commits import ours
from pipeline.output.delta.errors_table import read_errors
from pipeline.output.delta.location import ERRORS_DIR, locate
from pipeline.output.delta.table import CHECKPOINT_EVERY
from tests.output import synth


def _checkpoints(root: Path) -> list[int]:
    return sorted(
        int(p.name.split(".")[0]) for p in (root / "_delta_log").glob("*.checkpoint.parquet")
    )


def test_a_long_session_checkpoints_both_tables_and_commits_nothing_more(tmp_path: Path) -> None:
    root = tmp_path / "deals"
    config = OutputConfig(
        root=str(root),
        table_format="delta",
        partition_by="DATE_CREATE",
        partition_transform="month",
        chunk_size=synth.ROWS_PER_CHUNK,
    )
    chunks = 2 * CHECKPOINT_EVERY + 3
    data_ids: list[int] = []
    failed_ids: list[int] = []
    with DeltaSink.open(config, "run-1", input_fingerprint="fp") as sink:
        for index in range(chunks):
            data, failed = synth.chunk(index)
            sink.write_chunk(index, data, failed)
            data_ids += data.column("ID").to_pylist()
            failed_ids += [row["id"] for row in failed]
        sink.finalize(counts={})

    assert _checkpoints(root) == [CHECKPOINT_EVERY, 2 * CHECKPOINT_EVERY]
    assert _checkpoints(root / ERRORS_DIR) == [CHECKPOINT_EVERY, 2 * CHECKPOINT_EVERY]
    current = DeltaTable(str(root))
    assert current.version() == chunks  # one commit per chunk, and the finalize
    assert sorted(h["version"] for h in current.history()) == list(range(chunks + 1))
    assert [c.kind for c in ours(current.history())] == ["finalize"] + ["chunk"] * chunks
    assert sorted(current.to_pyarrow_table(columns=["ID"]).column("ID").to_pylist()) == data_ids
    errors = read_errors(locate(str(root / ERRORS_DIR)))
    assert sorted(errors.column("id").to_pylist()) == failed_ids
