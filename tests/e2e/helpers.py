"""Running the real `deal-export` process against an in-process simulator, and auditing output."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from pipeline.normalise import DealSchema
from pipeline.simulator import RunningSimulator

#: No client-side pacing: these tests are about correctness, not limits.
FAST = ["--rate", "0", "--operating-budget", "off", "--no-progress"]


@dataclass(frozen=True)
class Completed:
    code: int
    stdout: str
    stderr: str


def cli_env(sim: RunningSimulator | None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BITRIX24_", "DEAL_EXPORT_"))}
    if sim is not None:
        env["BITRIX24_WEBHOOK_URL"] = sim.webhook_url
    env.update(extra)
    return env


async def start_cli(
    args: Sequence[str], *, env: Mapping[str, str], cwd: Path, stdin: bytes | None = None
) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "pipeline",
        *args,
        env=dict(env),
        cwd=cwd,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def run_cli(
    args: Sequence[str],
    *,
    env: Mapping[str, str],
    cwd: Path,
    stdin: bytes | None = None,
    limit_s: float = 90.0,
) -> Completed:
    """Run `deal-export ARGS` to completion while the simulator keeps serving on this loop."""
    proc = await start_cli(args, env=env, cwd=cwd, stdin=stdin)
    try:
        out, err = await asyncio.wait_for(proc.communicate(stdin), limit_s)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return Completed(proc.returncode, out.decode(), err.decode())


def read_data(root: Path) -> pa.Table:
    """The dataset as a reader sees it: hive partitions, `_`/`.` files skipped."""
    return ds.dataset(root, format="parquet", partitioning="hive").to_table()


def read_sidecar(root: Path) -> pa.Table:
    files = sorted((root / "_errors").glob("*.parquet"))
    if not files:
        return pa.table({"id": pa.array([], pa.int64()), "stage": pa.array([], pa.string())})
    return pa.concat_tables(pq.read_table(f) for f in files)


def accounted(root: Path) -> tuple[list[int], list[int]]:
    """(IDs in the data, IDs in fetch rows of the sidecar), each with repetitions kept."""
    data_ids = read_data(root).column("ID").to_pylist()
    side = read_sidecar(root)
    fetch_ids = [
        i
        for i, s in zip(
            side.column("id").to_pylist(), side.column("stage").to_pylist(), strict=True
        )
        if s == "fetch"
    ]
    return data_ids, fetch_ids


def assert_each_once(root: Path, wanted: set[int]) -> None:
    """Every wanted ID ends exactly once: in the data or in a fetch row of the sidecar."""
    data_ids, fetch_ids = accounted(root)
    assert len(data_ids) == len(set(data_ids)), "a deal was written twice"
    assert len(fetch_ids) == len(set(fetch_ids)), "a failure was recorded twice"
    assert not set(data_ids) & set(fetch_ids)
    assert set(data_ids) | set(fetch_ids) == wanted


def checkpoints(root: Path) -> dict[str, dict[str, Any]]:
    """An output root's committed checkpoints by name (`chunk-000000`, `chunk-000000-p000`)."""
    return {p.stem: json.loads(p.read_text()) for p in (root / "_checkpoints").glob("*.json")}


def deal_columns(root: Path) -> pa.Table:
    """The dataset's portal-field columns, sorted by ID: lineage columns differ between runs."""
    snapshot = json.loads((root / "_schema.json").read_text())
    names = list(DealSchema.from_snapshot(snapshot).column_names)
    return read_data(root).select(names).sort_by("ID")


def visible_junk(root: Path) -> list[Path]:
    """Temp or partial files a crash could have left where a reader looks."""
    return [
        p
        for p in root.rglob("*")
        if p.is_file() and (p.name.startswith(".") or ".tmp" in p.name or p.suffix == ".partial")
    ]


def files_containing(root: Path, needle: str) -> list[Path]:
    raw = needle.encode()
    return [p for p in root.rglob("*") if p.is_file() and raw in p.read_bytes()]


async def wait_until(condition: Callable[[], object], what: str) -> None:
    """Poll `condition` until it holds while a run goes on in the background (bounded: 30 s of
    real time at most, then the test fails saying what it waited for)."""
    for _ in range(3000):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")
