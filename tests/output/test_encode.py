"""Data-file encoding: which columns keep statistics, and that values round-trip."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.output.encode import Encoding, statistics_columns
from pipeline.output.lineage import with_lineage


def _table() -> pa.Table:
    table = pa.table(
        {
            "ID": pa.array([3, 1, 2], pa.int64()),
            "TITLE": pa.array(["b", None, "a"], pa.string()),
            "OPENED": pa.array([True, None, False], pa.bool_()),
            "OPPORTUNITY": pa.array([Decimal("1.5"), None, Decimal("2")], pa.decimal128(24, 6)),
            "DATE_CREATE": pa.array(
                [dt.datetime(2024, 8, 1, tzinfo=dt.UTC), None, dt.datetime(2024, 8, 2)],
                pa.timestamp("us", tz="UTC"),
            ),
            "FILES": pa.array([[{"id": 1, "url": "/x"}], None, []]),
            "TAGS": pa.array([["x"], None, ["y", None]], pa.list_(pa.string())),
        }
    )
    return with_lineage(table, "run-1", dt.datetime(2026, 1, 1, tzinfo=dt.UTC))


def test_statistics_kept_for_scalar_non_text_columns_and_the_run_id() -> None:
    schema = _table().schema
    assert statistics_columns(schema) == [
        "ID",
        "OPENED",
        "OPPORTUNITY",
        "DATE_CREATE",
        "_run_id",
        "_extracted_at",
    ]


def test_encoded_file_round_trips_with_id_min_max() -> None:
    table = _table()
    buf = Encoding("zstd", 65536).encode(table)
    assert pq.read_table(pa.BufferReader(buf)).equals(table)
    meta = pq.read_metadata(pa.BufferReader(buf)).row_group(0)
    by_path = {meta.column(n).path_in_schema: meta.column(n) for n in range(meta.num_columns)}
    stats = by_path["ID"].statistics
    assert stats is not None
    assert (stats.min, stats.max, stats.null_count) == (1, 3, 0)
    assert by_path["_run_id"].statistics.min == "run-1"
    assert by_path["TITLE"].statistics is None
    assert by_path["TAGS.list.element"].statistics is None
