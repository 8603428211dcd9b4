"""`pipeline.output.delta_deletes` on real Delta tables: marks, removals, restores, one commit."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable, write_deltalake

from pipeline.errors import OutputError
from pipeline.output.delta_deletes import (
    OPERATION_KEY,
    apply_deletions,
    read_table_ids,
)

from .helpers import EXTRACTED, make_table, rows_by_id

NOW = datetime(2026, 12, 1, 3, 0, tzinfo=UTC)


def test_reads_live_and_marked_ids(tmp_path: Path) -> None:
    uri = make_table(tmp_path / "t", [1, 2, 3, 4], deleted=[2])
    ids = read_table_ids(uri)
    assert sorted(ids.live.to_pylist()) == [1, 3, 4]
    assert ids.deleted.to_pylist() == [2]


def test_soft_delete_marks_in_one_commit_with_metadata(tmp_path: Path) -> None:
    uri = make_table(tmp_path / "t", [1, 2, 3, 4, 5], deleted=[4])
    before = DeltaTable(uri).version()
    applied = apply_deletions(uri, deleted=[2, 3], hard=False, now=NOW, run_id="run-7")
    assert (applied.marked, applied.removed, applied.restored) == (2, 0, 0)
    table = DeltaTable(uri)
    assert table.version() == before + 1 == applied.version
    rows = rows_by_id(uri)
    assert rows == {1: None, 2: NOW, 3: NOW, 4: EXTRACTED, 5: None}
    commit = table.history(1)[0]
    assert commit[OPERATION_KEY] == "reconcile"
    assert (commit["run_id"], commit["deleted"]) == ("run-7", 2)


def test_a_row_already_marked_keeps_its_first_date(tmp_path: Path) -> None:
    uri = make_table(tmp_path / "t", [1, 2], deleted=[2])
    applied = apply_deletions(uri, deleted=[2], now=NOW, run_id="r")
    assert applied.marked == 0
    assert rows_by_id(uri)[2] == EXTRACTED


def test_hard_delete_removes_the_rows(tmp_path: Path) -> None:
    uri = make_table(tmp_path / "t", [1, 2, 3, 4])
    applied = apply_deletions(uri, deleted=[2, 4, 99], hard=True, now=NOW, run_id="r")
    assert (applied.marked, applied.removed) == (0, 2)
    assert rows_by_id(uri) == {1: None, 3: None}
    assert DeltaTable(uri).history(1)[0]["hard"] is True


def test_mark_then_restore_clears_the_mark(tmp_path: Path) -> None:
    # A deal deleted one night and back (same ID) the next: marked, then unmarked.
    uri = make_table(tmp_path / "t", [1, 2, 3])
    apply_deletions(uri, deleted=[2], now=NOW, run_id="night-1")
    assert rows_by_id(uri)[2] == NOW
    later = NOW + timedelta(days=1)
    applied = apply_deletions(uri, deleted=[3], restored=[2], now=later, run_id="night-2")
    assert (applied.marked, applied.restored) == (1, 1)
    assert rows_by_id(uri) == {1: None, 2: None, 3: later}


def test_restore_with_hard_delete_in_the_same_commit(tmp_path: Path) -> None:
    uri = make_table(tmp_path / "t", [1, 2, 3], deleted=[3])
    before = DeltaTable(uri).version()
    applied = apply_deletions(uri, deleted=[1], restored=[3], hard=True, now=NOW, run_id="r")
    assert (applied.removed, applied.restored) == (1, 1)
    assert rows_by_id(uri) == {2: None, 3: None}
    assert DeltaTable(uri).version() == before + 1


def test_nothing_to_change_makes_no_commit(tmp_path: Path) -> None:
    uri = make_table(tmp_path / "t", [1, 2])
    before = DeltaTable(uri).version()
    applied = apply_deletions(uri, deleted=[], now=NOW, run_id="r")
    assert applied.version is None
    assert DeltaTable(uri).version() == before


def test_the_mark_is_stored_in_utc(tmp_path: Path) -> None:
    uri = make_table(tmp_path / "t", [1])
    local = NOW.astimezone(timezone(timedelta(hours=3)))
    apply_deletions(uri, deleted=[1], now=local, run_id="r")
    assert rows_by_id(uri)[1] == NOW
    with pytest.raises(ValueError, match="time zone"):
        apply_deletions(uri, deleted=[1], now=NOW.replace(tzinfo=None), run_id="r")


def test_a_folder_export_is_refused_with_the_reason(tmp_path: Path) -> None:
    folder = tmp_path / "deals"
    (folder / "DATE_CREATE=2024-01").mkdir(parents=True)
    pq.write_table(pa.table({"ID": [1]}), folder / "DATE_CREATE=2024-01" / "part-0.parquet")
    with pytest.raises(OutputError, match="needs the Delta sink"):
        read_table_ids(str(folder))
    with pytest.raises(OutputError, match="not a Delta table"):
        apply_deletions(str(folder), deleted=[1], now=NOW, run_id="r")


def test_a_delta_table_without_the_mark_column_is_refused(tmp_path: Path) -> None:
    uri = str(tmp_path / "t")
    write_deltalake(uri, pa.table({"ID": pa.array([1], pa.int64())}))
    with pytest.raises(OutputError, match="no _deleted_at column"):
        read_table_ids(uri)
