"""`deal-export reconcile OUT` through click's CliRunner, against a simulator served from a
thread of this process (the CLI runs its own event loop)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from pipeline.cli import cli
from pipeline.simulator import RunningSimulator, SimulatorConfig, running_simulator

from .helpers import make_table, rows_by_id


@contextlib.contextmanager
def threaded_simulator(config: SimulatorConfig) -> Iterator[RunningSimulator]:
    """A simulator on its own event loop in a daemon thread, stopped on exit (bounded waits)."""
    ready = threading.Event()
    box: dict[str, object] = {}

    async def serve() -> None:
        stop = asyncio.Event()
        box["stop"] = stop
        box["loop"] = asyncio.get_running_loop()
        async with running_simulator(config) as sim:
            box["sim"] = sim
            ready.set()
            await stop.wait()

    thread = threading.Thread(target=lambda: asyncio.run(serve()), daemon=True)
    thread.start()
    assert ready.wait(timeout=30), "the simulator did not start"
    try:
        sim = box["sim"]
        assert isinstance(sim, RunningSimulator)
        yield sim
    finally:
        loop = box["loop"]
        assert isinstance(loop, asyncio.AbstractEventLoop)
        stop = box["stop"]
        assert isinstance(stop, asyncio.Event)
        loop.call_soon_threadsafe(stop.set)
        thread.join(timeout=30)


ARGS = ["--rate", "0", "--operating-budget", "off", "--max-attempts", "2"]


def test_reconcile_marks_and_reports_one_line(tmp_path: Path) -> None:
    config = SimulatorConfig(deals=200, seed=4, hidden_fraction=0.05, deleted_fraction=0.0)
    with threaded_simulator(config) as sim:
        visible, hidden = sim.portal.visible_ids, sim.portal.hidden_ids[:2]
        uri = make_table(tmp_path / "deals", sorted(visible + hidden))
        gone = visible[:3]
        sim.sim.portal.delete(gone)
        env = {"BITRIX24_WEBHOOK_URL": sim.webhook_url}
        result = CliRunner().invoke(cli, ["reconcile", uri, *ARGS], env=env)
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    assert lines == [
        f"reconciled {uri}: listed {len(visible) - 3} deals on the portal, "
        f"5 of {len(visible) + 2} live rows gone from the listing, 3 marked deleted, "
        "2 denied (rows kept)"
    ]
    rows = rows_by_id(uri)
    assert sorted(i for i, mark in rows.items() if mark is not None) == gone
    assert sim.secret not in result.output


def test_reconcile_json_and_hard_delete(tmp_path: Path) -> None:
    config = SimulatorConfig(deals=120, seed=6, hidden_fraction=0.0, deleted_fraction=0.0)
    with threaded_simulator(config) as sim:
        visible = sim.portal.visible_ids
        uri = make_table(tmp_path / "deals", visible)
        sim.sim.portal.delete(visible[-2:])
        env = {"BITRIX24_WEBHOOK_URL": sim.webhook_url}
        args = ["reconcile", uri, "--hard-delete", "--log-format", "json", *ARGS]
        result = CliRunner().invoke(cli, args, env=env)
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout.strip().splitlines()[-1])
    assert record["event"] == "reconcile_finished"
    logs = [json.loads(line) for line in result.stderr.splitlines() if line.strip()]
    assert "deletes_listed" in {line["event"] for line in logs}
    assert {line["run_id"] for line in logs} == {record["run_id"]}
    assert (record["deleted"], record["hard_delete"], record["denied"]) == (2, True, 0)
    assert record["exit_code"] == 0
    assert sorted(rows_by_id(uri)) == visible[:-2]


@pytest.mark.parametrize("json_logs", [False, True])
def test_a_folder_output_is_a_clear_error(tmp_path: Path, json_logs: bool) -> None:
    (tmp_path / "deals").mkdir()
    env = {"BITRIX24_WEBHOOK_URL": "http://127.0.0.1:9/rest/1/s3cretvalue42/"}
    args = ["reconcile", str(tmp_path / "deals"), *ARGS]
    if json_logs:
        args += ["--log-format", "json"]
    result = CliRunner().invoke(cli, args, env=env)
    assert result.exit_code == 1
    assert "needs the Delta sink" in result.output
    assert "Traceback" not in result.output
    assert "s3cretvalue42" not in result.output


def test_a_table_another_run_holds_is_refused_and_left_alone(tmp_path: Path) -> None:
    """A run (or compact) holding the output's lock: reconcile says so and changes nothing,
    without asking the portal; once the lock is free the same command goes through."""
    from pipeline.output.delta.sink import lock_root

    config = SimulatorConfig(deals=60, seed=5, hidden_fraction=0.0, deleted_fraction=0.0)
    with threaded_simulator(config) as sim:
        visible = sim.portal.visible_ids
        uri = make_table(tmp_path / "deals", sorted(visible))
        sim.sim.portal.delete(visible[:2])
        env = {"BITRIX24_WEBHOOK_URL": sim.webhook_url}
        held = lock_root(uri, "another-run")
        asked = sim.sim.stats()["requests"]
        try:
            refused = CliRunner().invoke(cli, ["reconcile", uri, *ARGS], env=env)
        finally:
            held.release()
        assert refused.exit_code == 1, refused.output
        assert "is locked by" in refused.output
        assert sim.sim.stats()["requests"] == asked
        assert "Traceback" not in refused.output
        assert all(mark is None for mark in rows_by_id(uri).values())
        done = CliRunner().invoke(cli, ["reconcile", uri, *ARGS], env=env)
    assert done.exit_code == 0, done.output
    marked = sorted(i for i, mark in rows_by_id(uri).items() if mark is not None)
    assert marked == sorted(visible[:2])
    assert not (tmp_path / "deals" / "_lock").exists()
