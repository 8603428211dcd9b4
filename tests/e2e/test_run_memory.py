"""After every commit the run hands Arrow's unused pages back (pipeline.run._release_arrow_memory).

In-process `export()` over real sockets against the simulator. The release itself is Arrow's
own (`MemoryPool.release_unused`); what the run owes is calling it once per committed chunk,
from a worker thread, without changing a row of the output.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import pipeline.run as run_module
from pipeline.clock import VirtualClock
from pipeline.config import FetchConfig, LimitsConfig, OutputConfig, RunConfig, WebhookAuth
from pipeline.config_load import IdsConfig
from pipeline.memory import one_worker
from pipeline.normalise import TableBuilder
from pipeline.output import OutputRoot
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


async def test_on_one_worker_thread_every_job_of_a_run_shares_it(
    simulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The CLI gives its loop `one_worker()`: typing, writing and releasing then share one
    # thread (one mimalloc heap, which the release reaches), and nothing waits on a second.
    sim = await simulator(deals=350, seed=5)
    wanted = set(range(1, sim.portal.max_id + 10))
    path = tmp_path / "ids.txt"
    path.write_text("\n".join(map(str, sorted(wanted))) + "\n")
    seen: dict[str, set[str]] = {"release": set(), "convert": set(), "write": set()}

    def spy(job: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def called(*args: Any, **kwargs: Any) -> Any:
            seen[job].add(threading.current_thread().name)
            return fn(*args, **kwargs)

        return called

    monkeypatch.setattr(
        run_module, "_release_arrow_memory", spy("release", run_module._release_arrow_memory)
    )
    monkeypatch.setattr(TableBuilder, "convert", spy("convert", TableBuilder.convert))
    monkeypatch.setattr(OutputRoot, "write_chunk", spy("write", OutputRoot.write_chunk))
    monkeypatch.setattr(run_module, "NORMALISE_EVERY", 20)  # so parts are typed on the way
    asyncio.get_running_loop().set_default_executor(one_worker())
    root = tmp_path / "out"
    config = dataclasses.replace(
        _config(sim.webhook_url, root), fetch=FetchConfig(concurrency=4, batch_size=10)
    )
    result = await export(config, IdsConfig(source=str(path)), clock=VirtualClock())

    assert result.exit_code in (0, 2), result
    assert result.chunks_written > 1
    assert all(seen.values()), seen
    names = set().union(*seen.values())
    assert len(names) == 1, names
    assert names.pop().startswith("deal-export-worker")
    data_ids, fetch_ids = accounted(root)
    assert set(data_ids) | set(fetch_ids) == wanted
    assert len(data_ids) + len(fetch_ids) == len(wanted)
