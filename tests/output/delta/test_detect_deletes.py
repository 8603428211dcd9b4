"""`run --detect-deletes` on a Delta output: after the run's commit, the same client lists every
ID, marks the deals the portal deleted, and records the rows it could not refresh."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path

import pyarrow.compute as pc
import pytest

from pipeline.config import FetchConfig
from pipeline.config_load import IdsConfig
from pipeline.errors import PipelineError, UsageError
from pipeline.run import export
from pipeline.simulator import FaultConfig
from tests.conftest import SimulatorFactory
from tests.e2e.helpers import FAST, cli_env, run_cli
from tests.output.delta.helpers import delta_config, errors_of, fetch_failures, rows

SINCE_LAST = IdsConfig(since_last_run=True, start_from=datetime(2000, 1, 1, tzinfo=UTC))


def _live(root: Path) -> list[int]:
    table = rows(root)
    live = table.filter(pc.is_null(table.column("_deleted_at")))
    return sorted(live.column("ID").to_pylist())


def _marked(root: Path) -> list[int]:
    table = rows(root)
    gone = table.filter(pc.is_valid(table.column("_deleted_at")))
    return sorted(gone.column("ID").to_pylist())


async def test_marks_deleted_keeps_denied_and_records_why(
    simulator: SimulatorFactory, tmp_path: Path
) -> None:
    sim = await simulator(deals=120, seed=5, hidden_fraction=0.0, deleted_fraction=0.0)
    root = tmp_path / "deals"
    first = await export(delta_config(sim, root, detect_deletes=True), SINCE_LAST)
    assert first.exit_code == 0
    assert first.deletions["gone"] == 0
    assert first.deletions["deleted"] == 0
    visible = sim.portal.visible_ids
    deleted, hidden = visible[3:6], visible[10:12]
    sim.portal.delete(deleted)
    sim.portal.hide(hidden)
    sim.portal.touch(visible[20:25], time.time() + 60)

    second = await export(delta_config(sim, root, detect_deletes=True), SINCE_LAST)

    assert second.exit_code == 0  # Access denied is not a passing failure
    assert second.counts.exported == 5
    assert second.deletions["listed"] == len(visible) - 5
    assert second.deletions["gone"] == 5
    assert second.deletions["deleted"] == 3
    assert second.deletions["denied"] == 2
    assert _marked(root) == deleted
    assert _live(root) == sorted(set(visible) - set(deleted))  # denied rows stay
    errors = errors_of(root)
    assert sorted(errors.column("id").to_pylist()) == hidden
    assert set(errors.column("message").to_pylist()) <= {"Access denied", "Access denied."}


async def test_hard_delete_removes_the_rows(simulator: SimulatorFactory, tmp_path: Path) -> None:
    sim = await simulator(deals=60, seed=6, hidden_fraction=0.0, deleted_fraction=0.0)
    root = tmp_path / "deals"
    await export(delta_config(sim, root), SINCE_LAST)
    gone = sim.portal.visible_ids[:4]
    sim.portal.delete(gone)
    result = await export(
        delta_config(sim, root, detect_deletes=True, hard_delete=True), SINCE_LAST
    )
    assert result.deletions["deleted"] == 4
    assert result.deletions["hard_delete"] is True
    assert sorted(rows(root).column("ID").to_pylist()) == sim.portal.visible_ids
    assert _marked(root) == []


async def test_a_failure_of_a_deal_deleted_later_leaves_the_errors_table(
    simulator: SimulatorFactory, tmp_path: Path
) -> None:
    """A deal that failed and was then deleted is never discovered again: the recheck of the
    errors table is what settles it (else the watermark would stay held for ever)."""
    sim = await simulator(deals=60, seed=8, hidden_fraction=0.0, deleted_fraction=0.0)
    root = tmp_path / "deals"
    await export(delta_config(sim, root), SINCE_LAST)
    victim = sim.portal.visible_ids[7]
    sim.portal.touch([victim], time.time() + 60)
    sim.set_faults(FaultConfig(error_500=1.0, methods=frozenset({"batch"})))
    failed = await export(delta_config(sim, root, fetch=FetchConfig(max_attempts=1)), SINCE_LAST)
    assert failed.exit_code == 3
    assert fetch_failures(root) == [victim]
    sim.set_faults(FaultConfig())
    sim.portal.delete([victim])
    settled = await export(delta_config(sim, root, detect_deletes=True), SINCE_LAST)
    assert settled.exit_code == 0
    assert fetch_failures(root) == []
    assert _marked(root) == [victim]


async def test_listed_late_and_readable_again_are_refreshed(
    simulator: SimulatorFactory, tmp_path: Path
) -> None:
    """A denied deal that becomes readable again leaves the errors table with its new values."""
    sim = await simulator(deals=60, seed=9, hidden_fraction=0.0, deleted_fraction=0.0)
    root = tmp_path / "deals"
    await export(delta_config(sim, root), SINCE_LAST)
    deal = sim.portal.visible_ids[2]
    sim.portal.hide([deal])
    denied = await export(delta_config(sim, root, detect_deletes=True), SINCE_LAST)
    assert denied.deletions["denied"] == 1
    assert fetch_failures(root) == [deal]
    sim.portal.reveal([deal])
    back = await export(delta_config(sim, root, detect_deletes=True), SINCE_LAST)
    assert back.exit_code == 0
    assert back.deletions["rechecked"] == 1
    assert fetch_failures(root) == []
    assert deal in _live(root)


async def test_folder_output_is_a_usage_error_before_any_request(
    simulator: SimulatorFactory, tmp_path: Path
) -> None:
    sim = await simulator(deals=20, seed=1)
    config = delta_config(sim, tmp_path / "out", table_format="parquet", detect_deletes=True)
    before = sim.stats()
    with pytest.raises(UsageError, match="needs a Delta output"):
        await export(config, SINCE_LAST)
    assert sim.stats() == before
    with pytest.raises(UsageError, match="only with --detect-deletes"):
        await export(delta_config(sim, tmp_path / "d", hard_delete=True), SINCE_LAST)


@pytest.mark.slow
async def test_cli_summary_text_and_json(simulator: SimulatorFactory, tmp_path: Path) -> None:
    sim = await simulator(deals=50, seed=3, hidden_fraction=0.0, deleted_fraction=0.0)
    root = tmp_path / "deals"
    base = ["run", "--table-format", "delta", "--out", str(root), "--since-last-run"]
    args = [*base, "--start-from", "2000-01-01T00:00:00+00:00", "--detect-deletes", *FAST]
    env = cli_env(sim)
    first = await run_cli(args, env=env, cwd=tmp_path)
    assert first.code == 0, first.stderr
    assert "listed" in first.stdout
    assert "marked deleted" in first.stdout
    sim.portal.delete(sim.portal.visible_ids[:2])
    second = await run_cli([*args, "--log-format", "json"], env=env, cwd=tmp_path)
    assert second.code == 0, second.stderr
    record = json.loads(second.stdout.strip().splitlines()[-1])
    deletions = record["deletions"]
    assert (deletions["gone"], deletions["deleted"], deletions["denied"]) == (2, 2, 0)
    assert deletions["listed"] == len(sim.portal.visible_ids)
    assert sim.webhook_url not in second.stdout

    folder = await run_cli(
        ["run", "--out", str(tmp_path / "f"), "--ids", "1-5", "--detect-deletes", *FAST],
        env=env,
        cwd=tmp_path,
    )
    assert folder.code == 2
    assert "needs a Delta output" in folder.stderr
    assert "Traceback" not in folder.stderr


async def test_python_api_takes_detect_deletes(
    simulator: SimulatorFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipeline.api import export_async

    sim = await simulator(deals=40, seed=4, hidden_fraction=0.0, deleted_fraction=0.0)
    root = tmp_path / "deals"
    common = dict(
        out=root, webhook_url=sim.webhook_url, rate=0, operating_budget="off", table_format="delta"
    )
    first = await export_async(
        modified_since=datetime(2000, 1, 1, tzinfo=UTC),
        **common,  # type: ignore[arg-type]
    )
    assert first.ok
    assert first.exported == len(sim.portal.visible_ids)
    # The watermark of a Delta output comes from its commit history.
    assert first.watermark is not None
    sim.portal.delete(sim.portal.visible_ids[:3])
    result = await export_async(
        id_range="1-2",
        detect_deletes=True,
        hard_delete=True,
        **common,  # type: ignore[arg-type]
    )
    assert result.ok
    assert result.deletions["deleted"] == 3
    assert result.as_dict()["deletions"]["hard_delete"]
    assert sorted(rows(root).column("ID").to_pylist()) == sim.portal.visible_ids


async def test_a_failed_listing_says_the_run_is_committed(
    simulator: SimulatorFactory, tmp_path: Path
) -> None:
    sim = await simulator(deals=40, seed=10, hidden_fraction=0.0, deleted_fraction=0.0)
    root = tmp_path / "deals"
    await export(delta_config(sim, root), SINCE_LAST)
    sim.set_faults(FaultConfig(error_500=1.0, methods=frozenset({"batch"})))
    config = delta_config(sim, root, detect_deletes=True, fetch=FetchConfig(max_attempts=1))
    with pytest.raises(PipelineError, match="deletions were not looked for") as caught:
        await export(config, IdsConfig(source="1-5", format="range"))
    assert "are committed to" in str(caught.value)
    assert fetch_failures(root) == [i for i in range(1, 6) if i in sim.portal.visible_ids]
    assert _marked(root) == []
