"""The pure parts of the Delta sink: locations, commit records, lineage and partition columns."""

from __future__ import annotations

from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from pipeline.errors import OutputError
from pipeline.normalise import SchemaDrift, TypeChange
from pipeline.output.delta import contract
from pipeline.output.delta.columns import delta_rows, partition_values
from pipeline.output.delta.commits import encode, open_chunks, ours, run_totals
from pipeline.output.delta.location import errors_table_uri, locate
from pipeline.output.partition import PartitionSpec


def test_an_s3_root_becomes_a_clean_uri_and_storage_options() -> None:
    where = locate("s3://bucket/deals?endpoint_override=127.0.0.1:9000&scheme=http&region=eu-1")
    assert where.uri == "s3://bucket/deals"
    assert where.storage_options == {
        "AWS_ENDPOINT_URL": "http://127.0.0.1:9000",
        "AWS_ALLOW_HTTP": "true",
        "AWS_REGION": "eu-1",
    }
    assert errors_table_uri("s3://bucket/deals/?region=eu-1") == "s3://bucket/deals/_errors"
    with pytest.raises(OutputError, match="credentials"):
        locate("s3://key:secret@bucket/deals")
    with pytest.raises(OutputError, match="unknown URI option"):
        locate("s3://bucket/deals?access_key=x")


def _history(*records: dict[str, object]) -> list[dict[str, object]]:
    return [{"version": v, **encode(r)} for v, r in enumerate(records)] + [{"version": 99}]


def test_open_chunks_are_those_after_the_last_completed_run_with_the_same_input() -> None:
    history = _history(
        {"kind": "chunk", "chunk": "000000", "index": 0, "fingerprint": "a"},
        {"kind": "finalize", "completed": True, "watermark": "W1"},
        {"kind": "chunk", "chunk": "000000", "index": 0, "fingerprint": "b"},
        {"kind": "chunk", "chunk": "000001", "index": 1, "fingerprint": "a"},
    )
    found = ours(history)
    assert [c.version for c in found] == [3, 2, 1, 0]
    assert [c.record["chunk"] for c in open_chunks(found, "a")] == ["000001"]
    assert open_chunks(found, None) == []


def test_run_totals_count_each_chunk_once_newest_first() -> None:
    counts = {"exported": 5, "failed_by_reason": {"retryable": {"500": 2}}, "retryable": 2}
    found = ours(
        _history(
            {"kind": "chunk", "chunk": "000000", "counts": {"exported": 1}},
            {"kind": "chunk", "chunk": "000000", "counts": counts},
        )
    )
    totals = run_totals(found)
    assert totals["exported"] == 5
    assert totals["failed"] == 2
    assert totals["retryable_failed"] == 2


def test_rows_get_lineage_a_null_deleted_at_and_the_partition_key() -> None:
    seen = datetime(2026, 1, 2, tzinfo=UTC)
    table = pa.table(
        {
            "ID": pa.array([1, 2], pa.int64()),
            "DATE_CREATE": pa.array([seen, None], pa.timestamp("us", tz="UTC")),
            "_deleted_at": pa.array([seen, seen], pa.timestamp("us", tz="UTC")),
        }
    )
    out = delta_rows(table, PartitionSpec("DATE_CREATE", "month"), "run-1", seen)
    assert out.column("_run_id").to_pylist() == ["run-1", "run-1"]
    assert out.column("_extracted_at").to_pylist() == [seen, seen]
    assert out.column("_deleted_at").null_count == 2, "an upsert makes a deal live again"
    assert out.column("DATE_CREATE_month").to_pylist() == ["2026-01", None]
    kept = delta_rows(
        out.drop_columns(["DATE_CREATE_month"]), PartitionSpec(None, "none"), "x", seen
    )
    assert kept.column("_run_id").to_pylist() == ["run-1", "run-1"], "upstream lineage is kept"


@pytest.mark.parametrize("transform", ["year", "month", "day"])
@pytest.mark.parametrize(
    "typ", [pa.timestamp("us", tz="UTC"), pa.timestamp("us", tz="Europe/Moscow"), pa.date32()]
)
def test_date_partition_values_are_strftimes_text_of_each_row(
    transform: str, typ: pa.DataType
) -> None:
    moments = [
        datetime(2024, 12, 31, 22, 30, tzinfo=UTC),  # 2025-01-01 in Moscow
        None,
        datetime(1999, 2, 3, tzinfo=UTC),
        datetime(2024, 12, 31, 22, 30, tzinfo=UTC),
        datetime(2024, 1, 15, tzinfo=UTC),
        None,
    ]
    raw = pa.array(moments, pa.timestamp("us", tz="UTC")).cast(typ)
    column = pa.chunked_array([raw.slice(0, 2), raw.slice(2)])
    spec = PartitionSpec("DATE_CREATE", transform)  # type: ignore[arg-type]
    fmt = {"year": "%Y", "month": "%Y-%m", "day": "%Y-%m-%d"}[transform]
    expected = pc.strftime(column, format=fmt).combine_chunks()
    assert partition_values(column, spec).equals(expected)
    assert partition_values(pa.chunked_array([], typ), spec).to_pylist() == []


def test_the_contract_decides_which_drift_stops_a_run() -> None:
    changed = SchemaDrift(type_changed=(TypeChange("F", "integer", "double", "int64", "double"),))
    added = SchemaDrift(added=("G",))
    contract.check("add-columns", added)
    contract.check("evolve", changed)
    with pytest.raises(OutputError, match="field type changed: F"):
        contract.check("add-columns", changed)
    with pytest.raises(OutputError, match="field added: G"):
        contract.check("freeze", added)
