"""`deal-export state` on a Delta output (the watermark lives in the table's commits) and the
entity a Delta output records, so `retry` of a lead table fetches leads."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner

from pipeline.cli import cli
from pipeline.config import FetchConfig
from pipeline.config_load import IdsConfig
from pipeline.errors import UsageError
from pipeline.run import export, retry_failed
from pipeline.simulator import FaultConfig
from tests.conftest import SimulatorFactory
from tests.output.delta.helpers import delta_config, fetch_failures, our_commits, rows

SINCE_LAST = IdsConfig(since_last_run=True, start_from=datetime(2000, 1, 1, tzinfo=UTC))


async def test_state_show_reads_the_watermark_from_the_history(
    simulator: SimulatorFactory, tmp_path: Path
) -> None:
    sim = await simulator(deals=40, seed=2)
    root = tmp_path / "deals"
    runner = CliRunner()
    result = await export(delta_config(sim, root), SINCE_LAST)
    assert result.exit_code == 0
    mark = result.manifest["watermark"]
    last = our_commits(root)[0]

    shown = runner.invoke(cli, ["state", "show", str(root)])
    assert shown.exit_code == 0, shown.output
    assert f"watermark: {mark} (run {result.run_id}, completed " in shown.output
    as_json = json.loads(runner.invoke(cli, ["state", "show", str(root), "--json"]).output)
    assert as_json["watermark"] == mark
    assert as_json["run_id"] == result.run_id
    assert as_json["table_format"] == "delta"
    assert as_json["table_version"] == last.version
    assert not (root / "_state.json").exists()


@pytest.mark.parametrize("command", [["set", "2026-11-01"], ["reset"]])
async def test_state_set_and_reset_on_delta_are_refused_clearly(
    simulator: SimulatorFactory, tmp_path: Path, command: list[str]
) -> None:
    sim = await simulator(deals=20, seed=2)
    root = tmp_path / "deals"
    await export(delta_config(sim, root), SINCE_LAST)
    before = our_commits(root)
    refused = CliRunner().invoke(cli, ["state", command[0], str(root), *command[1:]])
    assert refused.exit_code == 2
    assert "is a Delta table: its watermark is committed with each run's data" in refused.output
    assert "Traceback" not in refused.output
    assert our_commits(root) == before


async def test_state_show_of_a_table_without_a_completed_run(tmp_path: Path) -> None:
    from deltalake import write_deltalake

    from tests.deletes.helpers import deal_rows

    write_deltalake(str(tmp_path / "t"), deal_rows([1, 2]))
    shown = CliRunner().invoke(cli, ["state", "show", str(tmp_path / "t")])
    assert shown.exit_code == 0
    assert "watermark: none" in shown.output


async def test_retry_of_a_lead_table_fetches_leads(
    simulator: SimulatorFactory, tmp_path: Path
) -> None:
    sim = await simulator(deals=30, leads=60, seed=9)
    root = tmp_path / "leads"
    config = dataclasses.replace(
        delta_config(sim, root, fetch=FetchConfig(max_attempts=1)), entity="lead"
    )
    sim.set_faults(FaultConfig(error_500=1.0, methods=frozenset({"batch"})))
    wanted = sim.leads.visible_ids[:20]
    ids = IdsConfig(source=",".join(map(str, wanted)), format="range")
    first = await export(config, ids)
    assert first.exit_code == 3
    assert fetch_failures(root) == wanted
    # Every commit names the entity, the chunks too: a run that dies before its finalize
    # still leaves a table whose retry fetches leads.
    assert {c.record["entity"] for c in our_commits(root)} == {"lead"}
    sim.set_faults(FaultConfig())

    deal_config = delta_config(sim, root)  # entity "deal": the table must say otherwise
    with pytest.raises(UsageError, match="holds leads, not deals"):
        await retry_failed(deal_config, str(root), entity="deal")
    done = await retry_failed(deal_config, str(root))
    assert done.exit_code == 0
    assert done.entity == "lead"
    table = rows(root)
    assert table.column("ID").to_pylist() == wanted
    assert "STATUS_ID" in table.column_names  # a lead's field; a deal has STAGE_ID
    assert "STAGE_ID" not in table.column_names
    assert fetch_failures(root) == []
