"""A chunk not complete after a minute is committed as a piece; a resume skips what pieces hold.

In-process `export()` over real sockets against the simulator, on a virtual clock that only the
test moves: the minute passes exactly when the test says, whatever the machine's speed.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipeline import run as run_module
from pipeline.clock import VirtualClock
from pipeline.config import FetchConfig, LimitsConfig, OutputConfig, RunConfig, WebhookAuth
from pipeline.config_load import IdsConfig
from pipeline.normalise import TableBuilder
from pipeline.run import PIECE_EVERY_S, export
from pipeline.simulator import FaultConfig, RunningSimulator
from tests.e2e.helpers import accounted, checkpoints, deal_columns, wait_until

CHUNK = 300
# Every answer a little late (real time), so the test can act while chunk 0 is being fetched.
SLOW = FaultConfig(slow=1.0, slow_s=0.03, seed=1)


def _config(sim: RunningSimulator, root: Path, behavior: str) -> RunConfig:
    return RunConfig(
        auth=WebhookAuth(sim.webhook_url),
        output=OutputConfig(
            root=str(root),
            existing_data_behavior=behavior,  # type: ignore[arg-type]
            chunk_size=CHUNK,
        ),
        limits=LimitsConfig(rate=0, operating_budget_s=None),
        fetch=FetchConfig(concurrency=1),
    )


def _ids(tmp_path: Path, sim: RunningSimulator) -> tuple[IdsConfig, set[int]]:
    wanted = set(range(1, sim.portal.max_id + 20))  # some never existed: sidecar rows
    path = tmp_path / "ids.txt"
    path.write_text("\n".join(map(str, sorted(wanted))) + "\n")
    return IdsConfig(source=str(path)), wanted


async def _crash_after_a_piece(sim: RunningSimulator, root: Path, ids: IdsConfig) -> Path:
    """Run until chunk 0 is committed as a piece, then die; the piece's checkpoint."""
    vclock = VirtualClock()
    run = asyncio.create_task(export(_config(sim, root, "error"), ids, clock=vclock))
    await wait_until(lambda: sim.stats()["deal_gets"] >= 100, "the first deals")
    assert not run.done()
    vclock.advance(PIECE_EVERY_S + 1)  # chunk 0's oldest outcome is now a minute old
    piece_file = root / "_checkpoints" / "chunk-000000-p000.json"
    await wait_until(piece_file.exists, "the piece checkpoint")
    run.cancel()  # the process dies: what the piece holds must survive, nothing else counts
    try:
        await run
    except asyncio.CancelledError:
        pass
    else:
        raise AssertionError("the export finished before it could be stopped")
    return piece_file


async def test_a_minute_old_chunk_is_committed_as_a_piece_and_a_resume_skips_it(
    simulator, tmp_path: Path
) -> None:
    sim = await simulator(deals=700, seed=3, faults=SLOW)
    ids, wanted = _ids(tmp_path, sim)
    root = tmp_path / "out"
    piece_file = await _crash_after_a_piece(sim, root, ids)

    piece = json.loads(piece_file.read_text())
    held = set(piece["ids"])
    assert piece["kind"] == "piece"
    assert piece["chunk"] == 0
    assert 50 <= len(held) < CHUNK
    assert held <= set(range(1, CHUNK + 1))  # chunk 0's IDs only: the boundaries stay
    assert "chunk-000000" not in checkpoints(root)

    before = sim.stats()["deal_gets"]
    result = await export(_config(sim, root, "resume"), ids)
    assert result.exit_code in (0, 2), result
    # The resume asked for every ID exactly once, except those the piece already holds.
    assert sim.stats()["deal_gets"] - before == len(wanted) - len(held)

    data_ids, fetch_ids = accounted(root)
    assert len(data_ids) == len(set(data_ids))
    assert len(fetch_ids) == len(set(fetch_ids))
    assert not set(data_ids) & set(fetch_ids)
    assert set(data_ids) | set(fetch_ids) == wanted
    committed = checkpoints(root)
    chunks = (len(wanted) + CHUNK - 1) // CHUNK
    assert {f"chunk-{i:06d}" for i in range(chunks)} <= set(committed)
    assert set(committed["chunk-000000-p000"]["ids"]) == held
    assert result.manifest["counts"]["exported"] == len(data_ids)

    # The same dataset as one uninterrupted run of the same input.
    clean = tmp_path / "clean"
    again = await export(_config(sim, clean, "error"), ids)
    assert again.exit_code == result.exit_code
    assert deal_columns(root).equals(deal_columns(clean))
    assert sorted(accounted(root)[1]) == sorted(accounted(clean)[1])


async def test_no_piece_while_every_chunk_completes_within_the_minute(
    simulator, tmp_path: Path
) -> None:
    sim = await simulator(deals=700, seed=3)
    ids, wanted = _ids(tmp_path, sim)
    root = tmp_path / "out"
    result = await export(_config(sim, root, "error"), ids, clock=VirtualClock())
    assert result.exit_code in (0, 2)
    assert not [k for k in checkpoints(root) if "-p" in k]
    data_ids, fetch_ids = accounted(root)
    assert set(data_ids) | set(fetch_ids) == wanted


async def test_a_resume_takes_a_piece_whose_rows_were_committed_in_id_order(
    simulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Runs built their chunks in ID order before they were built in the folder sink's file
    order. Nothing committed records the rows' order (a piece lists its IDs ascending, files
    hold their rows in ID order either way), so an older run's piece resumes like any."""
    sim = await simulator(deals=700, seed=3, faults=SLOW)
    ids, wanted = _ids(tmp_path, sim)
    root = tmp_path / "out"
    with monkeypatch.context() as older:
        older.setattr(run_module._Exporter, "_builder", lambda self: TableBuilder(self.schema))
        piece_file = await _crash_after_a_piece(sim, root, ids)
    held = json.loads(piece_file.read_text())["ids"]
    assert held == sorted(held)

    result = await export(_config(sim, root, "resume"), ids)
    assert result.exit_code in (0, 2), result
    data_ids, fetch_ids = accounted(root)
    assert sorted(data_ids + fetch_ids) == sorted(wanted)
    clean = tmp_path / "clean"
    again = await export(_config(sim, clean, "error"), ids)
    assert deal_columns(root).equals(deal_columns(clean))
    files = sorted(p for p in root.rglob("*.parquet") if not p.parts[-2].startswith("_"))
    assert len({p.parent for p in files}) > 3
    for path in files:
        file_ids = pq.read_table(path, columns=["ID"]).column("ID").to_pylist()
        assert file_ids == sorted(file_ids), path
    assert again.exit_code == result.exit_code
