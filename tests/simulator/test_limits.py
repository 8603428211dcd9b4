"""Leaky bucket and operating budget (Bitrix24 REST docs, `limits.md`), with compressed time."""

from __future__ import annotations

import aiohttp
import pytest

from pipeline.clock import ScaledClock
from pipeline.simulator import SimulatorConfig
from tests.conftest import SimulatorFactory
from tests.simulator.conftest import get, post_json

RATE_LIMITED = {"error": "QUERY_LIMIT_EXCEEDED", "error_description": "Too many requests"}
OPERATING = {
    "error": "OPERATION_TIME_LIMIT",
    "error_description": "Method is blocked due to operation time limit",
}


async def test_503_at_burst_plus_one_and_batch_counts_once(
    simulator: SimulatorFactory, http: aiohttp.ClientSession
) -> None:
    # Drain 0.2/s: over the few milliseconds of this burst the bucket cannot leak a whole request.
    sim = await simulator(deals=200, seed=1, rate=0.2, burst=10)
    ids = sim.portal.visible_ids[:50]
    batch = {"cmd": {f"d{i}": f"crm.deal.get?id={i}" for i in ids}}
    for _ in range(10):
        status, body = await post_json(http, sim.webhook_url + "batch", batch)
        assert status == 200
        assert len(body["result"]["result"]) == 50  # 50 deals, one request of the bucket
    status, body = await post_json(http, sim.webhook_url + "batch", batch)
    assert (status, body) == (503, RATE_LIMITED)
    stats = sim.stats()
    assert stats["rate_limited"] == 1
    assert stats["by_status"]["503"] == 1


async def test_bucket_drains_in_simulated_time(
    simulator: SimulatorFactory, http: aiohttp.ClientSession
) -> None:
    sim = await simulator(deals=20, seed=1, rate=0.5, burst=5, time_scale=4.0)
    statuses = []
    for _ in range(6):
        status, _ = await get(http, sim.webhook_url + "crm.deal.fields")
        statuses.append(status)
    assert statuses[-1] == 503
    await sim.clock.sleep(3.0)  # 3 simulated seconds = 750 ms: 1.5 requests drained
    status, _ = await get(http, sim.webhook_url + "crm.deal.fields")
    assert status == 200


async def test_plan_presets() -> None:
    assert (SimulatorConfig(plan="standard").rate, SimulatorConfig(plan="standard").burst) == (
        2.0,
        50,
    )
    enterprise = SimulatorConfig(plan="enterprise")
    assert (enterprise.rate, enterprise.burst) == (5.0, 250)


async def test_operating_budget_blocks_the_call_after_crossing(
    simulator: SimulatorFactory, http: aiohttp.ClientSession
) -> None:
    sim = await simulator(deals=100, seed=1, operating_budget_s=1.0, processing_ms=300)
    deal_id = sim.portal.visible_ids[0]
    operating = []
    for _ in range(4):  # 0.3, 0.6, 0.9, 1.2: the 4th crosses the budget but completes
        status, body = await get(http, sim.webhook_url + "crm.deal.get", id=deal_id)
        assert status == 200
        operating.append(body["time"]["operating"])
        assert body["time"]["operating_reset_at"] >= int(body["time"]["start"])
    assert operating == [0.3, 0.6, 0.9, 1.2]
    assert await get(http, sim.webhook_url + "crm.deal.get", id=deal_id) == (429, OPERATING)
    # Other methods keep working.
    status, body = await get(http, sim.webhook_url + "crm.deal.fields")
    assert status == 200
    # Inside a batch the block is per command, under a 200; the outer batch is not charged.
    status, body = await post_json(
        http,
        sim.webhook_url + "batch",
        {"cmd": {"g": f"crm.deal.get?id={deal_id}", "f": "crm.deal.fields"}},
    )
    assert status == 200
    assert body["result"]["result_error"] == {"g": OPERATING}
    assert list(body["result"]["result"]) == ["f"]
    assert body["time"]["operating"] == 0
    stats = sim.stats()
    assert stats["operating_limited"] == 1
    assert stats["operating_limited_commands"] == 1
    assert abs(stats["operating_seconds_charged"] - 1.2) < 1e-9


async def test_batch_charges_each_command_and_reports_it(
    simulator: SimulatorFactory, http: aiohttp.ClientSession
) -> None:
    sim = await simulator(deals=100, seed=1, operating_budget_s=480, processing_ms=20)
    ids = sim.portal.visible_ids[:10]
    _, body = await post_json(
        http, sim.webhook_url + "batch", {"cmd": [f"crm.deal.get?id={i}" for i in ids]}
    )
    times = body["result"]["result_time"]
    assert [t["operating"] for t in times] == [round(0.02 * n, 6) for n in range(1, 11)]
    assert all("operating_reset_at" in t for t in times)


async def test_window_expires_in_simulated_time(
    simulator: SimulatorFactory, http: aiohttp.ClientSession
) -> None:
    # 300x: the 10-minute window lasts two real seconds.
    sim = await simulator(
        deals=50, seed=1, operating_budget_s=0.5, processing_ms=400, time_scale=300.0
    )
    deal_id = sim.portal.visible_ids[0]
    for _ in range(2):
        status, body = await get(http, sim.webhook_url + "crm.deal.get", id=deal_id)
        assert status == 200
    reset_at = body["time"]["operating_reset_at"]
    assert await get(http, sim.webhook_url + "crm.deal.get", id=deal_id) == (429, OPERATING)
    assert 0 < reset_at - sim.clock.now() <= 600
    await sim.clock.sleep(reset_at - sim.clock.now() + 1)
    status, body = await get(http, sim.webhook_url + "crm.deal.get", id=deal_id)
    assert status == 200
    assert body["time"]["operating"] == 0.4


async def test_no_budget_means_no_operating_keys(
    simulator: SimulatorFactory, http: aiohttp.ClientSession
) -> None:
    sim = await simulator(deals=20, seed=1)
    _, body = await get(http, sim.webhook_url + "crm.deal.fields")
    assert "operating" not in body["time"]


async def test_time_scale_compresses_reported_time(
    simulator: SimulatorFactory, http: aiohttp.ClientSession
) -> None:
    sim = await simulator(deals=20, seed=1, time_scale=1000.0)
    _, first = await get(http, sim.webhook_url + "crm.deal.fields")
    await sim.clock.sleep(60)  # 60 ms of wall time
    _, second = await get(http, sim.webhook_url + "crm.deal.fields")
    assert second["time"]["start"] - first["time"]["start"] >= 60


async def test_shared_clock_agrees_with_reported_time(
    simulator: SimulatorFactory, http: aiohttp.ClientSession
) -> None:
    clock = ScaledClock(500.0)
    sim = await simulator(deals=10, seed=1, time_scale=500.0, clock=clock)
    assert sim.clock is clock
    before = clock.now()
    _, body = await get(http, sim.webhook_url + "crm.deal.fields")
    after = clock.now()
    assert before <= body["time"]["start"] <= body["time"]["finish"] <= after
    status, now = await get(http, sim.base_url + "/_simulator/clock")
    assert status == 200
    assert now["scale"] == 500.0
    assert after <= now["now"] <= clock.now()
    with pytest.raises(ValueError, match="scale"):
        await simulator(deals=10, time_scale=2.0, clock=clock)


async def test_processing_reports_the_charged_time(
    simulator: SimulatorFactory, http: aiohttp.ClientSession
) -> None:
    sim = await simulator(deals=50, seed=1, operating_budget_s=480, processing_ms=250)
    ids = sim.portal.visible_ids[:3]
    _, body = await post_json(
        http, sim.webhook_url + "batch", {"cmd": [f"crm.deal.get?id={i}" for i in ids]}
    )
    assert [t["processing"] for t in body["result"]["result_time"]] == [0.25, 0.25, 0.25]
    assert body["time"]["processing"] == pytest.approx(0.75)
