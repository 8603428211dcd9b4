"""The Delta sink end to end: real HTTP against the simulator, real deltalake tables."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import orjson
import polars as pl
import pyarrow as pa
import pytest

from pipeline.config import FetchConfig
from pipeline.config_load import IdsConfig
from pipeline.errors import OutputError, UsageError
from pipeline.run import export, retry_failed
from pipeline.simulator import FaultConfig
from tests.output.delta.helpers import (
    delta_config,
    errors_of,
    fetch_failures,
    operations,
    our_commits,
    rows,
    table_of,
)

SINCE_2000 = IdsConfig(modified_since=datetime(2000, 1, 1, tzinfo=UTC))
SINCE_LAST = IdsConfig(since_last_run=True, start_from=datetime(2000, 1, 1, tzinfo=UTC))


async def test_first_load_appends_and_a_second_run_merges_the_latest_version(
    simulator, tmp_path: Path
) -> None:
    sim = await simulator(deals=150, seed=4)
    root = tmp_path / "deals"
    first = await export(delta_config(sim, root), SINCE_LAST)
    assert first.exit_code == 0
    visible = sorted(sim.portal.visible_ids)
    table = rows(root)
    assert table.column("ID").to_pylist() == visible
    # The first commit creates the table with the chunk's files (pyarrow-written, committed as
    # add actions), later chunks append them: no MERGE, no rewrite.
    assert set(operations(root)) == {"CREATE TABLE", "WRITE"}, "the first load appends"
    assert {"_run_id", "_extracted_at", "_deleted_at", "DATE_CREATE_month"} <= set(
        table.column_names
    )
    assert table.schema.field("_extracted_at").type == pa.timestamp("us", tz="UTC")
    assert table.column("_deleted_at").null_count == table.num_rows
    assert set(table.column("_run_id").to_pylist()) == {first.run_id}

    touched = visible[::7]
    sim.portal.touch(touched, time.time() + 3600)
    second = await export(delta_config(sim, root), SINCE_LAST)
    assert second.exit_code == 0
    assert second.counts.exported == len(touched)
    assert "MERGE" in operations(root)
    after = rows(root)
    ids = after.column("ID").to_pylist()
    assert ids == visible, "every deal exactly once"
    by_id = {r["ID"]: r for r in after.to_pylist()}
    for deal_id in touched:
        assert by_id[deal_id]["_run_id"] == second.run_id
        wire = sim.portal.deal_wire(deal_id)
        assert wire is not None
        modified = datetime.fromisoformat(wire["DATE_MODIFY"])
        assert by_id[deal_id]["DATE_MODIFY"] == modified
    untouched = next(i for i in visible if i not in touched)
    assert by_id[untouched]["_run_id"] == first.run_id


async def test_state_lives_in_the_commits_and_since_last_run_reads_it(
    simulator, tmp_path: Path
) -> None:
    sim = await simulator(deals=90, seed=6)
    root = tmp_path / "deals"
    first = await export(delta_config(sim, root), SINCE_LAST)
    commits = our_commits(root)
    final = commits[0]
    assert final.kind == "finalize"
    assert final.completed
    assert final.record["watermark"] == first.manifest["watermark"]
    assert final.record["run_id"] == first.run_id
    chunks = [c for c in commits if c.kind == "chunk"]
    assert (
        sorted(c.record["chunk"] for c in chunks) == ["000000", "000001", "000002"][: len(chunks)]
    )
    for chunk in chunks:
        assert chunk.record["run_id"] == first.run_id
        assert chunk.record["schema_fingerprint"].startswith("sha256:")
        assert "exported" in chunk.record["counts"]
    assert final.record["counts"]["exported"] == first.counts.exported
    # Nothing changed on the portal: the next run asks only since the watermark.
    again = await export(delta_config(sim, root), SINCE_LAST)
    assert again.exit_code == 0
    assert again.counts.requested == 0
    assert rows(root).num_rows == len(sim.portal.visible_ids)


async def test_errors_table_holds_exactly_the_current_failures_and_shrinks_after_retry(
    simulator, tmp_path: Path
) -> None:
    sim = await simulator(deals=120, seed=5)
    root = tmp_path / "deals"
    sim.set_faults(FaultConfig(error_500=1.0, methods=frozenset({"batch"})))
    config = delta_config(sim, root, fetch=FetchConfig(max_attempts=1, concurrency=1))
    ids = IdsConfig(source="1-120", format="range")
    first = await export(config, ids)
    assert first.exit_code == 3
    assert fetch_failures(root) == list(range(1, 121))
    retryable = errors_of(root).column("retryable").to_pylist()
    assert all(retryable)

    sim.set_faults(FaultConfig())
    retried = await retry_failed(delta_config(sim, root), str(root))
    assert retried.exit_code == 0
    visible = set(sim.portal.visible_ids)
    assert rows(root).column("ID").to_pylist() == sorted(visible & set(range(1, 121)))
    # What is left is exactly the permanent failures of this portal (hidden or missing deals).
    left = fetch_failures(root)
    assert set(left) == set(range(1, 121)) - visible
    assert not any(errors_of(root).column("retryable").to_pylist())


async def test_a_deal_that_fails_later_succeeds_and_leaves_the_errors_table(
    simulator, tmp_path: Path
) -> None:
    sim = await simulator(deals=80, seed=8)
    root = tmp_path / "deals"
    ids = IdsConfig(source="1-80", format="range")
    sim.set_faults(FaultConfig(error_500=1.0, methods=frozenset({"batch"})))
    await export(delta_config(sim, root, fetch=FetchConfig(max_attempts=1)), ids)
    sim.set_faults(FaultConfig())
    # The same command again converges: every ID re-fetched and merged.
    again = await export(delta_config(sim, root), ids)
    assert again.exit_code == 0
    assert set(fetch_failures(root)) == set(range(1, 81)) - set(sim.portal.visible_ids)
    attempts = errors_of(root).column("attempts").to_pylist()
    assert all(a is None or a >= 1 for a in attempts)


async def test_a_new_portal_field_becomes_a_new_nullable_column(simulator, tmp_path: Path) -> None:
    root = tmp_path / "deals"
    before = await simulator(deals=60, seed=3, user_fields=("string",))
    await export(delta_config(before, root), SINCE_2000)
    old_columns = set(rows(root).column_names)
    after = await simulator(deals=90, seed=3, user_fields=("string", "url"))
    await export(delta_config(after, root), IdsConfig(source="61-90", format="range"))
    table = rows(root)
    added = set(table.column_names) - old_columns
    assert len(added) == 1
    (name,) = added
    values = dict(zip(table.column("ID").to_pylist(), table.column(name).to_pylist(), strict=True))
    assert all(values[i] is None for i in values if i <= 60)
    assert table.schema.field(name).nullable


def _retype(sim, name: str, bitrix_type: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The portal now describes field `name` with another type (an admin changed it)."""
    fields = sim.portal.fields()
    fields[name]["type"] = bitrix_type
    monkeypatch.setattr(sim.portal, "_fields_json", orjson.dumps(fields))


async def test_a_changed_type_stops_the_run_unless_the_contract_is_evolve(
    simulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "deals"
    sim = await simulator(deals=40, seed=3, user_fields=("integer",))
    await export(delta_config(sim, root), SINCE_2000)
    version = table_of(root).version()
    name = "UF_CRM_1721244500001"
    assert pa.types.is_integer(rows(root).schema.field(name).type)
    _retype(sim, name, "double", monkeypatch)
    with pytest.raises(OutputError, match="field type changed: UF_CRM_1721244500001"):
        await export(delta_config(sim, root), SINCE_2000)
    assert table_of(root).version() == version, "nothing was written"
    with pytest.raises(OutputError, match="field type changed"):
        await export(delta_config(sim, root, schema_contract="freeze"), SINCE_2000)
    evolved = await export(delta_config(sim, root, schema_contract="evolve"), SINCE_2000)
    assert evolved.exit_code == 0
    table = rows(root)
    assert pa.types.is_floating(table.schema.field(name).type)
    assert table.column("ID").to_pylist() == sorted(sim.portal.visible_ids)
    assert table.column(name).null_count < table.num_rows


async def test_freeze_refuses_a_new_field(simulator, tmp_path: Path) -> None:
    root = tmp_path / "deals"
    before = await simulator(deals=30, seed=3, user_fields=("string",))
    await export(delta_config(before, root, schema_contract="freeze"), SINCE_2000)
    after = await simulator(deals=30, seed=3, user_fields=("string", "url"))
    with pytest.raises(OutputError, match="field added"):
        await export(delta_config(after, root, schema_contract="freeze"), SINCE_2000)


async def test_three_readers_see_the_same_deals(simulator, tmp_path: Path) -> None:
    sim = await simulator(deals=70, seed=9)
    root = tmp_path / "deals"
    await export(delta_config(sim, root), SINCE_2000)
    sim.portal.touch(sim.portal.visible_ids[:10], time.time() + 3600)
    await export(delta_config(sim, root), SINCE_2000)
    expected = sorted(sim.portal.visible_ids)
    assert table_of(root).to_pyarrow_table().column("ID").to_pylist().__len__() == len(expected)
    polars_ids = pl.scan_delta(str(root)).select("ID").collect()["ID"].sort().to_list()
    assert polars_ids == expected
    dataset = table_of(root).to_pyarrow_dataset()
    con = duckdb.connect()
    con.register("deals", dataset)
    duck = [r[0] for r in con.execute("SELECT ID FROM deals ORDER BY ID").fetchall()]
    assert duck == expected
    count = con.execute("SELECT count(*), count(DISTINCT ID) FROM deals").fetchone()
    assert count == (len(expected), len(expected))


async def test_the_errors_table_survives_vacuum_and_optimize_of_the_data_table(
    simulator, tmp_path: Path
) -> None:
    sim = await simulator(deals=60, seed=2)
    root = tmp_path / "deals"
    sim.set_faults(FaultConfig(error_500=1.0, methods=frozenset({"batch"})))
    await export(
        delta_config(sim, root, fetch=FetchConfig(max_attempts=1)),
        IdsConfig(source="1-20", format="range"),
    )
    sim.set_faults(FaultConfig())
    await export(delta_config(sim, root), IdsConfig(source="21-60", format="range"))
    failures = fetch_failures(root)
    assert failures
    data = table_of(root)
    data.optimize.compact()
    data.vacuum(retention_hours=0, enforce_retention_duration=False, dry_run=False, full=True)
    assert fetch_failures(root) == failures
    assert rows(root).num_rows == len(set(sim.portal.visible_ids) & set(range(21, 61)))


async def test_overwrite_and_a_mismatched_partitioning_are_clear_errors(
    simulator, tmp_path: Path
) -> None:
    sim = await simulator(deals=20, seed=2)
    root = tmp_path / "deals"
    with pytest.raises(OutputError, match="never replaced"):
        await export(delta_config(sim, root, existing_data_behavior="overwrite"), SINCE_2000)
    await export(delta_config(sim, root), SINCE_2000)
    with pytest.raises(OutputError, match="partitioned by"):
        await export(delta_config(sim, root, partition_transform="year"), SINCE_2000)
    with pytest.raises(UsageError, match="holds a Delta table"):
        await export(delta_config(sim, root, table_format="parquet"), SINCE_2000)


async def test_no_webhook_secret_in_any_file_of_the_table(simulator, tmp_path: Path) -> None:
    sim = await simulator(deals=30, seed=2)
    root = tmp_path / "deals"
    await export(delta_config(sim, root), SINCE_LAST)
    secret = sim.webhook_url.rstrip("/").rsplit("/", 1)[1]
    assert len(secret) >= 8
    leaked = [p for p in root.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]
    assert leaked == []
    assert any((root / "_delta_log").glob("*.json"))


async def test_a_table_made_without_the_stats_property_gets_it_at_the_next_run(
    simulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipeline.output.delta import table as delta_table

    sim = await simulator(deals=60, seed=4)
    root = tmp_path / "deals"
    # As an earlier version of this tool made tables: file stats for ID only, nothing saying so.
    with monkeypatch.context() as patch:
        patch.setattr(delta_table, "STATS_PROPERTIES", {})
        assert (await export(delta_config(sim, root), SINCE_LAST)).exit_code == 0
    title = rows(root).column("TITLE")[0].as_py()
    assert table_of(root).to_pyarrow_table(filters=[("TITLE", "=", title)]).num_rows == 0

    again = await export(delta_config(sim, root), SINCE_LAST)
    assert again.exit_code == 0
    deals = table_of(root)
    assert deals.metadata().configuration == {"delta.dataSkippingStatsColumns": "ID"}
    assert deals.to_pyarrow_table(filters=[("TITLE", "=", title)]).num_rows >= 1
    assert rows(root).column("ID").to_pylist() == sorted(sim.portal.visible_ids)
    assert {c.kind for c in our_commits(root)} >= {"chunk", "finalize"}
