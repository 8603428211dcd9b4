"""Seeded faults: each kind behaves as documented, and the same seed repeats the same faults."""

from __future__ import annotations

import asyncio

import aiohttp
import orjson
import pytest

from pipeline.simulator import FaultConfig, RunningSimulator
from pipeline.simulator.faults import pick_fault
from tests.conftest import SimulatorFactory


async def _outcome(http: aiohttp.ClientSession, sim: RunningSimulator) -> str:
    """Classify one POST (not retried by aiohttp, unlike GET) the way a client would see it."""
    try:
        async with http.post(sim.webhook_url + "crm.deal.fields", json={}) as resp:
            raw = await resp.read()
            ctype = resp.content_type
            status = resp.status
    except (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError, aiohttp.ClientOSError):
        return "dropped"
    if ctype == "text/html":
        return f"html_{status}"
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return "bad_json"
    if status == 500:
        return f"json_500_{body['error']}"
    return "ok" if "time" in body else "ok_no_time"


FAULTS = FaultConfig(
    error_500=0.1, html_502=0.1, html_503=0.05, html_504=0.05, reset=0.1, truncated=0.1,
    no_time=0.1, seed=99,
)  # fmt: skip


async def _run(simulator: SimulatorFactory, n: int) -> list[str]:
    sim = await simulator(deals=20, seed=5, faults=FAULTS)
    # A fresh connection per request: a reset must not poison the next one.
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as http:
        return [await _outcome(http, sim) for _ in range(n)]


async def test_faults_reproducible_by_request_number(simulator: SimulatorFactory) -> None:
    first = await _run(simulator, 60)
    second = await _run(simulator, 60)
    assert first == second
    kinds = set(first)
    assert {"ok", "ok_no_time", "json_500_INTERNAL_SERVER_ERROR", "html_502", "dropped"} <= kinds
    expected = [pick_fault(FAULTS, 5, n, "crm.deal.fields") for n in range(1, 61)]
    assert {"reset", "truncated", "html_503", "html_504"} <= set(expected)
    for seen, fault in zip(first, expected, strict=True):
        if fault is None:
            assert seen == "ok"
        elif fault == "no_time":
            assert seen == "ok_no_time"
        elif fault == "error_500":
            assert seen == "json_500_INTERNAL_SERVER_ERROR"
        elif fault.startswith("html_"):
            assert seen == f"html_{fault[5:]}"
        elif fault == "reset":
            assert seen == "dropped"
        else:
            assert seen in ("dropped", "bad_json")


async def test_truncated_bodies_both_modes(simulator: SimulatorFactory) -> None:
    sim = await simulator(deals=20, seed=5, faults=FaultConfig(truncated=1.0))
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as http:
        outcomes = {await _outcome(http, sim) for _ in range(12)}
    assert outcomes == {"dropped", "bad_json"}


async def test_scripted_faults_and_method_filter(
    sim: RunningSimulator, http: aiohttp.ClientSession
) -> None:
    sim.set_faults(FaultConfig(script={2: "html_504"}, error_500=1.0, methods=frozenset({"batch"})))
    assert await _outcome(http, sim) == "ok"  # request 1: crm.deal.fields is not in `methods`
    assert await _outcome(http, sim) == "html_504"  # request 2: scripted
    async with http.post(sim.webhook_url + "batch", json={"cmd": []}) as resp:
        assert resp.status == 500
    assert sim.stats()["faults"] == {"html_504": 1, "error_500": 1}


async def test_slow_answers_take_simulated_seconds(simulator: SimulatorFactory) -> None:
    sim = await simulator(
        deals=5, seed=5, time_scale=100.0, faults=FaultConfig(slow=1.0, slow_s=20.0)
    )
    async with aiohttp.ClientSession() as http:
        started = sim.clock.now()
        async with http.get(sim.webhook_url + "crm.deal.fields") as resp:
            assert resp.status == 200
        assert sim.clock.now() - started >= 20.0  # on the portal's own (simulated) clock
        timeout = aiohttp.ClientTimeout(total=0.05)
        with pytest.raises(asyncio.TimeoutError):
            async with http.get(sim.webhook_url + "crm.deal.fields", timeout=timeout) as resp:
                await resp.read()


def test_fault_config_validation() -> None:
    with pytest.raises(ValueError, match="sum"):
        FaultConfig(error_500=0.6, reset=0.6)
    with pytest.raises(ValueError, match="scripted"):
        FaultConfig(script={0: "reset"})


async def test_error_429_answers_without_a_code(
    simulator: SimulatorFactory, http: aiohttp.ClientSession
) -> None:
    sim = await simulator(deals=20, seed=5, faults=FaultConfig(script={1: "error_429"}))
    async with http.post(sim.webhook_url + "crm.deal.fields", json={}) as resp:
        assert resp.status == 429
        assert orjson.loads(await resp.read()) == {
            "error": "",
            "error_description": "Too many requests",
        }
    assert await _outcome(http, sim) == "ok"  # the next request is served
    assert sim.stats()["faults"] == {"error_429": 1}


def test_adding_error_429_keeps_earlier_draws() -> None:
    # The new kind is drawn after FAULT_KINDS: seeds that never set it draw the same faults.
    with_429 = FaultConfig(error_500=0.3, reset=0.2, error_429=0.0, seed=3)
    plain = FaultConfig(error_500=0.3, reset=0.2, seed=3)
    assert [pick_fault(with_429, 1, n, "batch") for n in range(1, 200)] == [
        pick_fault(plain, 1, n, "batch") for n in range(1, 200)
    ]
