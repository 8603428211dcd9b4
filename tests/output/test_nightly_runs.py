"""Nightly without loss (`existing_data_behavior = "new_run"`) and the state out of the data.

The real `deal-export` process against the simulator. The skipped-load scenario: deal 43 is
changed, night A exports it, nobody loads night A into the warehouse, night B runs. With
`new_run` deal 43 is still in OUT (in night A's directory); with `overwrite` it is gone, which
is what the issue reported.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import aiohttp
import duckdb
import polars as pl
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from pipeline.config import FetchConfig, LimitsConfig, OutputConfig, RunConfig, WebhookAuth
from pipeline.config_load import IdsConfig
from pipeline.run import export
from pipeline.simulator import RunningSimulator
from tests.e2e.helpers import FAST, cli_env, run_cli

DEAL = 43
DAY_S = 86_400


async def _touch(sim: RunningSimulator, ids: list[int], at: float) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.post(sim.base_url + "/_simulator/touch", json={"ids": ids, "at": at}) as resp,
    ):
        assert resp.status == 200, await resp.text()


def _env(sim: RunningSimulator) -> dict[str, str]:
    # No overlap window: the nights of a test are seconds apart, not a day.
    return cli_env(sim, DEAL_EXPORT_IDS_OVERLAP_S="0")


def _night(out: Path, behavior: str, start_from: str) -> list[str]:
    return [
        "run", "--since-last-run", "--start-from", start_from,
        "--existing-data-behavior", behavior, "--out", str(out), *FAST,
    ]  # fmt: skip


def _ids_in(root: Path) -> list[int]:
    table = ds.dataset(root, format="parquet", partitioning="hive").to_table()
    return table.column("ID").to_pylist() if "ID" in table.column_names else []


async def _skipped_load(simulator, tmp_path: Path, behavior: str) -> tuple[Path, RunningSimulator]:
    sim = await simulator(deals=150, seed=21)
    assert sim.portal.status(DEAL) == "visible"
    now = time.time()
    start_from = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now - DAY_S))
    await _touch(sim, [DEAL], now - 3600)  # deal 43 is changed, before night A
    out = tmp_path / behavior
    env = _env(sim)
    night_a = await run_cli(_night(out, behavior, start_from), env=env, cwd=tmp_path)
    assert night_a.code == 0, night_a.stderr
    assert DEAL in _ids_in(out)  # night A exported it; nobody loads it into the warehouse
    night_b = await run_cli(_night(out, behavior, start_from), env=env, cwd=tmp_path)
    assert night_b.code == 0, night_b.stderr
    return out, sim


async def test_a_skipped_load_loses_nothing_with_new_run(simulator, tmp_path: Path) -> None:
    out, _ = await _skipped_load(simulator, tmp_path, "new_run")
    runs = sorted(p for p in out.iterdir() if p.name.startswith("run_id="))
    assert len(runs) == 2, "one directory per night"
    night_a, night_b = sorted(
        runs, key=lambda p: json.loads((p / "_manifest.json").read_text())["ended_at"]
    )
    assert DEAL in _ids_in(night_a)
    assert DEAL not in _ids_in(night_b)  # night B's own delta does not hold it...
    table = ds.dataset(out, format="parquet", partitioning="hive").to_table()
    assert DEAL in table.column("ID").to_pylist()  # ...and OUT still does
    assert set(table.column("run_id").to_pylist()) <= {r.name.split("=", 1)[1] for r in runs}
    # Every reader sees every night, with the run as a column.
    glob = f"{out}/**/part-*.parquet"
    n = (
        duckdb.connect()
        .execute(
            f"select count(*) from read_parquet('{glob}', hive_partitioning=true) where ID = {DEAL}"
        )
        .fetchone()
    )
    assert n == (1,)
    frame = pl.scan_parquet(glob, hive_partitioning=True).filter(pl.col("ID") == DEAL).collect()
    assert frame.height == 1
    assert frame["_run_id"].item() == night_a.name.split("=", 1)[1]
    # The state sits beside the run directories, in none of them.
    assert (out / "_deal_export" / "state.json").is_file()
    assert not list(out.glob("run_id=*/_deal_export"))
    assert not list(out.rglob("_state.json"))


async def test_overwrite_stays_available_and_replaces_the_night(simulator, tmp_path: Path) -> None:
    out, _ = await _skipped_load(simulator, tmp_path, "overwrite")
    # What the issue reported, still what `overwrite` means: night B replaced night A.
    assert DEAL not in _ids_in(out)
    assert not list(out.glob("run_id=*"))


async def test_new_run_resumes_the_killed_night_in_its_own_directory(
    simulator, tmp_path: Path
) -> None:
    sim = await simulator(deals=150, seed=22)
    out = tmp_path / "out"
    args = ["run", "--ids", "1-150", "--ids-format", "range", "--chunk-size", "40"]
    args += ["--existing-data-behavior", "new_run", "--out", str(out), *FAST]
    first = await run_cli(args, env=_env(sim), cwd=tmp_path)
    assert first.code == 0, first.stderr
    (only,) = out.glob("run_id=*")
    # An unfinished night (as a kill leaves it): its _SUCCESS and manifest gone, a chunk lost.
    (only / "_SUCCESS").unlink()
    (only / "_checkpoints" / "chunk-000001.json").unlink()
    again = await run_cli(args, env=_env(sim), cwd=tmp_path)
    assert again.code == 0, again.stderr
    assert list(out.glob("run_id=*")) == [only], "the unfinished night is resumed, not doubled"
    ids = _ids_in(out)
    assert len(ids) == len(set(ids)) == len(set(sim.portal.visible_ids) & set(range(1, 151)))
    # A night of another input starts a directory of its own; the finished one stays.
    other = [*args[:2], "1-60", *args[3:]]
    third = await run_cli(other, env=_env(sim), cwd=tmp_path)
    assert third.code == 0, third.stderr
    assert len(list(out.glob("run_id=*"))) == 2


async def test_layouts_are_not_mixed(simulator, tmp_path: Path) -> None:
    sim = await simulator(deals=30, seed=23)
    flat = tmp_path / "flat"
    base = ["run", "--ids", "1-30", "--ids-format", "range", *FAST]
    done = await run_cli([*base, "--out", str(flat)], env=_env(sim), cwd=tmp_path)
    assert done.code == 0, done.stderr
    mixed = await run_cli(
        [*base, "--out", str(flat), "--existing-data-behavior", "new_run"],
        env=_env(sim),
        cwd=tmp_path,
    )
    assert mixed.code != 0
    assert "holds a single export" in mixed.stderr
    assert "Traceback" not in mixed.stderr
    runs = tmp_path / "runs"
    done = await run_cli(
        [*base, "--out", str(runs), "--existing-data-behavior", "new_run"],
        env=_env(sim),
        cwd=tmp_path,
    )
    assert done.code == 0, done.stderr
    for behavior in ("overwrite", "resume", "error"):
        refused = await run_cli(
            [*base, "--out", str(runs), "--existing-data-behavior", behavior],
            env=_env(sim),
            cwd=tmp_path,
        )
        assert refused.code != 0
        assert "one directory per run" in refused.stderr
    assert len(list(runs.glob("run_id=*"))) == 1


@pytest.mark.parametrize("behavior", ["overwrite", "new_run"])
async def test_state_commands_work_on_either_layout(
    simulator, tmp_path: Path, behavior: str
) -> None:
    sim = await simulator(deals=40, seed=24)
    out = tmp_path / "out"
    env = _env(sim)
    done = await run_cli(_night(out, behavior, "2000-01-01"), env=env, cwd=tmp_path)
    assert done.code == 0, done.stderr
    shown = await run_cli(["state", "show", str(out), "--json"], env=env, cwd=tmp_path)
    assert shown.code == 0, shown.stderr
    mark = json.loads(shown.stdout)["watermark"]
    assert mark is not None
    moved = await run_cli(["state", "set", str(out), "2026-11-01"], env=env, cwd=tmp_path)
    assert moved.code == 0, moved.stderr
    state = json.loads((out / "_deal_export" / "state.json").read_text())
    assert state["watermark"] == "2026-11-01T00:00:00+00:00"
    reset = await run_cli(["state", "reset", str(out)], env=env, cwd=tmp_path)
    assert reset.code == 0, reset.stderr
    shown = await run_cli(["state", "show", str(out)], env=env, cwd=tmp_path)
    assert "watermark: none" in shown.stdout


async def test_an_older_outputs_state_is_read_and_migrated(simulator, tmp_path: Path) -> None:
    sim = await simulator(deals=60, seed=25)
    out = tmp_path / "out"
    env = _env(sim)
    done = await run_cli(_night(out, "overwrite", "2000-01-01"), env=env, cwd=tmp_path)
    assert done.code == 0, done.stderr
    # Lay the output out as the previous release did: the state files in the root.
    state = json.loads((out / "_deal_export" / "state.json").read_text())
    shutil.move(out / "_deal_export" / "state.json", out / "_state.json")
    shutil.move(out / "_deal_export" / "input.parquet", out / "_input.parquet")
    (out / "_deal_export").rmdir()
    shown = await run_cli(["state", "show", str(out), "--json"], env=env, cwd=tmp_path)
    assert json.loads(shown.stdout)["watermark"] == state["watermark"]

    await _touch(sim, [DEAL], time.time() + 5)  # changed after that run
    night = await run_cli(_night(out, "overwrite", "2000-01-01"), env=env, cwd=tmp_path)
    assert night.code == 0, night.stderr
    assert _ids_in(out) == [DEAL], "the run continued from the legacy watermark"
    assert not (out / "_state.json").exists()
    assert not (out / "_input.parquet").exists()
    migrated = json.loads((out / "_deal_export" / "state.json").read_text())
    # The night's own state, not the legacy file moved: its run, and a watermark no older (two
    # runs within one second share one, as watermarks are whole seconds).
    assert migrated["run_id"] != state["run_id"]
    assert migrated["watermark"] >= state["watermark"]
    assert pq.read_table(out / "_deal_export" / "input.parquet").column("ID").to_pylist() == [DEAL]


async def test_retry_of_a_new_run_output_works_on_its_latest_night(
    simulator, tmp_path: Path
) -> None:
    from tests.output.test_lineage import _failing

    sim = await simulator(deals=80, seed=26)
    out = tmp_path / "out"
    config = RunConfig(
        auth=WebhookAuth(sim.webhook_url),
        output=OutputConfig(root=str(out), chunk_size=30, existing_data_behavior="new_run"),
        limits=LimitsConfig(rate=0, operating_budget_s=None),
        fetch=FetchConfig(max_attempts=2, backoff_base_s=0, backoff_max_s=0),
    )
    ids = IdsConfig(source="1-80", format="range")
    assert (await export(config, ids)).exit_code == 0
    flaky = set(sim.portal.visible_ids[:4])
    undo = _failing(sim, flaky)
    second = await export(config, ids)
    undo()
    assert second.counts.failed_retryable
    nights = sorted(out.glob("run_id=*"), key=lambda p: p.stat().st_mtime)
    assert len(nights) == 2
    latest = out / f"run_id={second.run_id}"
    assert latest in nights

    done = await run_cli(["retry", str(out), *FAST], env=cli_env(sim), cwd=tmp_path)
    assert done.code == 0, done.stderr
    assert set(_ids_in(latest)) == set(sim.portal.visible_ids) & set(range(1, 81))
    assert len(list(out.glob("run_id=*"))) == 2
    manifest = json.loads((latest / "_manifest.json").read_text())
    assert manifest["counts"]["retryable_failed"] == 0
