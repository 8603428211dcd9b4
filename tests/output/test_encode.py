"""Data-file encoding: which columns keep statistics, and that values round-trip."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.normalise import DealSchema, normalise_deals
from pipeline.output.encode import SMALL_BOOLEAN_ROWS, Encoding, statistics_columns
from pipeline.output.lineage import with_lineage
from pipeline.output.sidecar import conform
from pipeline.simulator import SimulatorConfig, running_simulator


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


def _write_table(table: pa.Table) -> bytes:
    """The file `pq.write_table` makes with `Encoding`'s settings (its Arrow schema stored by
    Arrow itself): what `Encoding.encode` must reproduce byte for byte."""
    sink = pa.BufferOutputStream()
    pq.write_table(
        table,
        sink,
        compression=Encoding("zstd", 65536).codecs(table),
        row_group_size=65536,
        use_dictionary=False,
        write_statistics=statistics_columns(table.schema),
    )
    return bytes(sink.getvalue())


def _sidecar() -> pa.Table:
    rows = [
        {"id": 7, "stage": "fetch", "code": "NOT_FOUND", "message": "gone"},
        {"id": 9, "stage": "normalise", "field": "OPPORTUNITY", "raw_value": '"x"'},
    ]
    return conform(pa.Table.from_pylist(rows))


def test_encoded_files_are_those_write_table_makes() -> None:
    encoding = Encoding("zstd", 65536)
    with_meta = _table().replace_schema_metadata({b"owner": b"us", b"z": b"1"})
    for table in (_table(), with_meta, _sidecar(), _table().slice(0, 0), _table()):
        assert bytes(encoding.encode(table)) == _write_table(table)
    read = pq.read_table(pa.BufferReader(encoding.encode(with_meta)))
    assert read.schema.metadata == {b"owner": b"us", b"z": b"1"}


def test_a_schema_that_carries_an_arrow_schema_key_is_left_to_arrow() -> None:
    table = _table().replace_schema_metadata({b"ARROW:schema": b"stale"})
    assert bytes(Encoding("zstd", 65536).encode(table)) == _write_table(table)


async def test_normalised_deals_encode_as_write_table_does() -> None:
    async with running_simulator(SimulatorConfig(deals=120, seed=5)) as sim:
        schema = DealSchema.from_fields(sim.portal.fields())
        ids = list(sim.portal.visible_ids)[:100]
        payloads = [sim.portal.deal_wire(i) for i in ids]
    table, _ = normalise_deals(payloads, schema, ids=ids)
    table = with_lineage(table, "run-2", dt.datetime(2026, 1, 2, tzinfo=dt.UTC))
    encoding = Encoding("zstd", 65536)
    for part in (table, table.slice(0, 1), table.slice(40, 30)):
        assert bytes(encoding.encode(part)) == _write_table(part)


def _codecs(buf: pa.Buffer) -> dict[str, str]:
    meta = pq.read_metadata(pa.BufferReader(buf))
    return {
        meta.row_group(g).column(n).path_in_schema: meta.row_group(g).column(n).compression
        for g in range(meta.num_row_groups)
        for n in range(meta.num_columns)
    }


async def test_a_small_files_boolean_columns_are_stored_uncompressed_the_rest_zstd() -> None:
    async with running_simulator(SimulatorConfig(deals=120, seed=5)) as sim:
        schema = DealSchema.from_fields(sim.portal.fields())
        ids = list(sim.portal.visible_ids)[:100]
        payloads = [sim.portal.deal_wire(i) for i in ids]
    table, _ = normalise_deals(payloads, schema, ids=ids)
    table = with_lineage(table, "run-3", dt.datetime(2026, 1, 3, tzinfo=dt.UTC))
    booleans = {f.name for f in table.schema if pa.types.is_boolean(f.type)}
    assert booleans
    encoding = Encoding("zstd", 65536)
    buf = encoding.encode(table)
    codecs = _codecs(buf)
    # Every leaf of the file is named by the per-column codecs (none left to the default).
    assert set(codecs) == set(encoding.codecs(table))
    assert {p for p, c in codecs.items() if c == "UNCOMPRESSED"} == booleans
    assert {c for p, c in codecs.items() if p not in booleans} == {"ZSTD"}
    assert pq.read_table(pa.BufferReader(buf)).equals(table)


def test_a_file_beyond_the_small_bound_compresses_every_column() -> None:
    rows = SMALL_BOOLEAN_ROWS + 1
    table = pa.table({"ID": pa.array(range(rows), pa.int64()), "OPENED": [False] * rows})
    assert set(_codecs(Encoding("zstd", 65536).encode(table)).values()) == {"ZSTD"}
    small = table.slice(0, SMALL_BOOLEAN_ROWS)
    assert _codecs(Encoding("zstd", 65536).encode(small)) == {
        "ID": "ZSTD",
        "OPENED": "UNCOMPRESSED",
    }
    assert set(_codecs(Encoding("snappy", 65536).encode(small)).values()) == {
        "SNAPPY",
        "UNCOMPRESSED",
    }
    assert set(_codecs(Encoding("none", 65536).encode(small)).values()) == {"UNCOMPRESSED"}


def test_a_schema_with_types_not_spelt_out_takes_one_codec() -> None:
    typ = pa.map_(pa.string(), pa.int64())
    table = pa.table({"OPENED": [True, False], "M": pa.array([[("a", 1)], None], typ)})
    assert Encoding("zstd", 65536).codecs(table) == "zstd"
    assert set(_codecs(Encoding("zstd", 65536).encode(table)).values()) == {"ZSTD"}
