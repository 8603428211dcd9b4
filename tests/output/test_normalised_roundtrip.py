"""The real normaliser's tables (structs, lists, decimals, UTC timestamps) through the output layer
and back with pyarrow, DuckDB and Polars, partition column discovered."""

from __future__ import annotations

from pathlib import Path

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.dataset as ds

from pipeline.config import OutputConfig
from pipeline.normalise import DealSchema, normalise_deals
from pipeline.output import OutputRoot, dataset_glob
from pipeline.simulator import SimulatorConfig, running_simulator


async def test_simulator_deals_round_trip(tmp_path: Path) -> None:
    async with running_simulator(SimulatorConfig(deals=400, seed=11)) as sim:
        schema = DealSchema.from_fields(sim.portal.fields())
        ids = list(sim.portal.visible_ids)[:300]
        payloads = [sim.portal.deal_wire(i) for i in ids]
    assert all(p is not None for p in payloads)
    tables = []
    with OutputRoot.open(OutputConfig(root=str(tmp_path), chunk_size=100), "r") as out:
        for index in range(3):
            part = slice(index * 100, index * 100 + 100)
            table, _ = normalise_deals(payloads[part], schema, ids=ids[part])
            out.write_chunk(index, table, [])
            tables.append(table)
        out.finalize()
    expected = pa.concat_tables(tables).sort_by("ID")

    got = ds.dataset(str(tmp_path), partitioning="hive").to_table()
    assert "DATE_CREATE_month" in got.column_names
    assert got.select(expected.column_names).sort_by("ID").equals(expected)

    glob = dataset_glob(str(tmp_path))
    duck = duckdb.sql(
        f"SELECT ID, DATE_CREATE_month FROM read_parquet('{glob}', hive_partitioning=true)"
    ).fetchall()
    assert sorted(r[0] for r in duck) == sorted(ids)
    frame = pl.read_parquet(glob, hive_partitioning=True)
    assert sorted(frame["ID"].to_list()) == sorted(ids)
    months = {r[1] for r in duck}
    assert months == set(frame["DATE_CREATE_month"].to_list())
    assert months == set(got.column("DATE_CREATE_month").to_pylist())
