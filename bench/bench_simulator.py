"""Simulator throughput: deals/s served through `batch` of 50 `crm.deal.get`, limits off.

The simulator runs in a child process (`deal-export simulate`, 1,000,000 deals) so that its CPU
is measured apart from the clients'. A few concurrent aiohttp clients walk the ID range once
(every deal generated fresh, no cache hits) for a bounded time. Server CPU comes from
/proc/<pid>/stat of the child. Prints one JSON line and writes bench/results/bench_simulator.json.

    .venv/bin/python -m bench.bench_simulator [--seconds 12] [--clients 4] [--deals 1000000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from bench import write_result


def _cpu_seconds(pid: int) -> float:
    """User + system CPU of a process, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


async def _drive(webhook: str, base: str, seconds: float, clients: int) -> dict[str, Any]:
    next_id = 1
    batches = 0
    errors = 0
    stop_at = 0.0

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal next_id, batches, errors
        while time.monotonic() < stop_at:
            first, next_id = next_id, next_id + 50
            cmd = {f"d{i}": f"crm.deal.get?id={i}" for i in range(first, first + 50)}
            async with session.post(webhook + "batch", json={"halt": 0, "cmd": cmd}) as resp:
                raw = await resp.read()
            # Decoding every answer would make this client, not the server, the bottleneck:
            # decode one batch in 50 to check the shape.
            if resp.status != 200:
                errors += 1
            elif batches % 50 == 0:
                body = orjson.loads(raw)
                if len(body["result"]["result"]) + len(body["result"]["result_error"]) != 50:
                    errors += 1
            batches += 1

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=clients)) as session:

        async def stats() -> dict[str, Any]:
            async with session.get(base + "/_simulator/stats") as resp:
                result: dict[str, Any] = await resp.json()
                return result

        # Warm-up: connections open, code paths hot.
        stop_at = time.monotonic() + 1.0
        async with asyncio.TaskGroup() as tg:
            for _ in range(clients):
                tg.create_task(worker(session))
        before = await stats()
        batches = errors = 0
        started = time.monotonic()
        stop_at = started + seconds
        async with asyncio.TaskGroup() as tg:
            for _ in range(clients):
                tg.create_task(worker(session))
        elapsed = time.monotonic() - started
        after = await stats()
    return {
        "elapsed_s": elapsed,
        "batches": batches,
        "errors": errors,
        "deals_served": after["deals_served"] - before["deals_served"],
        "commands": after["batch_commands"] - before["batch_commands"],
        "last_id": next_id - 1,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=12.0)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--deals", type=int, default=1_000_000)
    args = parser.parse_args()

    t0 = time.monotonic()
    child = subprocess.Popen(
        [sys.executable, "-m", "pipeline", "simulate", "--deals", str(args.deals), "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        webhook = child.stdout.readline().strip()
        if not webhook.startswith("http"):
            raise SystemExit("the simulator did not start")
        startup_s = time.monotonic() - t0
        base = webhook.split("/rest/")[0]
        cpu0 = _cpu_seconds(child.pid)
        run = asyncio.run(_drive(webhook, base, args.seconds, args.clients))
        cpu_s = _cpu_seconds(child.pid) - cpu0
    finally:
        child.send_signal(signal.SIGINT)
        try:
            child.wait(timeout=10)
        except subprocess.TimeoutExpired:
            child.kill()
    # The warm-up's stats request and the final one fall inside the CPU window: negligible.
    deals = run["deals_served"]
    result = {
        "bench": "bench_simulator",
        "portal_deals": args.deals,
        "clients": args.clients,
        "startup_s": round(startup_s, 2),
        "elapsed_s": round(run["elapsed_s"], 2),
        "batches": run["batches"],
        "batch_errors": run["errors"],
        "commands": run["commands"],
        "deals_served": deals,
        "deals_per_s": round(deals / run["elapsed_s"], 1),
        "commands_per_s": round(run["commands"] / run["elapsed_s"], 1),
        "server_cpu_s": round(cpu_s, 2),
        "server_cpu_util": round(cpu_s / run["elapsed_s"], 3),
        "server_cpu_s_per_10k_deals": round(cpu_s / deals * 10_000, 4) if deals else None,
        "deals_per_server_cpu_s": round(deals / cpu_s, 1) if cpu_s else None,
    }
    write_result("bench_simulator", result)


if __name__ == "__main__":
    main()
