"""The simulator's own surface: stats, the truth endpoint, the CLI and the interim demo."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from pipeline.simulator import RunningSimulator
from tests.simulator.conftest import get, post_json

ROOT = Path(__file__).resolve().parents[2]


async def test_stats_counters(sim: RunningSimulator, http: aiohttp.ClientSession) -> None:
    ids = sim.portal.visible_ids[:4]
    missing = sim.portal.deleted_ids[0]
    await post_json(
        http, sim.webhook_url + "batch", {"cmd": [f"crm.deal.get?id={i}" for i in [*ids, missing]]}
    )
    await get(http, sim.webhook_url + "crm.deal.get", id=ids[0])
    await get(http, sim.webhook_url + "crm.nope")
    status, stats = await get(http, sim.base_url + "/_simulator/stats")
    assert status == 200
    assert stats == sim.stats()
    assert stats["requests"] == 3
    assert stats["by_method"] == {"batch": 1, "crm.deal.get": 1, "crm.nope": 1}
    assert stats["by_status"] == {"200": 2, "404": 1}
    assert stats["deals_served"] == 5
    assert stats["deal_gets"] == 6
    assert stats["batch_commands"] == 5
    assert stats["rate_limited"] == 0
    assert stats["operating_limited"] == 0
    assert stats["operating_seconds_charged"] == pytest.approx(6 * 0.02)


async def test_truth_endpoint(sim: RunningSimulator, http: aiohttp.ClientSession) -> None:
    visible, hidden = sim.portal.visible_ids[0], sim.portal.hidden_ids[0]
    status, body = await get(http, f"{sim.base_url}/_simulator/deal/{visible}")
    assert (status, body) == (200, sim.portal.deal_wire(visible))
    async with http.get(f"{sim.base_url}/_simulator/deal/{hidden}") as resp:
        assert (resp.status, resp.headers["X-Deal-Status"]) == (200, "hidden")
        assert (await resp.json())["ID"] == str(hidden)
    status, body = await get(http, f"{sim.base_url}/_simulator/deal/{sim.portal.deleted_ids[0]}")
    assert (status, body) == (404, {"status": "deleted"})
    status, _ = await get(http, f"{sim.base_url}/_simulator/deal/abc")
    assert status == 404


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


@contextlib.asynccontextmanager
async def simulate_process(*args: str) -> AsyncIterator[str]:
    """`deal-export simulate --port 0 ARGS` in its own process; yields the webhook URL it prints
    first, then stops it with SIGINT and checks that it exits cleanly (killed if a test fails)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pipeline", "simulate", "--port", "0", *args,
        stdout=asyncio.subprocess.PIPE, cwd=ROOT, env=_env(),
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        yield (await asyncio.wait_for(proc.stdout.readline(), timeout=30)).decode().strip()
        proc.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(proc.wait(), timeout=10) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_cli_prints_url_first_and_stops_cleanly(http: aiohttp.ClientSession) -> None:
    args = ("--deals", "40", "--seed", "3", "--plan", "standard", "--secret", "cli-secret-123")
    async with simulate_process(*args) as url:
        assert url.startswith("http://127.0.0.1:")
        assert url.endswith("/rest/1/cli-secret-123/")
        assert ":0/" not in url
        status, _ = await get(http, url + "crm.deal.fields")
        assert status == 200


def test_cli_rejects_bad_options() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pipeline", "simulate", "--fault-500", "0.7", "--fault-reset",
         "0.7"],
        capture_output=True, text=True, cwd=ROOT, env=_env(), timeout=30,
    )  # fmt: skip
    assert result.returncode == 2
    assert "sum to at most 1" in result.stderr
    assert "Traceback" not in result.stderr


async def test_touch_and_delete_over_http(
    sim: RunningSimulator, http: aiohttp.ClientSession
) -> None:
    a, b = sim.portal.visible_ids[:2]
    touch = {"ids": [a], "at": 1.8e9}
    status, body = await post_json(http, sim.base_url + "/_simulator/touch", touch)
    assert (status, body) == (200, {"touched": 1})
    assert sim.portal.date_modify(a) == 1_800_000_000
    status, body = await post_json(http, sim.base_url + "/_simulator/delete", {"ids": [b]})
    assert (status, body) == (200, {"deleted": 1})
    assert sim.portal.status(b) == "deleted"
    async with http.post(sim.base_url + "/_simulator/touch", data=b"nope") as resp:
        assert resp.status == 400
