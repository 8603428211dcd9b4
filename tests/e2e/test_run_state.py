"""Run state that never runs ahead of the data, verdicts that survive a resume, drift reported.

In-process `export()` over real sockets against the simulator; crashes are injected into the
output Store (a write that never lands), which is what a kill between two writes leaves.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from pipeline.config import FetchConfig, LimitsConfig, OutputConfig, RunConfig, WebhookAuth
from pipeline.config_load import IdsConfig
from pipeline.output import OutputRoot, read_watermark
from pipeline.output.root import STATE_FILE
from pipeline.output.store import Store
from pipeline.run import RunResult, export, retry_failed
from pipeline.simulator import FaultConfig, RunningSimulator
from pipeline.simulator.methods import MethodError
from pipeline.simulator.php import php_int
from pipeline.summary import render_summary
from tests.e2e.helpers import accounted, read_data

UNLIMITED = LimitsConfig(rate=0, operating_budget_s=None)
SINCE_2000 = IdsConfig(modified_since=datetime(2000, 1, 1, tzinfo=UTC))
SINCE_LAST = IdsConfig(since_last_run=True)


class Crash(BaseException):
    """Stands for the process dying: nothing after it runs, no handler swallows it."""


def _config(
    sim: RunningSimulator, root: Path, *, behavior: str = "overwrite", **fetch: Any
) -> RunConfig:
    return RunConfig(
        auth=WebhookAuth(sim.webhook_url),
        output=OutputConfig(root=str(root), existing_data_behavior=behavior, chunk_size=40),  # type: ignore[arg-type]
        limits=UNLIMITED,
        fetch=FetchConfig(**fetch),
    )


@pytest.fixture
def finalize_writes(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Count the Store writes `finalize` makes, and crash before write number `crash_at`."""
    plan: dict[str, Any] = {"crash_at": None, "names": []}
    real_finalize = OutputRoot.finalize
    real_write = Store.write_atomic

    def finalize(self: OutputRoot, **kw: Any) -> dict[str, Any]:
        plan["active"] = True
        try:
            return real_finalize(self, **kw)
        finally:
            plan["active"] = False

    def write(self: Store, rel: str, data: Any) -> None:
        if plan.get("active"):
            if plan["crash_at"] == len(plan["names"]):
                raise Crash(rel)
            plan["names"].append(rel)
        real_write(self, rel, data)

    monkeypatch.setattr(OutputRoot, "finalize", finalize)
    monkeypatch.setattr(Store, "write_atomic", write)
    return plan


def _watermark_writes() -> list[str]:
    # Every write finalize makes for a completed incremental run, in order.
    return ["_run.json", "_manifest.json", "_SUCCESS", STATE_FILE]


@pytest.mark.parametrize("crash_at", range(len(_watermark_writes())))
async def test_a_crash_between_finalize_writes_keeps_the_old_watermark(
    simulator, tmp_path: Path, finalize_writes: dict[str, Any], crash_at: int
) -> None:
    sim = await simulator(deals=150, seed=21)
    root = tmp_path / "out"
    config = _config(sim, root)
    first = await export(config, SINCE_2000)
    assert first.exit_code == 0
    assert finalize_writes["names"] == _watermark_writes(), "the test must cover every write"
    old = read_watermark(str(root))
    assert old is not None

    changed = sim.portal.visible_ids[10:25]
    sim.touch(changed)
    finalize_writes["names"].clear()
    finalize_writes["crash_at"] = crash_at
    with pytest.raises(Crash):
        await export(config, SINCE_LAST)
    assert read_watermark(str(root)) == old
    assert json.loads((root / STATE_FILE).read_text())["run_id"] == first.run_id

    finalize_writes["crash_at"] = None
    again = await export(config, SINCE_LAST)
    assert again.exit_code == 0
    new = read_watermark(str(root))
    assert new is not None
    assert new >= old
    assert json.loads((root / STATE_FILE).read_text())["run_id"] == again.run_id
    data_ids, fetch_ids = accounted(root)
    assert set(changed) <= set(data_ids)
    assert len(data_ids) == len(set(data_ids))
    assert not set(data_ids) & set(fetch_ids)
    manifest = json.loads((root / "_manifest.json").read_text())
    assert manifest["completed"]
    assert (root / "_SUCCESS").exists()


async def test_a_legacy_state_written_before_the_data_is_not_trusted(
    simulator, tmp_path: Path
) -> None:
    sim = await simulator(deals=60, seed=2)
    root = tmp_path / "out"
    assert (await export(_config(sim, root), SINCE_2000)).exit_code == 0
    state = json.loads((root / STATE_FILE).read_text())
    legacy = {k: state[k] for k in ("watermark", "run_id", "at")}  # format 1: no "format"
    (root / STATE_FILE).write_text(json.dumps(legacy))
    assert read_watermark(str(root)) == state["watermark"]  # its run's _SUCCESS is there
    (root / "_SUCCESS").unlink()  # as if the old code died between state and _SUCCESS
    assert read_watermark(str(root)) is None


async def test_schema_fingerprint_is_stable_across_retry(simulator, tmp_path: Path) -> None:
    sim = await simulator(deals=120, seed=5)
    root = tmp_path / "out"
    sim.set_faults(FaultConfig(error_500=1.0, methods=frozenset({"batch"})))
    ids = IdsConfig(source="1-120", format="range")
    first = await export(_config(sim, root, max_attempts=1, concurrency=1), ids)
    assert first.exit_code == 3, "the test needs retryable failures to retry"
    before = json.loads((root / "_manifest.json").read_text())["schema_fingerprint"]
    assert before.startswith("sha256:")
    sim.set_faults(FaultConfig())
    retried = await retry_failed(_config(sim, root), str(root))
    assert retried.exit_code == 0
    after = json.loads((root / "_manifest.json").read_text())
    assert after["schema_fingerprint"] == before
    assert after["counts"]["failed_by_reason"]["retryable"] == {}


# -- a resumed run reaches the same verdict as a fresh one ----------------------------------


class _Stop(BaseException):
    pass


async def _export_killed_after_chunks(
    config: RunConfig, ids: IdsConfig, chunks: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = OutputRoot.write_chunk
    done = 0

    def write_chunk(self: OutputRoot, *args: Any, **kw: Any) -> dict[str, Any]:
        nonlocal done
        if done == chunks:
            raise _Stop
        done += 1
        return real(self, *args, **kw)

    with monkeypatch.context() as patched:
        patched.setattr(OutputRoot, "write_chunk", write_chunk)
        with pytest.raises(_Stop):
            await export(config, ids)


def _verdict(result: RunResult) -> tuple[int, list[str]]:
    lines = render_summary(result.counts, output="OUT", seconds=1.0)
    return result.exit_code, lines[1:]  # line 0 holds the timing


def _fail_transiently(sim: RunningSimulator, ids: set[int]) -> None:
    """Make `crm.deal.get` of `ids` answer a server fault, the same way on every attempt and in
    every run (the simulator's own faults hit request numbers, which a resume shifts)."""
    api = sim.sim.api
    real = api._methods["crm.deal.get"]

    def deal_get(params: dict[Any, Any]) -> Any:
        if php_int(params.get("ID", params.get("id"))) in ids:
            raise MethodError(500, "INTERNAL_SERVER_ERROR", "Internal server error")
        return real(params)

    api._methods["crm.deal.get"] = deal_get


@pytest.mark.parametrize("portal", ["all-denied", "not-found-hidden-transient"])
async def test_resumed_run_has_the_fresh_runs_verdict(
    simulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, portal: str
) -> None:
    denied = portal == "all-denied"
    sim = await simulator(deals=200, seed=13, hidden_fraction=0.1, can_read_deals=not denied)
    if not denied:
        _fail_transiently(sim, set(sim.portal.visible_ids[::9]))
    # Past the end of the portal: never existed, "Not found".
    ids = IdsConfig(source=f"1-{sim.portal.max_id + 30}", format="range")
    settings = {"max_attempts": 1, "batch_size": 10}
    fresh = await export(_config(sim, tmp_path / "fresh", **settings), ids)
    resumed_config = _config(sim, tmp_path / "resumed", behavior="error", **settings)
    await _export_killed_after_chunks(resumed_config, ids, 2, monkeypatch)
    resumed = await export(resumed_config, ids)
    assert resumed.resumed
    assert resumed.chunks_skipped == 2
    assert _verdict(resumed) == _verdict(fresh)
    assert dict(resumed.counts.failed_permanent) == dict(fresh.counts.failed_permanent)
    assert dict(resumed.counts.failed_retryable) == dict(fresh.counts.failed_retryable)
    if denied:
        assert fresh.exit_code == 1
    else:
        assert fresh.exit_code == 3
        assert {"Not found", "Access denied."} <= set(fresh.counts.failed_permanent)
        assert sum(fresh.counts.failed_retryable.values()) == len(sim.portal.visible_ids[::9])


# -- schema drift in every run, overwrite included -------------------------------------------


async def test_drift_is_reported_in_overwrite_mode(
    simulator, tmp_path: Path, pipeline_logs: list[logging.LogRecord]
) -> None:
    before = await simulator(deals=80, seed=3, user_fields=("string", "money"))
    root = tmp_path / "out"
    ids = IdsConfig(source="1-80", format="range")
    first = await export(_config(before, root), ids)
    assert first.exit_code == 0
    assert first.drift == []
    # The same portal a day later, with one user field added.
    after = await simulator(deals=80, seed=3, user_fields=("string", "money", "url"))
    second = await export(_config(after, root), ids)
    assert second.exit_code == 0
    added = "field added: UF_CRM_1721244500008"
    assert second.drift == [added]
    summary = "\n".join(render_summary(second.counts, output="o", seconds=1, drift=second.drift))
    assert added in summary
    assert any(added in r.getMessage() for r in pipeline_logs if r.levelno == logging.WARNING)
    manifest = json.loads((root / "_manifest.json").read_text())
    assert manifest["schema_drift"]["added"] == ["UF_CRM_1721244500008"]
    assert "UF_CRM_1721244500008" in read_data(root).column_names
    # The next run compares with this one: no drift any more.
    third = await export(_config(after, root), ids)
    assert third.drift == []
    assert not json.loads((root / "_manifest.json").read_text())["schema_drift"]
