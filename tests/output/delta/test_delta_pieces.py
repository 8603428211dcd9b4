"""Pieces on the Delta sink: a chunk not complete after a minute is one merge commit listing its
IDs; a run that dies keeps it, and the resume fetches only the chunk's other IDs.

In-process `export()` over real sockets against the simulator, on a virtual clock only the test
moves (the minute passes exactly when the test says).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from pipeline.clock import VirtualClock
from pipeline.config import FetchConfig
from pipeline.config_load import IdsConfig
from pipeline.run import PIECE_EVERY_S, export
from pipeline.simulator import FaultConfig
from tests.e2e.helpers import wait_until
from tests.output.delta.helpers import delta_config, fetch_failures, our_commits, rows

CHUNK = 300
# Every answer a little late (real time), so the test can act while chunk 0 is being fetched.
SLOW = FaultConfig(slow=1.0, slow_s=0.03, seed=1)


def _pieces(root: Path) -> list[dict[str, Any]]:
    return [c.record for c in our_commits(root) if c.kind == "piece"]


async def test_a_piece_is_a_commit_and_a_resume_fetches_only_the_rest(
    simulator, tmp_path: Path
) -> None:
    sim = await simulator(deals=700, seed=3, faults=SLOW)
    wanted = set(range(1, sim.portal.max_id + 20))  # some never existed: errors-table rows
    source = tmp_path / "ids.txt"
    source.write_text("\n".join(map(str, sorted(wanted))) + "\n")
    ids = IdsConfig(source=str(source))
    root = tmp_path / "deals"
    config = delta_config(sim, root, chunk_size=CHUNK, fetch=FetchConfig(concurrency=1))

    vclock = VirtualClock()
    run = asyncio.create_task(export(config, ids, clock=vclock))
    await wait_until(lambda: sim.stats()["deal_gets"] >= 100, "the first deals")
    vclock.advance(PIECE_EVERY_S + 1)  # chunk 0's oldest outcome is now a minute old
    # A first commit file, not only its directory: the writer creates `_delta_log` before the
    # version-0 file lands, and a table with no version yet does not open.
    first = root / "_delta_log" / f"{0:020d}.json"
    await wait_until(lambda: first.exists() and bool(_pieces(root)), "the piece")
    run.cancel()  # the process dies: only what the piece holds survives
    try:
        await run
    except asyncio.CancelledError:
        pass
    else:
        raise AssertionError("the export finished before it could be stopped")

    (piece,) = _pieces(root)
    held = set(piece["ids"])
    assert piece["index"] == 0
    assert 50 <= len(held) < CHUNK
    assert held <= set(range(1, CHUNK + 1))  # chunk 0's IDs only: the boundaries stay
    assert not [c for c in our_commits(root) if c.kind == "chunk"]

    before = sim.stats()["deal_gets"]
    result = await export(delta_config(sim, root, chunk_size=CHUNK), ids)
    assert result.exit_code in (0, 2), result
    # Every ID asked for exactly once more, except those the piece already holds.
    assert sim.stats()["deal_gets"] - before == len(wanted) - len(held)

    table = rows(root)
    data_ids = table.column("ID").to_pylist()
    assert len(data_ids) == len(set(data_ids))
    failures = fetch_failures(root)
    assert not set(data_ids) & set(failures)
    assert set(data_ids) | set(failures) == wanted
    assert set(data_ids) == set(sim.portal.visible_ids) & wanted
