"""The errors table and the data table stay open for a sink's session: one `Failures` object
serves every commit, knows which IDs the table holds without scanning it, and still sees a
commit another writer made in between."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pytest
from deltalake import DeltaTable

from pipeline.output.delta.errors_table import Failures, read_errors, replace_failures
from pipeline.output.delta.location import locate
from pipeline.output.sidecar import SIDECAR_SCHEMA


def _failure(deal_id: int | None, attempts: int, stage: str = "fetch") -> dict[str, object]:
    row: dict[str, object] = {name: None for name in SIDECAR_SCHEMA.names}
    row.update(
        id=deal_id,
        line=None if deal_id is not None else 7,
        stage=stage,
        message="Not found",
        retryable=False,
        attempts=attempts,
        first_seen=datetime(2026, 1, 1, tzinfo=UTC),
    )
    return row


def _failures(*rows: dict[str, object]) -> pa.Table:
    return pa.Table.from_pylist(list(rows), schema=SIDECAR_SCHEMA)


def _by_id(where_root: Path) -> dict[int | None, int]:
    found = read_errors(locate(str(where_root)))
    ids, attempts = found.column("id").to_pylist(), found.column("attempts").to_pylist()
    return dict(zip(ids, attempts, strict=True))


def test_one_object_appends_new_ids_and_still_replaces_the_ones_it_holds(tmp_path: Path) -> None:
    root = tmp_path / "_errors"
    failures = Failures(locate(str(root)))
    for chunk in range(5):
        first = chunk * 10
        failures.replace(range(first, first + 10), _failures(_failure(first + 3, 1)))
    assert _by_id(root) == {3: 1, 13: 1, 23: 1, 33: 1, 43: 1}
    # A later commit that covers held IDs: 13 arrives (its row leaves), 23 fails again.
    failures.replace({13, 23}, _failures(_failure(23, 1)))
    assert _by_id(root) == {3: 1, 23: 2, 33: 1, 43: 1}
    # Then a chunk of new IDs again, after the rewrite.
    failures.replace(range(50, 60), _failures(_failure(55, 1)))
    failures.replace({55}, _failures(_failure(55, 4)))
    assert _by_id(root) == {3: 1, 23: 2, 33: 1, 43: 1, 55: 5}


def test_a_commit_by_another_writer_is_seen_before_the_next_replace(tmp_path: Path) -> None:
    root = tmp_path / "_errors"
    where = locate(str(root))
    failures = Failures(where)
    failures.replace(range(10), _failures(_failure(3, 1)))
    # Another writer (the module function opens its own table object) adds a failure of 42.
    replace_failures(where, {42}, _failures(_failure(42, 1)))
    failures.replace({42}, _failures(_failure(42, 1)))
    assert _by_id(root) == {3: 1, 42: 2}
    assert DeltaTable(str(root)).version() == 2


def test_input_rows_are_replaced_by_the_next_input_rows(tmp_path: Path) -> None:
    root = tmp_path / "_errors"
    failures = Failures(locate(str(root)))
    failures.replace(range(10), _failures(_failure(3, 1), _failure(None, 1, stage="input")))
    failures.replace(range(10, 20), _failures(_failure(None, 1, stage="input")))
    found = read_errors(locate(str(root)))
    stages, lines = found.column("stage").to_pylist(), found.column("line").to_pylist()
    assert sorted(zip(stages, lines, strict=True)) == [("fetch", None), ("input", 7)]


def test_the_table_a_commit_created_is_indexed_from_its_rows_not_read_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "_errors"
    failures = Failures(locate(str(root)))
    reads: list[int] = []
    real_reindex = Failures._reindex

    def reindex(self: Failures, table: DeltaTable) -> None:
        reads.append(table.version())
        real_reindex(self, table)

    monkeypatch.setattr(Failures, "_reindex", reindex)
    failures.replace(range(10), _failures(_failure(3, 1), _failure(None, 1, stage="input")))
    failures.replace(range(10, 20), _failures(_failure(13, 1)))
    assert reads == [], "a backfill's first commits read nothing back"
    # What the index says is right: 3 is held, so it is replaced, and so are the input rows.
    failures.replace({3}, _failures(_failure(3, 1), _failure(None, 1, stage="input")))
    assert _by_id(root) == {3: 2, 13: 1, None: 1}
    assert read_errors(locate(str(root))).num_rows == 3, "one row per failure"
    # A version this object did not make (3, by another writer) is still read.
    replace_failures(locate(str(root)), {42}, _failures(_failure(42, 1)))
    failures.replace({42}, _failures(_failure(42, 1)))
    assert 3 in reads
    assert _by_id(root) == {3: 2, 13: 1, None: 1, 42: 2}
