"""The command line on a Delta output: `run --table-format delta`, `retry OUT`, `compact OUT`."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.simulator import FaultConfig
from tests.e2e.helpers import FAST, cli_env, run_cli
from tests.output.delta.helpers import fetch_failures, our_commits, rows

pytestmark = pytest.mark.slow


async def test_run_retry_and_compact_from_the_command_line(simulator, tmp_path: Path) -> None:
    sim = await simulator(deals=60, seed=4)
    env = cli_env(sim)
    root = tmp_path / "deals"
    run = ["run", "--table-format", "delta", "--schema-contract", "freeze", "--out", str(root)]
    ids = ["--ids", "1-60", "--ids-format", "range"]
    sim.set_faults(FaultConfig(error_500=1.0, methods=frozenset({"batch"})))
    failed = await run_cli([*run, *ids, *FAST, "--max-attempts", "1"], env=env, cwd=tmp_path)
    assert failed.code == 3, failed.stderr
    assert fetch_failures(root) == list(range(1, 61))

    sim.set_faults(FaultConfig())
    retried = await run_cli(["retry", str(root), *FAST], env=env, cwd=tmp_path)
    assert retried.code == 0, retried.stderr
    visible = sorted(i for i in sim.portal.visible_ids if i <= 60)
    assert rows(root).column("ID").to_pylist() == visible
    assert set(fetch_failures(root)) == set(range(1, 61)) - set(visible)
    assert our_commits(root)[0].record["output"]["schema_contract"] == "freeze"

    compacted = await run_cli(["compact", str(root)], env=env, cwd=tmp_path)
    assert compacted.code == 0, compacted.stderr
    assert "data table:" in compacted.stdout
    assert rows(root).column("ID").to_pylist() == visible

    folder = await run_cli(["run", "--out", str(root), *ids, *FAST], env=env, cwd=tmp_path)
    assert folder.code == 2
    assert "holds a Delta table" in folder.stderr
    assert "Traceback" not in folder.stderr
