"""The real `deal-export` process against the simulator: every ID exactly once, values intact."""

from __future__ import annotations

import asyncio
import json
import random
import signal
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import polars as pl
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from pipeline.normalise import DealSchema, normalise_deals
from pipeline.simulator import FaultConfig, RunningSimulator
from tests.e2e.helpers import (
    FAST,
    accounted,
    assert_each_once,
    cli_env,
    files_containing,
    read_data,
    read_sidecar,
    run_cli,
    start_cli,
    visible_junk,
)

FAULT_MIX = FaultConfig(
    error_500=0.05, html_502=0.02, reset=0.01, truncated=0.01, slow=0.01, slow_s=0.2, seed=3
)


def _ids_file(
    tmp_path: Path, sim: RunningSimulator, extra: list[str] = ()
) -> tuple[Path, set[int]]:
    wanted = list(range(1, sim.portal.max_id + 40))  # past the end: never existed
    rng = random.Random(5)
    lines = [str(i) for i in wanted] + [str(rng.choice(wanted)) for _ in range(50)] + list(extra)
    rng.shuffle(lines)
    path = tmp_path / "ids.txt"
    path.write_text("\n".join(lines) + "\n")
    return path, set(wanted)


async def test_run_under_faults_accounts_every_id_once_and_values_round_trip(
    simulator, tmp_path: Path
) -> None:
    sim = await simulator(deals=1200, seed=11, faults=FAULT_MIX)
    ids_path, wanted = _ids_file(tmp_path, sim, extra=("12abc", "-4", "0"))
    out = tmp_path / "out"
    # One command per deal (`--strategy get`): enough requests for the fault mix to fire.
    get_fast = ["--strategy", "get", *FAST]
    done = await run_cli(
        ["run", "--ids", str(ids_path), "--out", str(out), "--chunk-size", "300", *get_fast],
        env=cli_env(sim),
        cwd=tmp_path,
    )
    assert done.code == 0, done.stderr
    assert_each_once(out, wanted)
    data_ids, _ = accounted(out)
    assert set(data_ids) == set(sim.portal.visible_ids) & wanted

    side = read_sidecar(out)
    inputs = side.filter(pc.equal(side.column("stage"), "input"))
    assert sorted(inputs.column("raw_value").to_pylist()) == ["-4", "0", "12abc"]
    assert all(line is not None for line in inputs.column("line").to_pylist())
    faults = sim.stats()["faults"]
    assert sum(faults.values()) > 0, "the fault mix never fired: the test proves nothing"

    # Values equal the simulator's source of truth, typed the same way.
    schema = DealSchema.from_fields(sim.portal.fields())
    truth_ids = sorted(data_ids)
    expected, _ = normalise_deals([sim.portal.deal_wire(i) for i in truth_ids], schema)
    got = read_data(out).sort_by("ID").select(expected.column_names)
    assert got.to_pylist() == expected.to_pylist()

    manifest = json.loads((out / "_manifest.json").read_text())
    assert manifest["completed"] is True
    assert manifest["counts"]["exported"] == len(data_ids)
    assert (out / "_SUCCESS").exists()
    assert not visible_junk(out)
    assert not files_containing(out, sim.secret)
    assert sim.secret not in done.stdout + done.stderr


async def test_dataset_reads_in_duckdb_and_polars_with_partitions(
    simulator, tmp_path: Path
) -> None:
    sim = await simulator(deals=300, seed=2)
    out = tmp_path / "out"
    done = await run_cli(
        ["run", "--ids", "1-400", "--ids-format", "range", "--out", str(out), *FAST],
        env=cli_env(sim),
        cwd=tmp_path,
    )
    assert done.code == 0, done.stderr
    exported = read_data(out).num_rows
    glob = str(out / "**" / "part-*.parquet")
    con = duckdb.connect()
    n, months = con.execute(
        f"select count(*), count(distinct DATE_CREATE_month) from read_parquet('{glob}', "
        "hive_partitioning=true)"
    ).fetchone()
    assert n == exported
    assert months > 1
    frame = pl.scan_parquet(glob, hive_partitioning=True).collect()
    assert frame.height == exported
    assert "DATE_CREATE_month" in frame.columns


async def test_kill_nine_and_resume_ends_exactly_once(simulator, tmp_path: Path) -> None:
    sim = await simulator(deals=3000, seed=4)
    ids_path, wanted = _ids_file(tmp_path, sim)
    out = tmp_path / "out"
    # Paced so that a run lasts a few seconds and the kills land mid-work.
    args = [
        "run",
        "--ids",
        str(ids_path),
        "--out",
        str(out),
        "--chunk-size",
        "150",
        "--rate",
        "10",
        "--burst",
        "2",
        "--headroom",
        "0",
        "--operating-budget",
        "off",
        "--concurrency",
        "2",
        "--no-progress",
    ]
    rng = random.Random(9)
    kills = 0
    for _ in range(12):
        proc = await start_cli(args, env=cli_env(sim), cwd=tmp_path)
        try:
            await asyncio.wait_for(proc.wait(), rng.uniform(0.6, 1.4))
        except TimeoutError:
            proc.send_signal(signal.SIGKILL)
            await proc.wait()
            kills += 1
        if proc.returncode == 0 or kills >= 6:
            break
    assert kills >= 5, "the export finished before it could be killed five times"
    done = await run_cli(args, env=cli_env(sim), cwd=tmp_path, limit_s=120)
    assert done.code == 0, done.stderr
    data_ids, fetch_ids = accounted(out)
    assert len(data_ids) == len(set(data_ids))
    assert len(fetch_ids) == len(set(fetch_ids))
    assert set(data_ids) | set(fetch_ids) == wanted
    assert not set(data_ids) & set(fetch_ids)
    assert not visible_junk(out)


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
async def test_interrupt_exits_130_and_leaves_no_partial_file(
    simulator, tmp_path: Path, stop: signal.Signals
) -> None:
    sim = await simulator(deals=2000, seed=6)
    out = tmp_path / "out"
    args = [
        "run",
        "--ids",
        "1-2000",
        "--ids-format",
        "range",
        "--out",
        str(out),
        "--chunk-size",
        "100",
        # get: 40 requests at 10/s, so the run is still going when the first chunk is committed
        # (list would fetch all 2,000 IDs in two requests and could finish before the signal).
        "--strategy",
        "get",
        "--rate",
        "10",
        "--burst",
        "2",
        "--headroom",
        "0",
        "--operating-budget",
        "off",
        "--no-progress",
    ]
    proc = await start_cli(args, env=cli_env(sim), cwd=tmp_path)
    # Wait until the first chunk is committed, then interrupt.
    for _ in range(200):
        checkpoints = out / "_checkpoints"
        if checkpoints.exists() and any(checkpoints.glob("*.json")):
            break
        await asyncio.sleep(0.05)
    assert proc.returncode is None, "the export finished before it could be interrupted"
    proc.send_signal(stop)
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 130, err.decode()
    assert "resume" in err.decode()
    assert not visible_junk(out)
    assert not (out / "_SUCCESS").exists()
    assert not (out / "_lock").exists()
    done = await run_cli(args, env=cli_env(sim), cwd=tmp_path, limit_s=120)
    assert done.code == 0, done.stderr
    data_ids, fetch_ids = accounted(out)
    assert sorted(data_ids + fetch_ids) == list(range(1, 2001))


async def test_retry_turns_retryable_failures_into_data(simulator, tmp_path: Path) -> None:
    sim = await simulator(
        deals=400, seed=8, faults=FaultConfig(error_500=0.5, seed=1, methods=frozenset({"batch"}))
    )
    out = tmp_path / "out"
    first = await run_cli(
        [
            "run",
            "--ids",
            "1-400",
            "--ids-format",
            "range",
            "--out",
            str(out),
            "--max-attempts",
            "1",
            "--batch-size",
            "10",
            "--chunk-size",
            "50",  # the replay then commits in several parts
            *FAST,
        ],
        env=cli_env(sim),
        cwd=tmp_path,
    )
    assert first.code == 3, first.stderr
    assert "deal-export retry" in first.stdout
    side = read_sidecar(out)
    retryable = set(side.filter(pc.field("retryable")).column("id").to_pylist())
    assert retryable

    sim.set_faults(FaultConfig())
    again = await run_cli(["retry", str(out), *FAST[:4]], env=cli_env(sim), cwd=tmp_path)
    assert again.code == 0, again.stderr
    data_ids, fetch_ids = accounted(out)
    visible = set(sim.portal.visible_ids)
    assert retryable & visible <= set(data_ids)
    assert len(data_ids) == len(set(data_ids))
    assert len(fetch_ids) == len(set(fetch_ids))
    assert set(data_ids) | set(fetch_ids) == set(range(1, 401))
    # Deleted or hidden deals that first failed on a 500 are now known to be permanent.
    side = read_sidecar(out)
    still = side.filter(pc.equal(side.column("stage"), "fetch"))
    assert not any(still.column("retryable").to_pylist())
    assert "Not found" in still.column("message").to_pylist()


async def test_interrupted_incremental_run_resumes_with_the_ids_it_discovered(
    simulator, tmp_path: Path
) -> None:
    sim = await simulator(deals=1500, seed=14)
    stamps = sorted(sim.portal.date_modify(i) for i in sim.portal.visible_ids)
    since = stamps[len(stamps) // 3]
    since_iso = datetime.fromtimestamp(since, UTC).isoformat()
    out = tmp_path / "out"
    args = [
        "run", "--modified-since", since_iso, "--out", str(out), "--chunk-size", "100",
        "--rate", "10", "--burst", "2", "--headroom", "0", "--operating-budget", "off",
        "--no-progress",
    ]  # fmt: skip
    proc = await start_cli(args, env=cli_env(sim), cwd=tmp_path)
    for _ in range(400):
        checkpoints = out / "_checkpoints"
        if checkpoints.exists() and any(checkpoints.glob("*.json")):
            break
        await asyncio.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    await proc.wait()
    first_set = set(pq.read_table(out / "_deal_export" / "input.parquet").column("ID").to_pylist())
    assert 0 < len(first_set) < len(sim.portal.existing_ids)
    late = next(i for i in sim.portal.visible_ids if i not in first_set)
    # The portal moves on: a fresh discovery would now also find `late`.
    sim.touch([late])
    done = await run_cli(args, env=cli_env(sim), cwd=tmp_path, limit_s=120)
    assert done.code == 0, done.stderr
    data_ids, fetch_ids = accounted(out)
    assert len(data_ids) == len(set(data_ids))
    assert set(data_ids) | set(fetch_ids) == first_set
    assert late not in data_ids
    # The next incremental run starts from the first run's watermark and picks `late` up.
    nxt = await run_cli(
        [
            "run",
            "--since-last-run",
            "--out",
            str(out),
            "--existing-data-behavior",
            "overwrite",
            *FAST,
        ],
        env=cli_env(sim),
        cwd=tmp_path,
    )
    assert nxt.code == 0, nxt.stderr
    assert late in read_data(out).column("ID").to_pylist()
