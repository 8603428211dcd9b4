"""Only committed data is visible, to every reader; one file per partition per chunk.

Real exports over real sockets against the simulator. A failed run (disk full) and a SIGKILL at
either side of a chunk's commit point leave no row that pyarrow's dataset recipe, DuckDB's
`read_parquet('OUT/**/*.parquet', hive_partitioning=true)` or Polars' `scan_parquet` can read;
running the same command again then ends with every deal exactly once.
"""

from __future__ import annotations

import asyncio
import errno
import os
import signal
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import duckdb
import polars as pl
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from pipeline.config import LimitsConfig, OutputConfig, RunConfig, WebhookAuth
from pipeline.config_load import IdsConfig
from pipeline.errors import OutputError
from pipeline.run import export
from tests.e2e.helpers import FAST, accounted, cli_env, run_cli

IDS = IdsConfig(source="1-130", format="range")


def readable_rows(out: Path) -> dict[str, int]:
    """How many rows each reader finds in `out`, as the README tells users to read it."""
    glob = f"{out}/**/*.parquet"
    rows = {"pyarrow": ds.dataset(out, format="parquet", partitioning="hive").count_rows()}
    # A glob that matches no file is an error in DuckDB and in Polars: that is zero rows.
    try:
        found = duckdb.connect().execute(
            f"select count(*) from read_parquet('{glob}', hive_partitioning=true)"
        )
        rows["duckdb"] = int(found.fetchone()[0])  # type: ignore[index]
    except duckdb.IOException as exc:
        rows["duckdb"] = 0 if "No files found" in str(exc) else -1
    try:
        frame = pl.scan_parquet(glob, hive_partitioning=True).select(pl.len()).collect()
        rows["polars"] = int(frame.item())
    except pl.exceptions.ComputeError as exc:
        rows["polars"] = 0 if "expanded paths were empty" in str(exc) else -1
    return rows


def _config(url: str, out: Path, **output: Any) -> RunConfig:
    return RunConfig(
        auth=WebhookAuth(url),
        output=OutputConfig(root=str(out), chunk_size=50, **output),
        limits=LimitsConfig(rate=0, operating_budget_s=None),
    )


async def test_a_full_disk_mid_chunk_leaves_no_readable_row_and_frees_the_staging(
    simulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sim = await simulator(deals=120, seed=3)
    out = tmp_path / "out"
    real_write = os.write
    staged: set[str] = set()

    def write(fd: int, data: Any) -> int:
        # The disk fills up while the first chunk's second file is being staged.
        path = os.readlink(f"/proc/self/fd/{fd}")
        if f"{os.sep}_staging{os.sep}" in path:
            staged.add(path)
            if len(staged) == 2:
                raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", write)
    with pytest.raises(OutputError, match="No space left on device"):
        await export(_config(sim.webhook_url, out), IDS)
    monkeypatch.setattr(os, "write", real_write)

    assert len(staged) == 2, "the fault never fired: the test proves nothing"
    assert readable_rows(out) == {"pyarrow": 0, "duckdb": 0, "polars": 0}
    assert not (out / "_staging").exists(), "a full disk must be freed of the staged files"
    assert not list(out.rglob("*.staged"))

    again = await export(_config(sim.webhook_url, out), IDS)
    assert again.exit_code == 0
    data_ids, fetch_ids = accounted(out)
    assert sorted(data_ids) == sorted(set(sim.portal.visible_ids) & set(range(1, 131)))
    assert set(data_ids) | set(fetch_ids) == set(range(1, 131))
    assert not (out / "_staging").exists()


_KILLER = """
import os, signal, sys
from pipeline.output.store import Store

mode, real_move, real_write = os.environ["KILL_AT"], Store.move, Store.write_atomic
staged = []

def move(self, src, dst):
    if mode == "first-move":  # the checkpoint is written, no file is in place yet
        os.kill(os.getpid(), signal.SIGKILL)
    return real_move(self, src, dst)

def write_atomic(self, rel, data):
    if rel.endswith(".staged"):
        staged.append(rel)
        if mode == "second-staged" and len(staged) == 2:  # before the checkpoint
            os.kill(os.getpid(), signal.SIGKILL)
    return real_write(self, rel, data)

Store.move, Store.write_atomic = move, write_atomic
from pipeline.cli import main
sys.argv[0] = "deal-export"
main()
"""


@pytest.mark.parametrize("kill_at", ["second-staged", "first-move"])
async def test_sigkill_around_the_first_commit_leaves_no_readable_row(
    simulator, tmp_path: Path, kill_at: str
) -> None:
    sim = await simulator(deals=120, seed=5)
    out = tmp_path / "out"
    script = tmp_path / "killer.py"
    script.write_text(_KILLER)
    args = ["run", "--ids", "1-130", "--ids-format", "range", "--out", str(out)]
    args += ["--chunk-size", "50", *FAST]
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(script),
        *args,
        env=cli_env(sim, KILL_AT=kill_at),
        cwd=tmp_path,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    assert await asyncio.wait_for(proc.wait(), 60) == -signal.SIGKILL
    assert list(out.rglob("*.staged")), "the kill did not land mid-commit"
    assert readable_rows(out) == {"pyarrow": 0, "duckdb": 0, "polars": 0}
    committed = sorted((out / "_checkpoints").glob("*.json")) if kill_at == "first-move" else []

    done = await run_cli(args, env=cli_env(sim), cwd=tmp_path)
    assert done.code == 0, done.stderr
    data_ids, fetch_ids = accounted(out)
    assert len(data_ids) == len(set(data_ids)), "a deal was written twice"
    assert set(data_ids) | set(fetch_ids) == set(range(1, 131))
    assert not set(data_ids) & set(fetch_ids)
    assert not (out / "_staging").exists()
    if kill_at == "first-move":
        # The killed run's chunk was committed: the next open moved its files into place
        # instead of fetching it again (its rows keep the killed run's id). Chunks are fetched
        # side by side and commit as they finish, so any one of the three can be first (the
        # third, with its ten missing IDs, once was): exactly one was committed.
        assert len(committed) == 1, committed
        assert committed[0].name in {f"chunk-{n:06d}.json" for n in range(3)}
        table = ds.dataset(out, format="parquet", partitioning="hive").to_table()
        runs = Counter(table.column("_run_id").to_pylist())
        assert len(runs) == 2


async def test_one_file_per_partition_per_chunk_in_one_row_group(simulator, tmp_path: Path) -> None:
    sim = await simulator(deals=900, seed=8)
    out = tmp_path / "out"
    args = ["run", "--ids", "1-900", "--ids-format", "range", "--out", str(out)]
    done = await run_cli(
        [*args, "--chunk-size", "300", *FAST],
        env=cli_env(sim),
        cwd=tmp_path,
    )
    assert done.code == 0, done.stderr
    files = sorted(out.glob("DATE_CREATE_month=*/part-*.parquet"))
    per_partition_chunk = Counter((f.parent.name, f.name.split("-")[1]) for f in files)
    assert per_partition_chunk
    assert max(per_partition_chunk.values()) == 1
    assert len({chunk for _, chunk in per_partition_chunk}) == 3
    for f in files:
        assert pq.ParquetFile(f).metadata.num_row_groups == 1
    assert sum(pq.ParquetFile(f).metadata.num_rows for f in files) == len(
        set(sim.portal.visible_ids) & set(range(1, 901))
    )
