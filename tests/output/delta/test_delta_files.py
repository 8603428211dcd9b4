"""Delta data files written by pyarrow and committed as add actions read back exactly as
deltalake's own writer would lay them out: partition values of any text, nulls, stats."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from deltalake import DeltaTable, write_deltalake

from pipeline.output.delta import table
from pipeline.output.delta.errors_table import read_errors, replace_failures
from pipeline.output.delta.location import DeltaLocation, locate
from pipeline.output.sidecar import SIDECAR_SCHEMA

KEY = "STAGE_ID_part"


def _rows(ids: list[int], stages: list[str | None]) -> pa.Table:
    return pa.table(
        {
            "ID": pa.array(ids, pa.int64()),
            "TITLE": pa.array([f"deal {i}" for i in ids]),
            KEY: pa.array(stages, pa.string()),
        }
    )


def _create_then_append(where: DeltaLocation, first: pa.Table, second: pa.Table) -> None:
    """A table made as the sink makes it: `first` creates it, `second` is appended."""
    writer = table.Writer("zstd", 1000)
    table.create(where, first, [KEY], {"kind": "chunk"}, writer)
    current = table.open_table(where)
    assert current is not None
    table.append(current, second, {"kind": "chunk"}, new_columns=True, writer=writer)


def _sorted(data: pa.Table) -> pa.Table:
    return data.select(["ID", "TITLE", KEY]).sort_by("ID")


def test_pyarrow_files_read_back_like_deltalakes_own_writes(tmp_path: Path) -> None:
    stages = ["C1:NEW", "x y/z", None, "100%", "WON"]
    first, second = _rows([1, 2, 3, 4, 5], stages), _rows([6, 7], ["WON", None])
    ours = locate(str(tmp_path / "ours"))
    _create_then_append(ours, first, second)

    theirs = str(tmp_path / "theirs")
    write_deltalake(theirs, first, partition_by=[KEY])
    write_deltalake(theirs, second, partition_by=[KEY], mode="append")

    mine, reference = DeltaTable(ours.uri), DeltaTable(theirs)
    assert _sorted(mine.to_pyarrow_table()) == _sorted(reference.to_pyarrow_table())
    assert mine.count() == 7
    assert sorted(p.name for p in Path(ours.uri).iterdir() if p.is_dir()) == sorted(
        p.name for p in Path(theirs).iterdir() if p.is_dir()
    )
    # A filter on the partition column prunes by the log's partition values.
    assert mine.to_pyarrow_table(filters=[(KEY, "=", "C1:NEW")]).column("ID").to_pylist() == [1]
    # Row counts and the ID range of every file are in the log, as deltalake writes them.
    actions = pa.table(mine.get_add_actions(flatten=True))
    assert sum(actions.column("num_records").to_pylist()) == 7
    lows, highs = actions.column("min.ID").to_pylist(), actions.column("max.ID").to_pylist()
    assert sorted(zip(lows, highs, strict=True)) == [(i, i) for i in range(1, 8)]


def _failure(deal_id: int, attempts: int) -> dict[str, object]:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    row: dict[str, object] = {name: None for name in SIDECAR_SCHEMA.names}
    row.update(
        id=deal_id,
        stage="fetch",
        message="Not found",
        retryable=False,
        attempts=attempts,
        first_seen=now,
    )
    return row


def _failures(*rows: dict[str, object]) -> pa.Table:
    return pa.Table.from_pylist(list(rows), schema=SIDECAR_SCHEMA)


def test_errors_table_appends_new_ids_and_replaces_the_covered_ones(tmp_path: Path) -> None:
    where = locate(str(tmp_path / "_errors"))
    replace_failures(where, {1, 2, 3}, _failures(_failure(1, 1), _failure(2, 1)))
    replace_failures(where, {4, 5}, _failures(_failure(5, 1)))
    assert sorted(read_errors(where).column("id").to_pylist()) == [1, 2, 5]
    # IDs 1 and 2 again: 1 now arrives (its row leaves), 2 fails again (attempts add up).
    replace_failures(where, {1, 2}, _failures(_failure(2, 1)))
    after = read_errors(where).sort_by("id")
    assert after.column("id").to_pylist() == [2, 5]
    assert after.column("attempts").to_pylist() == [2, 1]


def test_a_many_chunk_table_is_grouped_per_value_in_input_order(tmp_path: Path) -> None:
    # Parts of a chunk arrive as a table of many chunks, values interleaved: each file holds
    # exactly its value's rows in input order, null included, one file per value.
    values = ["B", None, "A", "B", "A", None, "C", "B"]
    parts = [_rows([i], [v]) for i, v in enumerate(values, start=1)]
    rows = pa.concat_tables(parts)
    assert rows.column(KEY).num_chunks == len(values)
    where = locate(str(tmp_path / "t"))
    table.create(where, rows, [KEY], {"kind": "chunk"}, table.Writer("zstd", 1000))
    current = DeltaTable(where.uri)
    actions = pa.table(current.get_add_actions(flatten=True)).to_pylist()
    by_value = {a[f"partition.{KEY}"]: a for a in actions}
    assert sorted(by_value, key=str) == sorted({"A", "B", "C", None}, key=str)
    for value in ("A", "B", "C", None):
        expected = [i for i, v in enumerate(values, start=1) if v == value]
        assert by_value[value]["num_records"] == len(expected)
        kept = pq.read_table(Path(where.uri) / by_value[value]["path"])
        assert kept.column("ID").to_pylist() == expected
        assert kept.column("TITLE").to_pylist() == [f"deal {i}" for i in expected]


def test_a_filter_on_a_column_without_file_stats_finds_its_rows(tmp_path: Path) -> None:
    """The stats cover ID only and the table says so; without the property deltalake's dataset
    read 0 rows for a filter on TITLE, and so did DuckDB over that dataset."""
    import duckdb
    import polars as pl

    amounts = pa.array([1.5, 2.5, None], pa.float64())
    rows = _rows([1, 2, 3], ["WON", "WON", None]).append_column("AMOUNT", amounts)
    more = _rows([4], ["LOSE"]).append_column("AMOUNT", pa.array([9.0], pa.float64()))
    where = locate(str(tmp_path / "deals"))
    _create_then_append(where, rows, more)
    deals = DeltaTable(where.uri)
    assert deals.metadata().configuration == {"delta.dataSkippingStatsColumns": "ID"}
    assert deals.to_pyarrow_table(filters=[("TITLE", "=", "deal 2")]).num_rows == 1
    assert deals.to_pyarrow_table(filters=[("AMOUNT", ">", 2.0)]).num_rows == 2
    relation = duckdb.from_arrow(deals.to_pyarrow_dataset())
    assert relation.filter("TITLE = 'deal 4'").select("ID").fetchall() == [(4,)]
    assert pl.scan_delta(where.uri).filter(pl.col("TITLE") == "deal 1").collect().height == 1
    # The ID range still prunes: the log holds it for every file.
    assert deals.to_pyarrow_table(filters=[("ID", ">", 3)]).column("ID").to_pylist() == [4]
