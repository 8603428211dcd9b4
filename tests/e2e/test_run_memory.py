"""After every commit the run hands Arrow's unused pages back (pipeline.run._release_arrow_memory).

In-process `export()` over real sockets against the simulator. The release itself is Arrow's
own (`MemoryPool.release_unused`); what the run owes is calling it once per committed chunk,
from a worker thread, without changing a row of the output.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

import pipeline.run as run_module
from pipeline.clock import VirtualClock
from pipeline.config import FetchConfig, LimitsConfig, OutputConfig, RunConfig, WebhookAuth
from pipeline.config_load import IdsConfig
from pipeline.run import export
from tests.e2e.helpers import accounted

CHUNK = 100


def _config(url: str, root: Path) -> RunConfig:
    return RunConfig(
        auth=WebhookAuth(url),
        output=OutputConfig(root=str(root), chunk_size=CHUNK),
        limits=LimitsConfig(rate=0, operating_budget_s=None),
        fetch=FetchConfig(concurrency=1),
    )


async def test_the_pool_is_released_once_per_committed_chunk_from_a_worker_thread(
    simulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sim = await simulator(deals=350, seed=5)
    wanted = set(range(1, sim.portal.max_id + 10))  # some never existed: sidecar rows
    path = tmp_path / "ids.txt"
    path.write_text("\n".join(map(str, sorted(wanted))) + "\n")
    threads: list[threading.Thread] = []
    release = run_module._release_arrow_memory

    def spy() -> None:
        threads.append(threading.current_thread())
        release()

    monkeypatch.setattr(run_module, "_release_arrow_memory", spy)
    root = tmp_path / "out"
    result = await export(
        _config(sim.webhook_url, root), IdsConfig(source=str(path)), clock=VirtualClock()
    )

    assert result.exit_code in (0, 2), result
    chunks = (len(wanted) + CHUNK - 1) // CHUNK
    assert result.chunks_written == chunks
    assert len(threads) == chunks
    assert threading.main_thread() not in threads
    data_ids, fetch_ids = accounted(root)
    assert set(data_ids) | set(fetch_ids) == wanted
    assert len(data_ids) + len(fetch_ids) == len(wanted)
