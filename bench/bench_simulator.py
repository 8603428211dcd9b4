"""Simulator throughput: deals/s served through `batch` of 50 `crm.deal.get`, limits off; then
the same through `batch` of 50 `crm.deal.list` calls as the `list` strategy sends them.

The simulator runs in a child process (`deal-export simulate`, 1,000,000 deals) so that its CPU
is measured apart from the clients'. A few concurrent aiohttp clients walk the ID range once
(every deal generated fresh, no cache hits) for a bounded time. Server CPU comes from
/proc/<pid>/stat of the child. The list phase sends the exporter's own commands
(`pipeline.fetch.listing`: `@ID` filter of 50 IDs, `order`, `start=-1`, every field named in
`select`) and walks a range the get phase did not touch. Prints one JSON line and writes
bench/results/bench_simulator.json.

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
from pipeline.fetch.listing import (
    LIST_PAGE,
    build_list_batch,
    chunk_ids,
    list_select,
    select_query,
)


def _cpu_seconds(pid: int) -> float:
    """User + system CPU of a process, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


_JSON = {"Content-Type": "application/json"}
#: IDs per `batch`: 50 get commands, or 50 list calls of 50 IDs each.
_GET_SPAN = 50
_LIST_SPAN = LIST_PAGE * 50


def _get_batch(first: int, select_part: str) -> dict[str, Any]:
    cmd = {f"d{i}": f"crm.deal.get?id={i}" for i in range(first, first + _GET_SPAN)}
    return {"halt": 0, "cmd": cmd}


def _list_batch(first: int, select_part: str) -> dict[str, Any]:
    chunks = chunk_ids(range(first, first + _LIST_SPAN))
    return build_list_batch(chunks, select_part)


def _answered(body: dict[str, Any], commands: int) -> bool:
    """Whether every command of a batch got a result or an error."""
    sections = body["result"]
    return len(sections["result"]) + len(sections["result_error"]) == commands


async def _drive(webhook: str, base: str, seconds: float, clients: int, method: str,
                 first_id: int, max_id: int) -> dict[str, Any]:  # fmt: skip
    build, span = (_list_batch, _LIST_SPAN) if method == "list" else (_get_batch, _GET_SPAN)
    next_id = first_id
    batches = 0
    errors = 0
    stop_at = 0.0
    select_part = ""

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal next_id, batches, errors
        while time.monotonic() < stop_at and next_id <= max_id:
            first, next_id = next_id, next_id + span
            body = build(first, select_part)
            cmd = body["cmd"]
            # aiohttp's `json=` encodes with the stdlib: slower than orjson by enough to bind.
            payload = orjson.dumps(body)
            async with session.post(webhook + "batch", data=payload, headers=_JSON) as resp:
                raw = await resp.read()
            # Decoding every answer would make this client, not the server, the bottleneck:
            # decode one batch in 50 to check the shape.
            sampled = batches % 50 == 0
            if resp.status != 200 or (sampled and not _answered(orjson.loads(raw), len(cmd))):
                errors += 1
            batches += 1

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=clients)) as session:

        async def stats() -> dict[str, Any]:
            async with session.get(base + "/_simulator/stats") as resp:
                result: dict[str, Any] = await resp.json()
                return result

        async with session.post(webhook + "crm.deal.fields") as resp:
            select_part = select_query(list_select((await resp.json())["result"]))
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


def _phase(child_pid: int, webhook: str, args: argparse.Namespace, method: str,
           first_id: int) -> dict[str, Any]:  # fmt: skip
    """Drive one method for `args.seconds`; its figures, server CPU included."""
    base = webhook.split("/rest/")[0]
    # The portal's ID space is about 10% larger than its deal count (gaps, deleted IDs).
    max_id = int(args.deals * 1.2)
    cpu0, client0 = _cpu_seconds(child_pid), time.process_time()
    run = asyncio.run(_drive(webhook, base, args.seconds, args.clients, method, first_id, max_id))
    run["server_cpu_s"] = _cpu_seconds(child_pid) - cpu0
    # The clients' CPU (warm-up included): shows when they, not the server, bound the rate.
    run["client_cpu_s"] = time.process_time() - client0
    return run


def _figures(run: dict[str, Any], prefix: str) -> dict[str, Any]:
    # The warm-up's stats request and the final one fall inside the CPU window: negligible.
    deals, cpu_s, elapsed = run["deals_served"], run["server_cpu_s"], run["elapsed_s"]
    return {
        f"{prefix}elapsed_s": round(elapsed, 2),
        f"{prefix}batches": run["batches"],
        f"{prefix}batch_errors": run["errors"],
        f"{prefix}commands": run["commands"],
        f"{prefix}deals_served": deals,
        f"{prefix}deals_per_s": round(deals / elapsed, 1),
        f"{prefix}commands_per_s": round(run["commands"] / elapsed, 1),
        f"{prefix}server_cpu_s": round(cpu_s, 2),
        f"{prefix}server_cpu_util": round(cpu_s / elapsed, 3),
        f"{prefix}client_cpu_s": round(run["client_cpu_s"], 2),
        f"{prefix}server_cpu_s_per_10k_deals": round(cpu_s / deals * 10_000, 4) if deals else None,
        f"{prefix}deals_per_server_cpu_s": round(deals / cpu_s, 1) if cpu_s else None,
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
        get = _phase(child.pid, webhook, args, "get", 1)
        listed = _phase(child.pid, webhook, args, "list", get["last_id"] + 1)
    finally:
        child.send_signal(signal.SIGINT)
        try:
            child.wait(timeout=10)
        except subprocess.TimeoutExpired:
            child.kill()
    result = {
        "bench": "bench_simulator",
        "portal_deals": args.deals,
        "clients": args.clients,
        "startup_s": round(startup_s, 2),
        **_figures(get, ""),
        **_figures(listed, "list_"),
        "list_rows_per_call": LIST_PAGE,
        "list_calls_per_batch": 50,
    }
    write_result("bench_simulator", result)


if __name__ == "__main__":
    main()
