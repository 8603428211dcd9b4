"""Lineage columns: every row says which run extracted it and when, export and retry alike.

In-process `export()` and `retry_failed()` over real sockets against the simulator; the rows are
read back with pyarrow, DuckDB and Polars.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from pipeline.config import FetchConfig, LimitsConfig, OutputConfig, RunConfig, WebhookAuth
from pipeline.config_load import IdsConfig
from pipeline.output.lineage import EXTRACTED_AT_COLUMN, RUN_ID_COLUMN, without_lineage
from pipeline.output.manifest import schema_fingerprint
from pipeline.run import export, retry_failed
from pipeline.simulator import RunningSimulator
from pipeline.simulator.methods import MethodError
from pipeline.simulator.php import php_int

IDS = IdsConfig(source="1-100", format="range")


def _config(sim: RunningSimulator, out: Path) -> RunConfig:
    return RunConfig(
        auth=WebhookAuth(sim.webhook_url),
        output=OutputConfig(root=str(out), chunk_size=30, existing_data_behavior="overwrite"),
        limits=LimitsConfig(rate=0, operating_budget_s=None),
        fetch=FetchConfig(max_attempts=2, backoff_base_s=0, backoff_max_s=0),
    )


def _failing(sim: RunningSimulator, ids: set[int]) -> Any:
    """Make `crm.deal.get` of `ids` answer a server fault (retryable) until undone."""
    api = sim.sim.api
    real = api._methods["crm.deal.get"]

    def deal_get(params: dict[Any, Any]) -> Any:
        if php_int(params.get("ID", params.get("id"))) in ids:
            raise MethodError(500, "INTERNAL_SERVER_ERROR", "Internal server error")
        return real(params)

    api._methods["crm.deal.get"] = deal_get
    return lambda: api._methods.__setitem__("crm.deal.get", real)


def _table(out: Path) -> pa.Table:
    return ds.dataset(out, format="parquet", partitioning="hive").to_table()


async def test_rows_carry_the_run_and_extraction_time_through_export_and_retry(
    simulator, tmp_path: Path
) -> None:
    sim = await simulator(deals=90, seed=31)
    out = tmp_path / "out"
    flaky = set(sim.portal.visible_ids[:5])
    undo = _failing(sim, flaky)
    before = datetime.now(UTC)
    first = await export(_config(sim, out), IDS)
    undo()
    assert first.counts.failed_retryable

    table = _table(out)
    assert table.schema.field(RUN_ID_COLUMN).type == pa.string()
    assert table.schema.field(EXTRACTED_AT_COLUMN).type == pa.timestamp("us", tz="UTC")
    assert set(table.column(RUN_ID_COLUMN).to_pylist()) == {first.run_id}
    stamps = set(table.column(EXTRACTED_AT_COLUMN).to_pylist())
    assert len(stamps) <= 4, "one value per chunk commit"
    assert all(before <= t <= datetime.now(UTC) for t in stamps)

    again = await retry_failed(_config(sim, out), str(out))
    assert again.exit_code == 0
    table = _table(out)
    ids, runs = table.column("ID").to_pylist(), table.column(RUN_ID_COLUMN).to_pylist()
    by_id = dict(zip(ids, runs, strict=True))
    assert {i for i, run in by_id.items() if run == again.run_id} == flaky
    assert {run for i, run in by_id.items() if i not in flaky} == {first.run_id}

    # The deals' schema, not the lineage, names a chunk: export and retry chunks agree.
    manifest = again.manifest
    assert len(manifest["schema_fingerprints"]) == 1
    some_file = next(out.glob("DATE_CREATE_month=*/part-*.parquet"))
    deal_schema = without_lineage(pq.read_schema(some_file))
    assert manifest["schema_fingerprints"] == [schema_fingerprint(deal_schema)]


async def test_readers_see_lineage_and_drift_ignores_it(simulator, tmp_path: Path) -> None:
    sim = await simulator(deals=60, seed=32)
    out = tmp_path / "out"
    first = await export(_config(sim, out), IDS)
    second = await export(_config(sim, out), IDS)  # overwrite: the same portal again
    assert first.exit_code == second.exit_code == 0
    assert second.drift == []
    assert "schema_drift" not in second.manifest or not second.manifest["schema_drift"]

    glob = f"{out}/**/part-*.parquet"
    runs, typ = (
        duckdb.connect()
        .execute(
            f"select count(distinct {RUN_ID_COLUMN}), any_value(typeof({EXTRACTED_AT_COLUMN})) "
            f"from read_parquet('{glob}', hive_partitioning=true)"
        )
        .fetchone()  # type: ignore[misc]
    )
    assert (runs, typ) == (1, "TIMESTAMP WITH TIME ZONE")
    frame = pl.scan_parquet(glob, hive_partitioning=True).collect()
    assert frame.schema[EXTRACTED_AT_COLUMN] == pl.Datetime("us", "UTC")
    assert frame[RUN_ID_COLUMN].unique().to_list() == [second.run_id]
