from __future__ import annotations

from datetime import UTC, date, datetime

import pyarrow as pa
import pytest

from pipeline.config import OutputConfig
from pipeline.errors import OutputError
from pipeline.output.partition import NULL_PARTITION, PartitionSpec, partition_dir, split


def _table() -> pa.Table:
    return pa.table(
        {
            "ID": pa.array([1, 2, 3, 4], pa.int64()),
            "DATE_CREATE": pa.array(
                [
                    datetime(2024, 8, 31, 23, 30, tzinfo=UTC),
                    datetime(2024, 9, 1, 0, 30, tzinfo=UTC),
                    None,
                    datetime(2023, 8, 31, 12, tzinfo=UTC),
                ],
                pa.timestamp("us", tz="UTC"),
            ),
            "STAGE_ID": ["C1:WON", "NEW", None, "C1:WON"],
            "D": pa.array([date(2024, 1, 2)] * 4, pa.date32()),
            "TAGS": [["a"], [], None, ["b"]],
        }
    )


@pytest.mark.parametrize(
    ("transform", "expected"),
    [
        (
            "month",
            {
                "DATE_CREATE_month=2023-08": [4],
                "DATE_CREATE_month=2024-08": [1],
                "DATE_CREATE_month=2024-09": [2],
                f"DATE_CREATE_month={NULL_PARTITION}": [3],
            },
        ),
        (
            "year",
            {
                "DATE_CREATE_year=2023": [4],
                "DATE_CREATE_year=2024": [1, 2],
                f"DATE_CREATE_year={NULL_PARTITION}": [3],
            },
        ),
        (
            "day",
            {
                "DATE_CREATE_day=2023-08-31": [4],
                "DATE_CREATE_day=2024-08-31": [1],
                "DATE_CREATE_day=2024-09-01": [2],
                f"DATE_CREATE_day={NULL_PARTITION}": [3],
            },
        ),
    ],
)
def test_date_transforms_split_by_utc_parts(transform: str, expected: dict[str, list[int]]) -> None:
    spec = PartitionSpec.from_config(
        OutputConfig(root="x", partition_by="DATE_CREATE", partition_transform=transform)  # type: ignore[arg-type]
    )
    groups = split(_table(), spec)
    assert [d for d, _ in groups] == sorted(expected)
    assert {d: t.column("ID").to_pylist() for d, t in groups} == expected
    # the data column itself is kept, untouched
    assert all(t.schema == _table().schema for _, t in groups)


def test_value_transform_percent_encodes_and_sends_nulls_to_default() -> None:
    spec = PartitionSpec("STAGE_ID", "value")
    groups = {d: t.column("ID").to_pylist() for d, t in split(_table(), spec)}
    assert groups == {
        "STAGE_ID_value=C1%3AWON": [1, 4],
        "STAGE_ID_value=NEW": [2],
        f"STAGE_ID_value={NULL_PARTITION}": [3],
    }


def test_date32_and_unpartitioned() -> None:
    assert [d for d, _ in split(_table(), PartitionSpec("D", "month"))] == ["D_month=2024-01"]
    spec = PartitionSpec.from_config(OutputConfig(root="x", partition_by=None))
    assert spec == PartitionSpec(None, "none")
    assert split(_table(), spec)[0][0] == ""
    assert split(_table().slice(0, 0), spec) == []
    assert partition_dir(PartitionSpec("X", "value"), "") == f"X_value={NULL_PARTITION}"


def test_bad_partition_columns_are_clear_errors() -> None:
    with pytest.raises(OutputError, match="needs a date or timestamp column"):
        split(_table(), PartitionSpec("STAGE_ID", "month"))
    with pytest.raises(OutputError, match="not in the data"):
        split(_table(), PartitionSpec("NOPE", "value"))
    with pytest.raises(OutputError, match="not a scalar type"):
        split(_table(), PartitionSpec("TAGS", "value"))
    clash = _table().append_column("STAGE_ID_value", pa.array(["x"] * 4))
    with pytest.raises(OutputError, match="clashes"):
        split(clash, PartitionSpec("STAGE_ID", "value"))
