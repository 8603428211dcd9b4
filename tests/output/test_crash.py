"""Kill -9 a writer at random points, again and again; the resumed output is exactly-once."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from pipeline.output.store import is_temp_name

CHUNKS = 12
KILL_CYCLES = 7
REPO = Path(__file__).resolve().parents[2]


def _run_child(root: Path, synth: ModuleType, crash_after: int, kill_after_s: float | None) -> int:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, str(synth.__file__), str(root), str(CHUNKS), str(crash_after)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        if kill_after_s is None:
            return proc.wait(timeout=60)
        assert proc.stdout is not None
        proc.stdout.readline()  # "opened": the kill lands inside the chunk writes
        try:
            return proc.wait(timeout=kill_after_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
        assert proc.stderr is not None
        err = proc.stderr.read()
        assert "Traceback" not in err, err


def _visible(root: Path) -> list[Path]:
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(("_", "."))]
        out += [Path(dirpath, f) for f in filenames if not f.startswith(("_", "."))]
    return out


@pytest.mark.parametrize("seed", [20241127, 7])
def test_sigkill_at_random_points_then_resume_is_exactly_once(
    tmp_path: Path, synth: ModuleType, seed: int
) -> None:
    rng = random.Random(seed)
    kills = 0
    # Bounded by KILL_CYCLES in count and by pytest-timeout in time; no wall-clock assertion,
    # which would fail on a busy machine rather than on a defect.
    for cycle in range(KILL_CYCLES):
        if cycle == 2:
            # an external kill -9 at a random moment, from outside the process
            code = _run_child(tmp_path, synth, 0, kill_after_s=rng.uniform(0.0, 0.02))
        else:
            # the child kills itself at its n-th write/fsync/rename/unlink: inside a file,
            # between a file and its rename, between data, sidecar and checkpoint, mid-cleanup.
            # n stays below one chunk's worth of operations, so the run cannot finish early.
            code = _run_child(tmp_path, synth, rng.randint(1, 45), kill_after_s=None)
        assert code in (0, -9)
        kills += code == -9
        # right after a crash: every file a reader can see is a complete Parquet file
        for path in _visible(tmp_path):
            assert path.suffix == ".parquet"
            pq.read_metadata(path)
    assert kills >= 5
    assert _run_child(tmp_path, synth, 0, kill_after_s=None) == 0

    all_files = [Path(d, f) for d, _, fs in os.walk(tmp_path) for f in fs]
    assert not [p for p in all_files if is_temp_name(p.name)]
    assert (tmp_path / "_SUCCESS").exists()
    assert not (tmp_path / "_lock").exists()

    requested = [i for c in range(CHUNKS) for i in synth.chunk_ids(c)]
    table = ds.dataset(str(tmp_path), partitioning="hive").to_table().sort_by("ID")
    ids = table.column("ID").to_pylist()
    sidecar = ds.dataset(str(tmp_path / "_errors")).to_table()
    failed = sidecar.column("id").to_pylist()
    assert len(ids) == len(set(ids)), "a deal was written twice"
    assert len(failed) == len(set(failed)), "a failure was recorded twice"
    assert not set(ids) & set(failed)
    assert sorted(ids + failed) == requested
    assert sorted(failed) == [i for i in requested if i % synth.FAIL_EVERY == 0]
    # every value is what the writer meant to write
    assert table.select(synth.SCHEMA.names).equals(synth.deals(ids))
