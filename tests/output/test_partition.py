from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from pipeline.config import OutputConfig
from pipeline.errors import OutputError
from pipeline.output import partition
from pipeline.output.partition import (
    NULL_PARTITION,
    PartitionSpec,
    iter_split,
    partition_dir,
    split,
)


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


def _split_row_by_row(table: pa.Table, spec: PartitionSpec) -> dict[str, list[int]]:
    """The rule `split` implements, one row at a time: directory -> IDs in input order (each
    row's date key formatted by Arrow's strftime in the column's own time zone)."""
    column = table.column(spec.column or "")
    if spec.transform in ("year", "month", "day"):
        fmt = {"year": "%Y", "month": "%Y-%m", "day": "%Y-%m-%d"}[spec.transform]
        keys = pc.strftime(column, format=fmt).to_pylist()
    else:
        keys = column.to_pylist()
    groups: dict[str, list[int]] = {}
    for row_id, value in zip(table.column("ID").to_pylist(), keys, strict=True):
        if isinstance(value, bool):
            text: str | None = "true" if value else "false"
        else:
            text = None if value is None else str(value)
        groups.setdefault(partition_dir(spec, text), []).append(row_id)
    return groups


def _many_chunks(rows: int, chunks: int, seed: int) -> pa.Table:
    import random

    rng = random.Random(seed)
    months = [datetime(2024, m, 28, 23, 59, tzinfo=UTC) for m in range(1, 13)]
    stages = ["C1:WON", "NEW", "", None, "a b/ü", "LOSE"]
    ids = rng.sample(range(1, rows * 10), rows)
    table = pa.table(
        {
            "ID": pa.array(ids, pa.int64()),
            "DATE_CREATE": pa.array(
                [rng.choice([*months, None]) for _ in ids], pa.timestamp("us", tz="UTC")
            ),
            "STAGE_ID": pa.array([rng.choice(stages) for _ in ids], pa.string()),
            "CLOSED": pa.array([rng.choice([True, False, None]) for _ in ids], pa.bool_()),
        }
    )
    step = -(-rows // chunks)
    return pa.concat_tables([table.slice(i, step) for i in range(0, rows, step)])


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize(
    "spec",
    [
        PartitionSpec("DATE_CREATE", "month"),
        PartitionSpec("DATE_CREATE", "year"),
        PartitionSpec("STAGE_ID", "value"),
        PartitionSpec("CLOSED", "value"),
    ],
)
def test_split_of_a_many_chunk_table_matches_the_row_by_row_rule(
    spec: PartitionSpec, seed: int
) -> None:
    table = _many_chunks(2_000, 9, seed)
    assert table.column("ID").num_chunks == 9
    groups = split(table, spec)
    expected = _split_row_by_row(table, spec)
    assert [d for d, _ in groups] == sorted(expected)
    assert {d: t.column("ID").to_pylist() for d, t in groups} == expected
    assert all(t.schema == table.schema for _, t in groups)
    assert sum(t.num_rows for _, t in groups) == table.num_rows


def test_rows_already_grouped_are_sliced_without_a_copy() -> None:
    # By month, nulls last: the directory order (NULL_PARTITION sorts after the digits).
    table = _many_chunks(600, 3, 0).sort_by("DATE_CREATE")
    groups = split(table, PartitionSpec("DATE_CREATE", "month"))
    assert len(groups) == 13
    # Slices of the input: the groups' values live in the input's own buffers.
    source = {b.address for c in table.column("ID").chunks for b in c.buffers() if b is not None}
    for _, part in groups:
        for chunk in part.column("ID").chunks:
            assert chunk.buffers()[1].address in source


@pytest.mark.parametrize("slab_bytes", [1, 2_000, 20_000, 1 << 30])
@pytest.mark.parametrize(
    "spec", [PartitionSpec("DATE_CREATE", "month"), PartitionSpec("STAGE_ID", "value")]
)
def test_iter_split_gives_splits_groups_whatever_the_slab(
    spec: PartitionSpec, slab_bytes: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # From one group per take (1 byte) to one take of the whole table.
    monkeypatch.setattr(partition, "SLAB_BYTES", slab_bytes)
    table = _many_chunks(2_000, 9, 3)
    groups = list(iter_split(table, spec))
    expected = _split_row_by_row(table, spec)
    assert [d for d, _ in groups] == sorted(expected)
    assert {d: t.column("ID").to_pylist() for d, t in groups} == expected
    assert all(t.schema == table.schema for _, t in groups)


def test_iter_split_copies_a_slab_at_a_time_not_the_chunk(monkeypatch: pytest.MonkeyPatch) -> None:
    table = _many_chunks(20_000, 9, 1)
    # Rows as wide as deals are (hundreds of bytes), next to which the row keys are small.
    text = pa.array([f"{n:0200d}" for n in range(table.num_rows)], pa.string())
    table = table.append_column("COMMENTS", pa.chunked_array([text]))
    spec = PartitionSpec("DATE_CREATE", "month")
    monkeypatch.setattr(partition, "SLAB_BYTES", table.nbytes // 8)

    def most_allocated(groups: Callable[[], Iterator[tuple[str, pa.Table]]]) -> int:
        base = pa.total_allocated_bytes()
        most = rows = 0
        # As the commit does: done with a group before asking for the next one.
        for _, part in groups():
            most = max(most, pa.total_allocated_bytes() - base)
            rows += part.num_rows
            del part
        assert rows == table.num_rows
        return most

    # Both hold the row keys and their order; `split` also a copy of every row at once.
    sliced = most_allocated(lambda: iter_split(table, spec))
    whole = most_allocated(lambda: iter(split(table, spec)))
    assert whole - sliced > table.nbytes // 2


def test_iter_split_refuses_a_bad_spec_before_the_first_group() -> None:
    with pytest.raises(OutputError, match="not in the data"):
        iter_split(_table(), PartitionSpec("NOPE", "value"))
    assert list(iter_split(_table().slice(0, 0), PartitionSpec("STAGE_ID", "value"))) == []


@pytest.mark.parametrize("zone", ["UTC", "America/New_York", "Europe/Moscow", "Asia/Kolkata"])
@pytest.mark.parametrize("transform", ["year", "month", "day"])
def test_date_keys_are_taken_in_the_columns_own_zone(zone: str, transform: str) -> None:
    import random

    rng = random.Random(7)
    start = datetime(1, 1, 1, tzinfo=UTC)
    # Years 1..3000 (strftime pads them to four digits) and local midnights around DST gaps.
    moments = [start.replace(year=rng.randrange(1, 3000)) for _ in range(200)]
    moments += [datetime(1981, 3, 31, 20, 59, 59, tzinfo=UTC), datetime(2024, 3, 10, 7, tzinfo=UTC)]
    table = pa.table(
        {
            "ID": pa.array(range(len(moments) + 2), pa.int64()),
            "AT": pa.array([*moments, None, moments[0]], pa.timestamp("us", tz=zone)),
            "DAY": pa.array([m.date() for m in moments] + [None, moments[0].date()], pa.date32()),
        }
    )
    for column in ("AT", "DAY"):
        spec = PartitionSpec(column, transform)  # type: ignore[arg-type]
        groups = split(table, spec)
        assert {d: t.column("ID").to_pylist() for d, t in groups} == _split_row_by_row(table, spec)


@pytest.mark.parametrize("seed", range(3))
def test_first_rows_are_each_codes_first_occurrence(seed: int) -> None:
    import random

    rng = random.Random(seed)
    values = [rng.choice([None, *range(rng.randrange(1, 400))]) for _ in range(3_000)]
    codes = pc.dictionary_encode(pa.array(values, pa.int64())).indices
    seen: dict[int, int] = {}
    for row, code in enumerate(codes.to_pylist()):
        if code is not None:
            seen.setdefault(code, row)
    assert partition._first_rows(codes).to_pylist() == [seen[c] for c in range(len(seen))]
    assert partition._first_rows(codes.slice(0, 0)).to_pylist() == []
