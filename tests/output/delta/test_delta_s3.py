"""The Delta sink on a local S3 server (moto): deltalake's own object store, the same `--out`
URI and AWS environment the folder sink takes."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import duckdb
import polars as pl
import pytest

from pipeline.config import FetchConfig
from pipeline.config_load import IdsConfig
from pipeline.output.delta import errors_table_uri, locate
from pipeline.run import export, retry_failed
from pipeline.simulator import FaultConfig
from tests.conftest import fresh_s3_bucket
from tests.output.delta.helpers import delta_config, fetch_failures, our_commits, rows, table_of

pytestmark = pytest.mark.slow

SINCE_LAST = IdsConfig(since_last_run=True, start_from=datetime(2000, 1, 1, tzinfo=UTC))


@pytest.fixture
def s3_root(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    uri, _ = fresh_s3_bucket(s3_endpoint, monkeypatch, "warehouse/deals")
    return uri


async def test_merge_errors_retry_and_state_on_s3(simulator, s3_root: str) -> None:
    sim = await simulator(deals=100, seed=11)
    sim.set_faults(FaultConfig(error_500=1.0, methods=frozenset({"batch"})))
    ids = IdsConfig(source="1-30", format="range")
    failed = await export(delta_config(sim, s3_root, fetch=FetchConfig(max_attempts=1)), ids)
    assert failed.exit_code == 3
    assert fetch_failures(s3_root) == list(range(1, 31))
    sim.set_faults(FaultConfig())
    assert (await retry_failed(delta_config(sim, s3_root), s3_root)).exit_code == 0
    assert set(fetch_failures(s3_root)) == set(range(1, 31)) - set(sim.portal.visible_ids)

    first = await export(delta_config(sim, s3_root), SINCE_LAST)
    assert first.exit_code == 0
    sim.portal.touch(sim.portal.visible_ids[:9], time.time() + 3600)
    second = await export(delta_config(sim, s3_root), SINCE_LAST)
    assert second.counts.exported == 9
    expected = sorted(sim.portal.visible_ids)
    assert rows(s3_root).column("ID").to_pylist() == expected
    assert our_commits(s3_root)[0].record["watermark"] == second.manifest["watermark"]

    where = locate(s3_root)
    assert where.uri.startswith("s3://")
    assert "?" not in where.uri
    polars_ids = (
        pl.scan_delta(where.uri, storage_options=where.storage_options)
        .select("ID")
        .collect()["ID"]
        .sort()
        .to_list()
    )
    assert polars_ids == expected
    con = duckdb.connect()
    con.register("deals", table_of(s3_root).to_pyarrow_dataset())
    assert [r[0] for r in con.execute("SELECT ID FROM deals ORDER BY ID").fetchall()] == expected
    assert errors_table_uri(s3_root) == where.uri + "/_errors"
